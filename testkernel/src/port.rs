//! The testkernel's implementation of `kport::Port`.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use kport::harness::{Harness, MemCounters};
use kport::{
    AtomicContext, CpuMask, CpuTopology, EBUSY, EINVAL, EIO, ENOMEM, ENXIO, Error, HotplugHooks, Port, PortTask,
    PortTimer, Priority, Result, SchedHooks, SleepState, SpawnSpec, TaskData, TaskRef, TaskState,
};

use crate::sched::{self, Prio, State, Task, timer::Timer, wake_mask};
use crate::sync::IrqSpinLock;
use crate::{arch, mem, percpu, time};

/// The port object installed at boot.
pub static PORT: TestkernelPort = TestkernelPort;

/// Zero-sized: all state lives in the kernel's own modules.
pub struct TestkernelPort;

/// A context handle.
pub struct TaskHandle(pub Arc<Task>);

fn prio_of(p: Priority) -> Prio {
    match p {
        Priority::High => Prio::High,
        Priority::Normal => Prio::Normal,
        Priority::Idle => Prio::Idle,
    }
}

impl PortTask for TaskHandle {
    fn id(&self) -> usize {
        self.0.id
    }
    fn wake(&self) -> bool {
        sched::wake(&self.0, wake_mask::NORMAL | wake_mask::NEW)
    }
    fn wake_sync(&self) -> bool {
        sched::wake_sync(&self.0, wake_mask::NORMAL | wake_mask::NEW)
    }
    fn wake_parked(&self) -> bool {
        sched::wake(&self.0, wake_mask::PARKED)
    }
    fn state(&self) -> TaskState {
        match self.0.state() {
            State::Running => TaskState::Running,
            State::Interruptible => TaskState::Sleeping,
            State::Uninterruptible => TaskState::DiskSleep,
            State::Idle => TaskState::Idle,
            State::Parked => TaskState::Parked,
            State::New => TaskState::New,
            // Dead once reaped (its stack freed); until its last switch away
            // it is still on a CPU.
            State::Dead if self.0.is_reaped() => TaskState::Dead,
            State::Dead => TaskState::Running,
        }
    }
    fn is_running(&self) -> bool {
        self.0.on_cpu_now()
    }
    fn cpu(&self) -> usize {
        self.0.cpu()
    }
    fn affinity(&self) -> CpuMask {
        CpuMask(self.0.affinity())
    }
    fn set_affinity(&self, mask: CpuMask) -> Result<()> {
        sched::set_affinity(&self.0, mask.0).map_err(|_| Error::new(EINVAL))
    }
    fn set_priority(&self, prio: Priority) {
        sched::set_prio(&self.0, prio_of(prio));
    }
    fn name(&self) -> String {
        self.0.name().as_str().to_string()
    }
    fn set_name(&self, name: &str) {
        self.0.set_name(name);
    }
    fn cpu_time_ns(&self) -> u64 {
        self.0.cpu_time_ns()
    }
    fn nr_switches(&self) -> u64 {
        self.0.nr_switches()
    }
    fn wait_channel(&self) -> &'static str {
        self.0.wchan()
    }
    fn stack_trace(&self, out: &mut [usize]) -> usize {
        self.0.stack_trace(out)
    }
    fn data(&self) -> Option<TaskData> {
        self.0.data()
    }
}

struct TimerHandle(Timer);

impl PortTimer for TimerHandle {
    fn arm(&self, deadline_ns: u64, cpu: Option<usize>) {
        self.0.arm(deadline_ns, cpu);
    }
    fn cancel(&self) -> bool {
        self.0.cancel()
    }
    fn cancel_sync(&self) -> bool {
        self.0.cancel_sync()
    }
    fn is_pending(&self) -> bool {
        self.0.is_pending()
    }
}

/// Registered hot-plug callbacks.
static HOTPLUG: IrqSpinLock<Vec<&'static dyn HotplugHooks>> = IrqSpinLock::named("hotplug hooks", Vec::new());
/// Serializes CPU offline/online operations.
static HOTPLUG_OP: kport::sync::Mutex<()> = kport::sync::Mutex::new(());

