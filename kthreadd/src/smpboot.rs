//! Per-CPU threads (Linux `kernel/smpboot.c`, `struct smp_hotplug_thread`).
//!
//! Register a kind of per-CPU thread once with [`register`]: one thread per
//! CPU, named `name/N`, bound to its CPU and marked per-CPU, created parked
//! and unparked on every online CPU. Each loops: stop? park? setup or
//! unpark callback due? then runs [`PercpuThread::run`] while
//! [`PercpuThread::should_run`] says so, and sleeps otherwise until
//! [`Registration::wake`]. When a CPU goes offline its threads park (in
//! reverse registration order, as Linux parks them); when it comes back
//! they are unparked, back on their CPU.
//!
//! Every callback but `name` runs in the thread itself, on its CPU, as
//! Linux's `smpboot_thread_fn` runs them from the thread's status
//! (`HP_THREAD_NONE` / `ACTIVE` / `PARKED`): a fresh thread runs `setup`
//! on its first run (never `unpark`); `park` runs only for a thread that
//! was active (set up and not parked), `unpark` only when a thread that
//! `park` ran for leaves the parked state, and `cleanup` at the stop of a
//! thread that was set up. A thread whose CPU was offline from the start
//! runs `setup` when the CPU first comes up.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::kthread::{self, Builder, Kthread};
use kport::sync::SpinLock;
use kport::{HotplugHooks, Priority, Result, SleepState, port};

/// What a kind of per-CPU thread does (Linux `struct smp_hotplug_thread`).
/// Every callback but [`PercpuThread::name`] runs in the thread of the CPU
/// it names, on that CPU.
pub trait PercpuThread: Send + Sync + 'static {
    /// The name of the thread of `cpu` (Linux uses `thread_comm` with `%u`);
    /// called by the registering thread.
    fn name(&self, cpu: usize) -> String;
    /// Is there work for `cpu`'s thread? Called with preemption disabled.
    fn should_run(&self, cpu: usize) -> bool;
    /// Do the work (called while `should_run` holds).
    fn run(&self, cpu: usize);
    /// Once, on the thread's first run (a fresh thread runs this, not
    /// `unpark`).
    fn setup(&self, _cpu: usize) {}
    /// When the thread stops, if `setup` ran; `online` tells whether its
    /// CPU is online.
    fn cleanup(&self, _cpu: usize, _online: bool) {}
    /// Before an active thread parks (its CPU going offline). Called with
    /// preemption disabled, as Linux calls it: it must not sleep.
    fn park(&self, _cpu: usize) {}
    /// When a thread `park` ran for leaves the parked state (its CPU back
    /// online).
    fn unpark(&self, _cpu: usize) {}
    /// Priority of the threads.
    fn priority(&self) -> Priority {
        Priority::Normal
    }
}

/// One registered kind: its threads, by CPU (each thread holds the
/// descriptor it calls).
struct Kind {
    /// L: the thread of each CPU.
    threads: Vec<Kthread>,
}

/// Every registered kind, in registration order.
static KINDS: SpinLock<Vec<Arc<SpinLock<Kind>>>> = SpinLock::ranked("smpboot kinds", crate::RANK_SMPBOOT, Vec::new());
static HOOKS_INSTALLED: spin::Once<()> = spin::Once::new();

struct Hotplug;

impl HotplugHooks for Hotplug {
    fn cpu_going_down(&self, cpu: usize) {
        let kinds: Vec<Arc<SpinLock<Kind>>> = KINDS.lock().clone();
        for k in kinds.iter().rev() {
            let t = k.lock().threads.get(cpu).cloned();
            if let Some(t) = t {
                let _ = t.park();
            }
        }
    }

    fn cpu_came_up(&self, cpu: usize) {
        let kinds: Vec<Arc<SpinLock<Kind>>> = KINDS.lock().clone();
        for k in kinds.iter() {
            // The thread runs the `unpark` callback itself, on its CPU, if
            // `park` ran for it; a thread that never ran sets itself up.
            let t = k.lock().threads.get(cpu).cloned();
            if let Some(t) = t {
                t.unpark();
            }
        }
    }
}

static HOTPLUG: Hotplug = Hotplug;

