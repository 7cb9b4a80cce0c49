//! What only a test harness needs from the host kernel: stop the machine,
//! inject faults, take CPUs offline and back, read memory counters.
//!
//! These are not part of [`crate::Port`] on purpose: the subsystem must not
//! depend on them (a Redox kernel offers no "stop the machine" to kernel
//! code, and CPU offlining is the host kernel's decision, not a workqueue's).
//! The in-guest suite and the testkernel use them; each port implements the
//! trait next to its [`crate::Port`] and installs it with [`install`].

use crate::Result;

/// Memory counters of the host kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemCounters {
    /// Usable frames.
    pub total_frames: u64,
    /// Free frames.
    pub free_frames: u64,
    /// Frames handed out.
    pub used_frames: u64,
    /// Kernel heap bytes in use.
    pub heap_used: u64,
}

impl MemCounters {
    /// What a leak check compares before and after: frames handed out and
    /// heap bytes in use. (`free_frames` may move without a leak where the
    /// kernel heap grows and keeps its frames, as Redox's does; the port
    /// then leaves the heap's frames out of `used_frames`.)
    pub fn in_use(&self) -> (u64, u64) {
        (self.used_frames, self.heap_used)
    }
}

/// Counters of one CPU ([`Harness::cpu_activity`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuActivity {
    /// Context switches on it.
    pub switches: u64,
    /// Interrupts it took (any vector).
    pub interrupts: u64,
    /// Times it stopped (went dead) after going offline.
    pub deaths: u64,
    /// Stopped now: halted with interrupts off, running nothing.
    pub dead: bool,
}

/// The test-only half of a port.
pub trait Harness: Send + Sync {
    /// Stop the machine with a pass or fail status.
    fn exit_machine(&self, pass: bool) -> !;
    /// Memory counters (leak checks).
    fn mem_counters(&self) -> MemCounters;
    /// Make the next `n` context creations fail with `ENOMEM` (fault
    /// injection).
    fn inject_spawn_failures(&self, n: usize);
    /// Take `cpu` offline (stop giving it work, park its per-CPU threads,
    /// move its unbound contexts away). `EINVAL` for a bad or the last CPU.
    ///
    /// Context: may sleep.
    fn cpu_down(&self, cpu: usize) -> Result<()>;
    /// Bring `cpu` back online. `EINVAL` if it is online or does not exist.
    ///
    /// Context: may sleep.
    fn cpu_up(&self, cpu: usize) -> Result<()>;
    /// What `cpu` has done so far, for the hot-plug tests: `None` where
    /// the port cannot tell, or where offline is only logical (the CPU
    /// keeps running; the default).
    fn cpu_activity(&self, cpu: usize) -> Option<CpuActivity> {
        let _ = cpu;
        None
    }
    /// A device interrupt the tests can make fire on demand (default: none;
    /// cases that need a real interrupt skip without one).
    fn test_irq(&self) -> Option<&'static dyn crate::irq::TestIrq> {
        None
    }
}

static HARNESS: spin::Once<&'static dyn Harness> = spin::Once::new();

/// Install the harness half (once, at boot, beside [`crate::install`]).
/// Later installs are ignored.
pub fn install(h: &'static dyn Harness) {
    HARNESS.call_once(|| h);
}

/// The installed harness half. Panics if none was installed.
pub fn harness() -> &'static dyn Harness {
    *HARNESS.get().expect("kport: no harness installed (call kport::harness::install at boot)")
}

/// Is a harness installed?
pub fn installed() -> bool {
    HARNESS.get().is_some()
}