impl Port for TestkernelPort {
    fn name(&self) -> &'static str {
        "testkernel"
    }

    fn spawn(&self, spec: SpawnSpec) -> Result<TaskRef> {
        let t =
            sched::spawn(&spec.name, prio_of(spec.priority), spec.affinity.0, spec.entry, spec.data, spec.worker_hooks)
                .map_err(|e| match e {
                    sched::SpawnError::NoMemory => Error::new(ENOMEM),
                    sched::SpawnError::BadAffinity => Error::new(EINVAL),
                })?;
        Ok(Arc::new(TaskHandle(t)))
    }

    fn current(&self) -> TaskRef {
        Arc::new(TaskHandle(sched::current()))
    }

    fn current_id(&self) -> usize {
        sched::with_current(|t| t.id)
    }

    fn current_data(&self) -> Option<TaskData> {
        sched::with_current(|t| t.data())
    }

    fn set_current_state(&self, state: SleepState, wchan: &'static str) {
        let st = match state {
            SleepState::Interruptible => State::Interruptible,
            SleepState::Uninterruptible => State::Uninterruptible,
            SleepState::Parked => State::Parked,
            SleepState::Idle => State::Idle,
        };
        sched::set_current_state(st, wchan);
    }

    fn set_current_running(&self) {
        sched::set_current_state(State::Running, "");
    }

    fn schedule(&self) {
        sched::schedule();
    }

    fn schedule_until(&self, deadline_ns: u64) -> bool {
        sched::timer::schedule_until(deadline_ns)
    }

    fn yield_now(&self) {
        sched::yield_now();
    }

    fn cond_resched(&self) {
        sched::cond_resched();
    }

    fn exit_current(&self) -> ! {
        sched::exit_current()
    }

    fn cpu_id(&self) -> usize {
        percpu::cpu_id()
    }

    fn cpu_count(&self) -> usize {
        percpu::cpus_up()
    }

    fn online_mask(&self) -> CpuMask {
        CpuMask(sched::online_mask())
    }

    fn call_on_cpu(&self, cpu: usize, f: Box<dyn FnOnce() + Send>, wait: bool) -> Result<()> {
        sched::call::call_on_cpu(cpu, f, wait).map_err(|e| match e {
            sched::call::CallError::NoCpu => Error::new(EINVAL),
            sched::call::CallError::Offline => Error::new(ENXIO),
        })
    }

    /// What the CPU read from CPUID (and the SRAT) as it came up
    /// (`arch::topology`).
    fn cpu_topology(&self, cpu: usize) -> CpuTopology {
        arch::topology::topology(cpu)
    }

    fn irq_save(&self) -> bool {
        crate::sync::irq_save()
    }

    fn irq_restore(&self, was_enabled: bool) {
        crate::sync::irq_restore(was_enabled);
    }

    fn preempt_disable(&self) {
        percpu::preempt_disable();
    }

    fn preempt_enable(&self) {
        percpu::preempt_enable();
    }

    fn preempt_check_resched(&self) {
        percpu::preempt_check_resched();
    }

    fn lock_enter(&self) -> bool {
        percpu::lock_enter()
    }

    fn lock_exit(&self, irqs_were_on: bool) {
        percpu::lock_exit(irqs_were_on);
    }

    fn atomic_context(&self) -> AtomicContext {
        AtomicContext {
            preempt_count: percpu::preempt_count(),
            irqs_disabled: !arch::cpu::irqs_enabled(),
            hardirq: percpu::irq_depth() != 0,
            softirq: false,
        }
    }

    fn in_atomic(&self) -> bool {
        percpu::in_atomic()
    }

    fn in_irq(&self) -> bool {
        percpu::in_irq()
    }

    /// One context at a time on each CPU: per-CPU words take plain
    /// read-modify-writes (`kport::percpu`).
    fn one_context_per_cpu(&self) -> bool {
        true
    }

    /// The IOAPIC's lines (`crate::irq`).
    fn irq_chip(&self) -> Option<&'static dyn kport::irq::IrqChip> {
        Some(&crate::irq::CHIP)
    }

    /// PCI through ports 0xCF8/0xCFC, DMA from the buddy allocator
    /// (`crate::bus`).
    fn device_bus(&self) -> Option<&'static dyn kport::bus::DeviceBus> {
        Some(&crate::bus::BUS)
    }

    fn now_ns(&self) -> u64 {
        time::now_ns()
    }

    fn cycles(&self) -> u64 {
        arch::cpu::rdtsc()
    }

    fn cycles_to_ns(&self, cycles: u64) -> u64 {
        time::tsc_to_ns(cycles)
    }

    fn timer(&self, callback: Arc<dyn Fn() + Send + Sync>) -> Box<dyn PortTimer> {
        Box::new(TimerHandle(Timer::new(callback)))
    }

    fn set_sched_hooks(&self, hooks: &'static dyn SchedHooks) {
        sched::set_hooks(hooks);
    }

    fn add_hotplug_hooks(&self, hooks: &'static dyn HotplugHooks) {
        HOTPLUG.lock().push(hooks);
    }

    fn console_line(&self, line: &str) {
        crate::console::line(format_args!("{line}"));
    }

    fn dump_stack(&self) {
        crate::panic::backtrace(arch::cpu::instruction_pointer(), arch::cpu::frame_pointer());
    }

    fn cpu_current_id(&self, cpu: usize) -> Option<usize> {
        Some(sched::cpu_current_id(cpu)).filter(|&id| id != 0)
    }
}

impl Harness for TestkernelPort {
    fn exit_machine(&self, pass: bool) -> ! {
        crate::exit::exit_qemu(pass)
    }

