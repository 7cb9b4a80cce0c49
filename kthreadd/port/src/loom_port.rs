//! A mock port for loom models (feature `loom`): the crates' own code runs
//! on loom threads, and every interleaving of its protocol atomics
//! (`crate::sync::atomic`) and of this port's blocking is explored.
//!
//! * A context is a loom thread; its record is made at its first port call.
//!   Blocking (`set_current_state` + `schedule`, `wake`) is a loom mutex and
//!   condition variable per context, so a lost wake-up is a loom deadlock.
//! * The calling CPU is whatever the model thread said with
//!   [`LoomPort::set_cpu`] (0 by default); `cpu_count` is the model's.
//! * Time does not flow: `now_ns` counts calls, and `schedule_until`
//!   returns as if its deadline had passed. Timers never fire on their own.
//! * Creating contexts is refused (`ENOSYS`): models make their threads
//!   with `loom::thread::spawn`.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use loom::sync::{Condvar, Mutex};

use crate::{
    AtomicContext, CpuMask, ENOSYS, Error, HotplugHooks, Port, PortTask, PortTimer, Priority, Result, SchedHooks,
    SleepState, SpawnSpec, TaskData, TaskRef, TaskState,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Running,
    Sleep(SleepState),
}

/// A model thread's context record.
struct LoomTask {
    id: usize,
    st: Mutex<(St, &'static str)>,
    cv: Condvar,
    /// Not a protocol atomic: a core one, invisible to the model.
    cpu: AtomicUsize,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

loom::thread_local! {
    static CURRENT: core::cell::RefCell<Option<Arc<LoomTask>>> = core::cell::RefCell::new(None);
    static PREEMPT: Cell<u32> = Cell::new(0);
    static IRQS_OFF: Cell<bool> = Cell::new(false);
}

fn current_task() -> Arc<LoomTask> {
    CURRENT.with(|c| {
        c.borrow_mut()
            .get_or_insert_with(|| {
                Arc::new(LoomTask {
                    id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                    st: Mutex::new((St::Running, "")),
                    cv: Condvar::new(),
                    cpu: AtomicUsize::new(0),
                })
            })
            .clone()
    })
}

impl LoomTask {
    fn wake_if(&self, parked: bool) -> bool {
        let mut g = self.st.lock().unwrap();
        let wakes = match g.0 {
            St::Sleep(SleepState::Parked) => parked,
            St::Sleep(_) => !parked,
            St::Running => false,
        };
        if wakes {
            g.0 = St::Running;
            self.cv.notify_all();
        }
        wakes
    }
}

impl PortTask for LoomTask {
    fn id(&self) -> usize {
        self.id
    }
    fn wake(&self) -> bool {
        self.wake_if(false)
    }
    fn wake_parked(&self) -> bool {
        self.wake_if(true)
    }
    fn state(&self) -> TaskState {
        match self.st.lock().unwrap().0 {
            St::Running => TaskState::Running,
            St::Sleep(s) => s.task_state(),
        }
    }
    fn cpu(&self) -> usize {
        self.cpu.load(Ordering::Relaxed)
    }
    fn affinity(&self) -> CpuMask {
        CpuMask::ALL
    }
    fn set_affinity(&self, _mask: CpuMask) -> Result<()> {
        Ok(())
    }
    fn set_priority(&self, _prio: Priority) {}
    fn name(&self) -> String {
        alloc::format!("loom-{}", self.id)
    }
    fn set_name(&self, _name: &str) {}
    fn cpu_time_ns(&self) -> u64 {
        0
    }
    fn nr_switches(&self) -> u64 {
        0
    }
    fn wait_channel(&self) -> &'static str {
        self.st.lock().unwrap().1
    }
    fn data(&self) -> Option<TaskData> {
        None
    }
}

/// An inert timer: arming and cancelling are recorded, nothing fires.
struct LoomTimer {
    pending: AtomicBool,
}

impl PortTimer for LoomTimer {
    fn arm(&self, _deadline_ns: u64, _cpu: Option<usize>) {
        self.pending.store(true, Ordering::Release);
    }
    fn cancel(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }
    fn cancel_sync(&self) -> bool {
        self.cancel()
    }
    fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }
}