/// A registered kind of per-CPU thread.
pub struct Registration {
    kind: Arc<SpinLock<Kind>>,
}

/// Where a per-CPU thread is in its callbacks' life (Linux `HP_THREAD_*`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Not set up yet: its first run calls `setup`.
    None,
    /// Set up and running: a park calls `park`.
    Active,
    /// `park` ran: leaving the parked state calls `unpark`.
    Parked,
}

fn thread_fn(desc: Arc<dyn PercpuThread>, cpu: usize) -> i32 {
    let p = port();
    let mut status = Status::None;
    loop {
        p.set_current_state(SleepState::Interruptible, "smpboot");
        p.preempt_disable();
        if kthread::should_stop() {
            p.set_current_running();
            p.preempt_enable();
            // Cleanup mirrors setup.
            if status != Status::None {
                desc.cleanup(cpu, p.online_mask().contains(cpu));
            }
            return 0;
        }
        if kthread::should_park() {
            p.set_current_running();
            if status == Status::Active {
                desc.park(cpu);
                status = Status::Parked;
            }
            p.preempt_enable();
            kthread::parkme();
            // Woken for a stop, or unparked: look again.
            continue;
        }
        match status {
            Status::None => {
                p.set_current_running();
                p.preempt_enable();
                desc.setup(cpu);
                status = Status::Active;
                continue;
            }
            Status::Parked => {
                p.set_current_running();
                p.preempt_enable();
                desc.unpark(cpu);
                status = Status::Active;
                continue;
            }
            Status::Active => {}
        }
        if desc.should_run(cpu) {
            p.set_current_running();
            p.preempt_enable();
            desc.run(cpu);
        } else {
            p.preempt_enable();
            p.schedule();
        }
    }
}

/// Register a kind of per-CPU thread (Linux `smpboot_register_percpu_thread`):
/// one thread per CPU, parked on CPUs that are offline.
///
/// Context: may sleep. Return: the registration; errors as `kthread::Builder::create`.
#[track_caller]
pub fn register(desc: Arc<dyn PercpuThread>) -> Result<Registration> {
    kport::might_sleep();
    let p = port();
    HOOKS_INSTALLED.call_once(|| p.add_hotplug_hooks(&HOTPLUG));
    let mut threads = Vec::new();
    for cpu in 0..p.cpu_count() {
        let d = desc.clone();
        let t = Builder::new(format_args!("{}", desc.name(cpu)), move || thread_fn(d, cpu))
            .on_cpu(cpu)
            .priority(desc.priority())
            .create();
        let t = match t {
            Ok(t) => t,
            Err(e) => {
                for t in threads.iter() {
                    let _ = Kthread::stop(t);
                }
                return Err(e);
            }
        };
        // Created parked (Linux smpboot creates them parked), then unparked
        // where the CPU is online.
        t.park()?;
        threads.push(t);
    }
    // Unparked where the CPU is online: each sets itself up, in its own
    // thread, on its CPU (Linux's smpboot_unpark_thread).
    let online = p.online_mask();
    for (cpu, t) in threads.iter().enumerate() {
        if online.contains(cpu) {
            t.unpark();
        }
    }
    let kind = Arc::new(SpinLock::ranked("smpboot kind", crate::RANK_SMPBOOT_KIND, Kind { threads }));
    KINDS.lock().push(kind.clone());
    Ok(Registration { kind })
}

impl Registration {
    /// The thread of `cpu`.
    pub fn thread(&self, cpu: usize) -> Option<Kthread> {
        self.kind.lock().threads.get(cpu).cloned()
    }

    /// Wake `cpu`'s thread so it re-checks `should_run` (Linux
    /// `wake_up_process` of e.g. `ksoftirqd`).
    pub fn wake(&self, cpu: usize) {
        if let Some(t) = self.thread(cpu) {
            t.task().wake();
        }
    }

    /// Stop every thread of this kind and forget it (Linux
    /// `smpboot_unregister_percpu_thread`).
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn unregister(self) {
        kport::might_sleep();
        KINDS.lock().retain(|k| !Arc::ptr_eq(k, &self.kind));
        let threads = core::mem::take(&mut self.kind.lock().threads);
        for t in threads {
            let _ = t.stop();
        }
    }
}