    fn mem_counters(&self) -> MemCounters {
        let f = mem::frames::counters();
        let (heap_used, heap_mapped) = mem::heap::usage();
        // The heap keeps the frames it grew by (and the page tables mapping
        // them, one per 2 MiB): left out of `used_frames`, as the Redox port
        // does, so a passing peak of heap use is not a frame leak. So are the
        // frames of the freed stacks kept mapped for reuse (a cache that
        // fills as threads exit) and the page tables built for stacks beyond
        // the boot's (kept, as the heap's).
        let heap_pages = heap_mapped / mem::PAGE_SIZE;
        let heap_frames = heap_pages + heap_pages.div_ceil(512);
        let cached = mem::stack::cached_frames() + mem::stack::late_table_frames();
        MemCounters {
            total_frames: f.total,
            free_frames: f.free,
            used_frames: f.used.saturating_sub(heap_frames + cached),
            heap_used,
        }
    }

    fn inject_spawn_failures(&self, n: usize) {
        sched::inject_spawn_failures(n);
    }

    /// Linux's order: the callbacks of the AP states (workqueue unbinding,
    /// smpboot parking) while the CPU runs; its device interrupts move to
    /// CPU 0; it stops taking work and, once only its idle context is left
    /// there, hands its timers to an online CPU and halts with interrupts
    /// off; then the "dead" callbacks take over its per-CPU lists. CPU 0,
    /// which takes every IOAPIC line, stays: `EBUSY` (Linux on x86 cannot
    /// offline it either).
    fn cpu_down(&self, cpu: usize) -> Result<()> {
        let _op = HOTPLUG_OP.lock();
        if cpu >= percpu::cpus_up() || !sched::cpu_online(cpu) || sched::online_mask().count_ones() < 2 {
            return Err(Error::new(EINVAL));
        }
        if cpu == 0 {
            return Err(Error::new(EBUSY));
        }
        let hooks: Vec<&'static dyn HotplugHooks> = HOTPLUG.lock().clone();
        // Reverse registration order, as Linux parks smpboot threads.
        for h in hooks.iter().rev() {
            h.cpu_going_down(cpu);
        }
        crate::irq::move_lines_off(cpu);
        sched::cpu_set_offline(cpu);
        // A context that keeps the CPU without a switch (preempt=none)
        // holds this up, as it holds up Linux's stopper thread.
        let start = crate::time::now_ns();
        let mut warned = false;
        while !sched::cpu_dead(cpu) {
            if !warned && crate::time::now_ns() - start > 10_000_000_000 {
                warned = true;
                crate::kprintln!(
                    "# WARNING: cpu_down({cpu}): still waiting after 10 s for context {} to leave the CPU",
                    sched::cpu_curr_id(cpu)
                );
            }
            sched::timer::sleep_until(crate::time::now_ns() + 500_000);
        }
        for h in hooks.iter().rev() {
            h.cpu_dead(cpu);
        }
        Ok(())
    }

    fn cpu_activity(&self, cpu: usize) -> Option<kport::harness::CpuActivity> {
        if cpu >= percpu::cpus_up() {
            return None;
        }
        let (switches, deaths) = sched::cpu_switches(cpu);
        Some(kport::harness::CpuActivity {
            switches,
            interrupts: percpu::PERCPU[cpu].irqs.load(core::sync::atomic::Ordering::Relaxed),
            deaths,
            dead: sched::cpu_dead(cpu),
        })
    }

    /// PIT channel 0 on ISA line 0 (`crate::irq::PitTestIrq`).
    fn test_irq(&self) -> Option<&'static dyn kport::irq::TestIrq> {
        Some(&crate::irq::TEST_IRQ)
    }

    fn cpu_up(&self, cpu: usize) -> Result<()> {
        let _op = HOTPLUG_OP.lock();
        if cpu >= percpu::cpus_up() || sched::cpu_online(cpu) {
            return Err(Error::new(EINVAL));
        }
        if !sched::cpu_bring_up(cpu, 5_000_000_000) {
            crate::kprintln!("# WARNING: cpu_up({cpu}): the CPU did not wake from its halt within 5 s");
            return Err(Error::new(EIO));
        }
        crate::irq::move_lines_back(cpu);
        let hooks: Vec<&'static dyn HotplugHooks> = HOTPLUG.lock().clone();
        for h in hooks.iter() {
            h.cpu_came_up(cpu);
        }
        Ok(())
    }
}

/// Install the port and its harness half (boot CPU, once, after the
/// scheduler is up).
pub fn install() {
    kport::install(&PORT);
    kport::harness::install(&PORT);
    // SAFETY: every CPU's GS base points at its PerCpu before it runs any
    // code (percpu::init, the APs' entry); the offsets are those of its u32
    // fields the port's cpu_id, preempt_disable and in_irq use; irq_save is
    // pushf+cli and irq_restore sti (crate::sync); the port keeps the
    // default per-CPU bottom-half word and runs one context per CPU.
    unsafe { kport::local::install_gs_layout(percpu::gs_layout()) };
}