/// The mock port. Install it with [`install_loom_port`].
pub struct LoomPort {
    cpus: AtomicUsize,
    clock: AtomicU64,
}

impl LoomPort {
    /// Say which CPU the calling model thread runs on.
    pub fn set_cpu(&self, cpu: usize) {
        current_task().cpu.store(cpu, Ordering::Relaxed);
    }

    /// Set the number of CPUs for the next model.
    pub fn set_cpu_count(&self, n: usize) {
        self.cpus.store(n, Ordering::Relaxed);
    }
}

/// Install the mock port (once per process; later calls return it).
pub fn install_loom_port() -> &'static LoomPort {
    static P: OnceLock<&'static LoomPort> = OnceLock::new();
    let p = *P.get_or_init(|| Box::leak(Box::new(LoomPort { cpus: AtomicUsize::new(2), clock: AtomicU64::new(1) })));
    crate::install(p);
    p
}

impl Port for LoomPort {
    fn name(&self) -> &'static str {
        "loom"
    }
    fn spawn(&self, _spec: SpawnSpec) -> Result<TaskRef> {
        Err(Error::new(ENOSYS))
    }
    fn current(&self) -> TaskRef {
        current_task()
    }
    fn current_id(&self) -> usize {
        current_task().id
    }
    fn current_data(&self) -> Option<TaskData> {
        None
    }
    fn set_current_state(&self, state: SleepState, wchan: &'static str) {
        *current_task().st.lock().unwrap() = (St::Sleep(state), wchan);
    }
    fn set_current_running(&self) {
        *current_task().st.lock().unwrap() = (St::Running, "");
    }
    fn schedule(&self) {
        let me = current_task();
        let mut g = me.st.lock().unwrap();
        if g.0 == St::Running {
            drop(g);
            loom::thread::yield_now();
            return;
        }
        while let St::Sleep(_) = g.0 {
            g = me.cv.wait(g).unwrap();
        }
    }
    fn schedule_until(&self, _deadline_ns: u64) -> bool {
        self.set_current_running();
        true
    }
    fn yield_now(&self) {
        loom::thread::yield_now();
    }
    fn cond_resched(&self) {}
    fn exit_current(&self) -> ! {
        panic!("loom port: exit_current is not modelled")
    }
    fn cpu_id(&self) -> usize {
        current_task().cpu.load(Ordering::Relaxed)
    }
    fn cpu_count(&self) -> usize {
        self.cpus.load(Ordering::Relaxed)
    }
    fn online_mask(&self) -> CpuMask {
        CpuMask::first(self.cpu_count())
    }
    fn call_on_cpu(&self, _cpu: usize, f: Box<dyn FnOnce() + Send>, _wait: bool) -> Result<()> {
        f();
        Ok(())
    }
    fn irq_save(&self) -> bool {
        !IRQS_OFF.with(|c| c.replace(true))
    }
    fn irq_restore(&self, was_enabled: bool) {
        IRQS_OFF.with(|c| c.set(!was_enabled));
    }
    fn preempt_disable(&self) {
        PREEMPT.with(|c| c.set(c.get() + 1));
    }
    fn preempt_enable(&self) {
        PREEMPT.with(|c| c.set(c.get() - 1));
    }
    fn atomic_context(&self) -> AtomicContext {
        AtomicContext {
            preempt_count: PREEMPT.with(|c| c.get()),
            irqs_disabled: IRQS_OFF.with(|c| c.get()),
            hardirq: false,
            softirq: false,
        }
    }
    fn now_ns(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }
    fn cycles(&self) -> u64 {
        self.now_ns()
    }
    fn cycles_to_ns(&self, cycles: u64) -> u64 {
        cycles
    }
    fn timer(&self, _callback: Arc<dyn Fn() + Send + Sync>) -> Box<dyn PortTimer> {
        Box::new(LoomTimer { pending: AtomicBool::new(false) })
    }
    fn set_sched_hooks(&self, _hooks: &'static dyn SchedHooks) {}
    fn add_hotplug_hooks(&self, _hooks: &'static dyn HotplugHooks) {}
    fn console_line(&self, line: &str) {
        std::eprintln!("{line}");
    }
    fn dump_stack(&self) {}
}
