//! Kernel threads with Linux's semantics (`kernel/kthread.c`).
//!
//! * [`init`] starts `kthreadd`, the parent of every kernel thread (Linux's
//!   PID 2): creating a thread queues a request that kthreadd serves, so the
//!   new thread's parent is always kthreadd.
//! * A created thread does not run until it is woken ([`Kthread::wake`],
//!   Linux `wake_up_process`); [`Kthread::run`] is create + wake
//!   (`kthread_run`).
//! * [`Kthread::stop`] (`kthread_stop`) sets should-stop, unparks and wakes
//!   the thread, waits for it to exit and returns its exit value. A thread
//!   stopped before it ever ran never runs its function and `stop` answers
//!   `EINTR`. Stopping again, or stopping a thread that already exited on its
//!   own, returns the saved exit value: never a hang.
//! * [`Kthread::park`] / [`Kthread::unpark`] (`kthread_park`,
//!   `kthread_unpark`): the thread parks itself at its next [`parkme`]; a
//!   per-CPU thread is put back on its CPU when unparked. Stop wins over park.
//! * Binding ([`Kthread::bind`], `kthread_bind`) is allowed only before the
//!   first wake-up.
//! * Names are truncated to [`COMM_LEN`] bytes (Linux's `TASK_COMM_LEN` is 16
//!   with the NUL) and listed as `[name]`.
//! * A kernel thread cannot be killed or signalled from user space:
//!   [`signal_from_user`] answers `EPERM`.
//! * [`exit`] (`kthread_exit`) ends the thread from any depth; the thread's
//!   own record is released even on a port that abandons the calling frames
//!   (no unwinding in a kernel), so a reaped thread leaves no trace.
//! * Another thread's function and data ([`Kthread::func`],
//!   [`Kthread::data`], [`probe_data`]: Linux `kthread_func`,
//!   `kthread_data`, `kthread_probe_data`), per-CPU marking
//!   ([`Kthread::set_per_cpu`], `kthread_set_per_cpu`), and the freezer's
//!   [`freezable_should_stop`] (`kthread_freezable_should_stop`).
//!
//! Where this differs from Linux, `docs/kthreadd.md` says so beside Linux's
//! behaviour.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use core::any::{Any, TypeId};
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::state::{self, Control, FirstRun};
use crate::{freezer, registry};
use kport::sync::{Completion, SpinLock, WaitQueue};
use kport::{
    CpuMask, EBUSY, EINTR, EINVAL, ENOSYS, EPERM, ESRCH, Error, Priority, Result, SleepState, SpawnSpec, TaskRef,
    TaskState, port,
};

/// Longest thread name kept, in bytes (Linux `TASK_COMM_LEN` - 1).
pub const COMM_LEN: usize = 15;

/// The thread function: returns the exit value (Linux `int threadfn(void *)`).
pub type ThreadFn = Box<dyn FnOnce() -> i32 + Send>;

/// What identifies a thread function (Linux `kthread_func` returns the
/// function pointer; a Rust closure has no pointer to return). Two ids are
/// equal when the functions have the same type: a `fn` item has a type of
/// its own, so `FnId::of(&my_thread_main)` names exactly the threads created
/// with `my_thread_main`; each closure expression has its own type too.
#[derive(Clone, Copy)]
pub struct FnId {
    /// The function's type.
    type_id: TypeId,
    /// Its type's name (e.g. `my_crate::my_thread_main`, or
    /// `my_crate::start::{{closure}}` for a closure).
    name: &'static str,
}

impl FnId {
    /// The id of `f`'s function type.
    ///
    /// Context: any.
    pub fn of<F: 'static>(_f: &F) -> FnId {
        FnId { type_id: TypeId::of::<F>(), name: core::any::type_name::<F>() }
    }

    /// The type's name, as `core::any::type_name` gives it (for messages;
    /// compare ids, not names).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl PartialEq for FnId {
    fn eq(&self, other: &Self) -> bool {
        self.type_id == other.type_id
    }
}

impl Eq for FnId {}

impl fmt::Debug for FnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FnId({})", self.name)
    }
}

/// How a thread ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Its function returned this value, or it called [`exit`].
    Value(i32),
    /// It was stopped before it ever ran.
    NeverRan,
}

/// The shared state of one kernel thread (Linux `struct kthread`). Tags as
/// in the crate documentation's legend.
pub(crate) struct Inner {
    /// A: the control word (stop/park/start protocol, [`state`]).
    pub(crate) ctl: Control,
    /// I: the full name; the listed name is its first [`COMM_LEN`] bytes.
    pub(crate) full_name: String,
    /// I: the listed name.
    pub(crate) comm: String,
    /// O: set once kthreadd created the context.
    pub(crate) task: spin::Once<TaskRef>,
    /// I: id of the creating thread (kthreadd, or 0 for kthreadd itself).
    pub(crate) parent: usize,
    /// A: the CPU of a per-CPU thread (Linux `kthread->cpu`): written by
    /// [`Kthread::set_per_cpu`] before it sets `PER_CPU` (release), read by
    /// unpark after it sees `PER_CPU` (acquire).
    pub(crate) cpu: AtomicUsize,
    /// Own lock (leaf): the function, taken by the thread at its start.
    func: SpinLock<Option<ThreadFn>>,
    /// I: what identifies the function (Linux `kthread->threadfn`).
    func_id: FnId,
    /// Own lock (leaf): how it ended.
    exit: SpinLock<Option<Exit>>,
    /// Completed once `exit` is set (stoppers wait on it).
    exited: Completion,
    /// Completed while it sits parked (parkers wait on it).
    parked: Completion,
    /// I: the creator's data for the thread (Linux `kthread_data`).
    user_data: Option<Arc<dyn Any + Send + Sync>>,
    /// I: what the thread was spawned with.
    affinity: CpuMask,
    /// I: its priority level.
    priority: Priority,
    /// I: call the workqueue's scheduler hooks for it.
    worker_hooks: bool,
    /// Own lock (leaf): the CPU-time samples behind the listing's `%CPU`
    /// ([`registry::CpuUsage`]), written by whoever reads the listing.
    pub(crate) usage: SpinLock<registry::CpuUsage>,
}

impl Inner {
    fn task(&self) -> &TaskRef {
        self.task.get().expect("kthread used before kthreadd created it")
    }

    /// The state letter for listings.
    pub(crate) fn state_letter(&self) -> char {
        if self.ctl.has(state::EXITED) {
            return 'Z';
        }
        match self.task.get() {
            Some(t) => t.state().letter(),
            None => 'D',
        }
    }
}

/// A handle to a kernel thread (Linux's `struct task_struct *` of a
/// kthread). Clones refer to the same thread.
#[derive(Clone)]
pub struct Kthread(pub(crate) Arc<Inner>);

impl fmt::Debug for Kthread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kthread([{}] id {})", self.0.comm, self.id())
    }
}

/// Cut `name` to [`COMM_LEN`] bytes at a character boundary.
pub fn truncate_comm(name: &str) -> String {
    let mut end = name.len().min(COMM_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    String::from(&name[..end])
}

/// Options for creating a kernel thread. Linux `kthread_create_on_node` and
/// friends; build with [`Builder::new`], finish with [`Builder::create`] or
/// [`Builder::run`].
pub struct Builder {
    func: ThreadFn,
    func_id: FnId,
    name: String,
    affinity: CpuMask,
    per_cpu: Option<usize>,
    priority: Priority,
    worker_hooks: bool,
    user_data: Option<Arc<dyn Any + Send + Sync>>,
}

impl Builder {
    /// A thread that will run `f`, named `name` (truncated when listed).
    pub fn new(name: fmt::Arguments<'_>, f: impl FnOnce() -> i32 + Send + 'static) -> Self {
        Builder {
            func_id: FnId::of(&f),
            func: Box::new(f),
            name: alloc::fmt::format(name),
            affinity: CpuMask::ALL,
            per_cpu: None,
            priority: Priority::Normal,
            worker_hooks: false,
            user_data: None,
        }
    }

    /// Data for the thread, found again with [`data`] (from inside) or
    /// [`data_of`] (from the scheduler hooks): Linux `kthread_data`.
    pub fn data(mut self, d: Arc<dyn Any + Send + Sync>) -> Self {
        self.user_data = Some(d);
        self
    }

    /// Bind it to `cpu` as a per-CPU thread (Linux `kthread_create_on_cpu`):
    /// it runs only there, and unparking puts it back there.
    pub fn on_cpu(mut self, cpu: usize) -> Self {
        self.per_cpu = Some(cpu);
        self
    }

    /// Restrict it to `mask` from the start.
    pub fn affinity(mut self, mask: CpuMask) -> Self {
        self.affinity = mask;
        self
    }

    /// Its priority level.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// Call the workqueue scheduler hooks when it blocks and runs again.
    pub fn worker_hooks(mut self, on: bool) -> Self {
        self.worker_hooks = on;
        self
    }

    /// Create the thread, asleep until its first wake-up.
    ///
    /// Context: may sleep (it waits for kthreadd). Return: the thread, asleep; `EINVAL` for a bad CPU or affinity, `ENOMEM`, `ESRCH` before [`init`].
    #[track_caller]
    pub fn create(self) -> Result<Kthread> {
        kport::might_sleep();
        if kport::fault::FAIL_KTHREAD_CREATE.should_fail(1, core::panic::Location::caller()) {
            return Err(Error::new(kport::ENOMEM));
        }
        let p = port();
        let (affinity, extra) = match self.per_cpu {
            Some(cpu) if cpu >= p.cpu_count() => return Err(Error::new(EINVAL)),
            Some(cpu) => (CpuMask::one(cpu), state::PER_CPU),
            None => (self.affinity, 0),
        };
        if affinity.and(CpuMask::first(p.cpu_count())).is_empty() {
            return Err(Error::new(EINVAL));
        }
        let comm = truncate_comm(&self.name);
        let inner = Arc::new(Inner {
            ctl: Control::new(extra),
            full_name: self.name,
            comm,
            task: spin::Once::new(),
            parent: kthreadd_id(),
            cpu: AtomicUsize::new(self.per_cpu.unwrap_or(0)),
            func: SpinLock::ranked("kthread fn", crate::RANK_LEAF, Some(self.func)),
            func_id: self.func_id,
            exit: SpinLock::ranked("kthread exit", crate::RANK_LEAF, None),
            exited: Completion::new(),
            parked: Completion::new(),
            user_data: self.user_data,
            affinity,
            priority: self.priority,
            usage: SpinLock::ranked("kthread cpu usage", crate::RANK_LEAF, registry::CpuUsage::since_now()),
            worker_hooks: self.worker_hooks,
        });
        create_through_kthreadd(&inner)?;
        registry::add(&inner);
        let k = Kthread(inner);
        if kport::trace::on(kport::trace::Event::TaskNewtask) {
            trace_newtask(&k);
        }
        Ok(k)
    }

    /// Create and wake it (Linux `kthread_run`).
    ///
    /// Context: may sleep. Return: as [`Builder::create`].
    #[track_caller]
    pub fn run(self) -> Result<Kthread> {
        kport::might_sleep();
        let k = self.create()?;
        k.wake();
        Ok(k)
    }
}

/// Create a kernel thread running `f`, named from format arguments
/// (Linux `kthread_create`): `kthread_create!(|| 0, "worker/{}", n)`.
#[macro_export]
macro_rules! kthread_create {
    ($f:expr, $($name:tt)+) => {
        $crate::kthread::Builder::new(format_args!($($name)+), $f).create()
    };
}

/// Create and wake a kernel thread (Linux `kthread_run`).
#[macro_export]
macro_rules! kthread_run {
    ($f:expr, $($name:tt)+) => {
        $crate::kthread::Builder::new(format_args!($($name)+), $f).run()
    };
}

/// Create a thread bound to `cpu` (Linux `kthread_create_on_cpu`; the
/// caller names it, `name/N` style).
///
/// Context: may sleep. Return: as [`Builder::create`].
#[track_caller]
pub fn create_on_cpu(
    f: impl FnOnce() -> i32 + Send + 'static,
    cpu: usize,
    name: fmt::Arguments<'_>,
) -> Result<Kthread> {
    kport::might_sleep();
    Builder::new(name, f).on_cpu(cpu).create()
}

impl Kthread {
    /// The context id (Linux PID).
    pub fn id(&self) -> usize {
        self.0.task().id()
    }

    /// The listed name (at most [`COMM_LEN`] bytes).
    pub fn comm(&self) -> &str {
        &self.0.comm
    }

    /// The full name it was created with.
    pub fn full_name(&self) -> &str {
        &self.0.full_name
    }

    /// Id of the thread that created it (kthreadd).
    pub fn parent_id(&self) -> usize {
        self.0.parent
    }

    /// The context's state.
    pub fn state(&self) -> TaskState {
        if self.0.ctl.has(state::EXITED) { TaskState::Dead } else { self.0.task().state() }
    }

    /// The CPU it runs or last ran on.
    pub fn cpu(&self) -> usize {
        self.0.task().cpu()
    }

    /// The CPUs it may run on.
    pub fn affinity(&self) -> CpuMask {
        self.0.task().affinity()
    }

    /// The port's handle of the context.
    pub fn task(&self) -> &TaskRef {
        self.0.task()
    }

    /// Has its function started (it got a CPU after its first wake-up and no
    /// stop came first)? A stop after this returns the function's value.
    pub fn has_started(&self) -> bool {
        self.0.ctl.has(state::STARTED)
    }

    /// Has it exited?
    pub fn has_exited(&self) -> bool {
        self.0.ctl.has(state::EXITED)
    }

    /// Wake it (Linux `wake_up_process`); the first wake-up starts it. True
    /// if it was asleep.
    ///
    /// Context: any. Return: true if it was asleep.
    pub fn wake(&self) -> bool {
        self.0.ctl.claim_first_wake();
        self.0.task().wake()
    }

    /// Bind it to `cpu` (Linux `kthread_bind`). Only before the first
    /// wake-up: afterwards `EBUSY` (Linux warns and leaves it unbound).
    ///
    /// Context: any task context. Return: `EINVAL` for a bad CPU, `EBUSY` after the first wake-up.
    pub fn bind(&self, cpu: usize) -> Result<()> {
        if cpu >= port().cpu_count() {
            return Err(Error::new(EINVAL));
        }
        self.bind_mask(CpuMask::one(cpu))
    }

    /// Restrict it to `mask` (Linux `kthread_bind_mask`); only before the
    /// first wake-up.
    ///
    /// Context: any task context. Return: as [`Kthread::bind`].
    pub fn bind_mask(&self, mask: CpuMask) -> Result<()> {
        if mask.and(CpuMask::first(port().cpu_count())).is_empty() {
            return Err(Error::new(EINVAL));
        }
        if self.0.ctl.has(state::WOKEN) {
            kport::warn::warn(&alloc::format!(
                "kthread_bind of [{}] (id {}) after its first wake-up: refused",
                self.0.comm,
                self.id()
            ));
            return Err(Error::new(EBUSY));
        }
        self.0.task().set_affinity(mask)
    }

    /// Stop it (Linux `kthread_stop`): set should-stop, unpark, wake, wait
    /// for it to exit, and return its exit value; `EINTR` if it was stopped
    /// before it ever ran. Must be called from a context that may sleep, not
    /// from the thread itself (`EINVAL` and a warning: it would wait for its own exit).
    ///
    /// Context: may sleep. Return: the exit value, `EINTR` if it never ran, `EINVAL` from the thread itself.
    #[track_caller]
    pub fn stop(&self) -> Result<i32> {
        kport::might_sleep();
        let p = port();
        if p.current_id() == self.id() {
            // Linux's kthread_stop(current) waits for its own exit and never
            // returns; a thread that wants to end returns or calls exit.
            kport::warn::warn(&alloc::format!(
                "kthread_stop of [{}] (id {}) from the thread itself: it would wait for its own exit; refused",
                self.0.comm,
                self.id()
            ));
            return Err(Error::new(EINVAL));
        }
        self.0.ctl.set(state::SHOULD_STOP);
        self.unpark_inner();
        // A first wake-up starts it; it then sees should-stop and exits.
        self.0.ctl.claim_first_wake();
        self.0.task().wake();
        if kport::trace::on(kport::trace::Event::SchedKthreadStop) {
            kport::trace::save_comm(self.id() as u64, &self.0.comm);
            kport::trace::emit(kport::trace::Event::SchedKthreadStop, [self.id() as u64, 0, 0, 0, 0], "", "");
        }
        self.0.exited.wait("kthread_stop");
        let r = match (*self.0.exit.lock()).expect("exited without an exit value") {
            Exit::Value(v) => Ok(v),
            Exit::NeverRan => Err(Error::new(EINTR)),
        };
        if kport::trace::on(kport::trace::Event::SchedKthreadStopRet) {
            let ret = match r {
                Ok(v) => v as i64,
                Err(e) => -(e.errno as i64),
            };
            kport::trace::emit(kport::trace::Event::SchedKthreadStopRet, [ret as u64, 0, 0, 0, 0], "", "");
        }
        r
    }

    /// Ask it to park and wait until it has parked itself at its next
    /// [`parkme`] (Linux `kthread_park`). `ENOSYS` if it has exited (also when
    /// a concurrent stop made it exit instead of parking), `EBUSY` if a park
    /// is already pending (both refusals at the call warn, as Linux's do). Parking a thread that never ran starts
    /// it: it parks before its function runs.
    ///
    /// Context: may sleep. Return: `ENOSYS` if it exited, `EBUSY` if a park is pending.
    #[track_caller]
    pub fn park(&self) -> Result<()> {
        kport::might_sleep();
        if let Err(bits) = self.0.ctl.request_park() {
            // Linux warns on both: parking an exiting thread (ENOSYS) and a
            // second park while one is pending (EBUSY).
            let (e, why) = if bits & state::EXITED != 0 {
                (ENOSYS, "it has exited")
            } else {
                (EBUSY, "a park is already pending")
            };
            kport::warn::warn(&alloc::format!("kthread_park of [{}] (id {}): {why}; refused", self.0.comm, self.id()));
            return Err(Error::new(e));
        }
        let p = port();
        if p.current_id() != self.id() {
            self.0.ctl.claim_first_wake();
            self.0.task().wake();
            // Linux then also waits for the task to leave its CPU
            // (wait_task_inactive) so it can rebind it; affinity changes are
            // safe at any time in this port, so the parked signal suffices.
            // An exit (a stop that won) also signals it: never a hang.
            self.0.parked.wait("kthread_park");
            if self.0.ctl.has(state::EXITED) {
                return Err(Error::new(ENOSYS));
            }
        }
        Ok(())
    }

    /// Let a parked thread run again (Linux `kthread_unpark`); a per-CPU
    /// thread is first put back on its CPU.
    ///
    /// Context: any.
    pub fn unpark(&self) {
        self.unpark_inner();
    }

    fn unpark_inner(&self) {
        if self.0.ctl.has(state::PER_CPU) && self.0.ctl.has(state::PARKED) {
            // Parked, hence not running: safe to rebind (Linux __kthread_bind
            // with TASK_PARKED).
            let cpu = self.0.cpu.load(Ordering::Acquire);
            let _ = self.0.task().set_affinity(CpuMask::one(cpu));
        }
        if self.0.ctl.clear(state::SHOULD_PARK) & state::SHOULD_PARK != 0 {
            self.0.parked.reset();
        }
        self.0.task().wake_parked();
    }

    /// Is it parked right now?
    pub fn is_parked(&self) -> bool {
        self.0.ctl.has(state::PARKED)
    }

    /// Is it frozen right now, sitting at a freeze point until the thaw
    /// (Linux `frozen(p)`)? See [`crate::freezer`].
    pub fn is_frozen(&self) -> bool {
        self.0.ctl.has(state::FROZEN)
    }

    /// Did it make itself freezable ([`freezer::set_freezable`])?
    pub fn is_freezable(&self) -> bool {
        self.0.ctl.has(state::FREEZABLE)
    }

    /// What identifies the function it was created with (Linux
    /// `kthread_func(task)`, which returns the function pointer): compare it
    /// with [`FnId::of`].
    ///
    /// Context: any.
    pub fn func(&self) -> FnId {
        self.0.func_id
    }

    /// The data it was created with ([`Builder::data`]; Linux
    /// `kthread_data(task)`), for any thread, also after it exited.
    ///
    /// Context: any. Return: the data, `None` if it was given none.
    pub fn data(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.0.user_data.clone()
    }

    /// Mark it a per-CPU thread of `cpu`, or clear the mark with `None`
    /// (Linux `kthread_set_per_cpu`, where -1 clears). A per-CPU thread is
    /// put back on its CPU whenever it is unparked. Like Linux, this does not
    /// move the thread: marking a thread that is not bound to `cpu` warns
    /// (Linux warns when it was never bound) and takes effect at its next
    /// unpark.
    ///
    /// Context: any. Return: `EINVAL` for a CPU that does not exist.
    pub fn set_per_cpu(&self, cpu: Option<usize>) -> Result<()> {
        let Some(cpu) = cpu else {
            self.0.ctl.clear(state::PER_CPU);
            return Ok(());
        };
        if cpu >= port().cpu_count() {
            return Err(Error::new(EINVAL));
        }
        let aff = self.0.task().affinity();
        if aff != CpuMask::one(cpu) {
            kport::warn::warn(&alloc::format!(
                "kthread_set_per_cpu of [{}] (id {}) to CPU {cpu} while it may run on {aff:?}: it is bound there at its next unpark",
                self.0.comm,
                self.id()
            ));
        }
        self.0.cpu.store(cpu, Ordering::Release);
        self.0.ctl.set(state::PER_CPU);
        Ok(())
    }

    /// Is it marked a per-CPU thread (Linux `kthread_is_per_cpu`)?
    ///
    /// Context: any.
    pub fn is_per_cpu(&self) -> bool {
        self.0.ctl.has(state::PER_CPU)
    }

    /// The CPU it belongs to as a per-CPU thread, `None` if it is not one.
    ///
    /// Context: any.
    pub fn per_cpu(&self) -> Option<usize> {
        self.is_per_cpu().then(|| self.0.cpu.load(Ordering::Acquire))
    }
}

// ---------------------------------------------------------------- inside

fn current_inner() -> Option<Arc<Inner>> {
    port().current_data()?.downcast::<Inner>().ok()
}

/// The calling kernel thread's handle, if it is one.
pub fn current() -> Option<Kthread> {
    current_inner().map(Kthread)
}

/// The calling kernel thread's data given at creation (Linux
/// `kthread_data(current)`).
pub fn data() -> Option<Arc<dyn Any + Send + Sync>> {
    current_inner().and_then(|k| k.user_data.clone())
}

/// The kernel thread behind the port's context `task`, if it is one (also
/// after it exited, while a handle to it is left).
///
/// Context: any task context.
pub fn of_task(task: &TaskRef) -> Option<Kthread> {
    match task.data().and_then(|d| d.downcast::<Inner>().ok()) {
        Some(k) => Some(Kthread(k)),
        None => registry::find(task.id()),
    }
}

/// The function `task` was created with if it is a kernel thread (Linux
/// `kthread_func(task)`, which answers NULL for other tasks).
///
/// Context: any task context.
pub fn func_of(task: &TaskRef) -> Option<FnId> {
    of_task(task).map(|k| k.func())
}

/// The data `task` was created with, if it is a kernel thread that was given
/// data (Linux `kthread_probe_data`: any task, `None` when it is not a
/// kthread or has no data).
///
/// Context: any task context.
pub fn probe_data(task: &TaskRef) -> Option<Arc<dyn Any + Send + Sync>> {
    of_task(task).and_then(|k| k.data())
}

/// The data given at creation of the kernel thread whose port data is `d`
/// (what the scheduler hooks receive).
pub fn data_of(d: &kport::TaskData) -> Option<&Arc<dyn Any + Send + Sync>> {
    d.downcast_ref::<Inner>()?.user_data.as_ref()
}

/// Should the calling thread stop (Linux `kthread_should_stop`)? False for
/// contexts that are not kernel threads.
pub fn should_stop() -> bool {
    current_inner().is_some_and(|k| k.ctl.has(state::SHOULD_STOP))
}

/// Should the calling thread park (Linux `kthread_should_park`)?
pub fn should_park() -> bool {
    current_inner().is_some_and(|k| k.ctl.should_stay_parked())
}

/// Should it stop or park (Linux `kthread_should_stop_or_park`)?
pub fn should_stop_or_park() -> bool {
    current_inner().is_some_and(|k| k.ctl.has(state::SHOULD_STOP) || k.ctl.should_stay_parked())
}

/// [`should_stop`] for a freezable thread (Linux
/// `kthread_freezable_should_stop`): first freeze here if a freeze is on
/// ([`freezer`]), then answer whether to stop. A stop releases a frozen
/// thread, so stop and freeze never wait on each other. `was_frozen`, if
/// given, is set to whether it was frozen here.
///
/// Context: may sleep; in the kernel thread itself. Return: whether it should stop.
#[track_caller]
pub fn freezable_should_stop(was_frozen: Option<&mut bool>) -> bool {
    kport::might_sleep();
    let Some(k) = current_inner() else {
        if let Some(w) = was_frozen {
            *w = false;
        }
        return false;
    };
    let frozen = freezer::freezing_inner(&k) && freezer::refrigerator(&k);
    if let Some(w) = was_frozen {
        *w = frozen;
    }
    k.ctl.has(state::SHOULD_STOP)
}

/// Park here while a park is requested (Linux `kthread_parkme`).
///
/// Context: may sleep; only in the kernel thread itself.
#[track_caller]
pub fn parkme() {
    kport::might_sleep();
    if let Some(k) = current_inner() {
        parkme_inner(&k);
    }
}

fn parkme_inner(k: &Inner) {
    let p = port();
    loop {
        p.set_current_state(SleepState::Parked, "kthread_parkme");
        if !k.ctl.should_stay_parked() {
            break;
        }
        k.ctl.set(state::PARKED);
        k.parked.complete_all();
        p.schedule();
    }
    k.ctl.clear(state::PARKED);
    p.set_current_running();
}

/// End the calling kernel thread with `code` (Linux `kthread_exit`).
///
/// Kernels do not unwind: on such a port the calling frames are abandoned
/// without running their destructors, so what they own (the thread
/// function's captures, handles it cloned) is never dropped. The thread's
/// own record is not held by any of those frames, so stopping it and
/// dropping the last handle releases it as for a thread that returned.
/// Prefer returning from the thread function.
pub fn exit(code: i32) -> ! {
    let Some(k) = current_inner() else { panic!("kthread::exit called outside a kernel thread") };
    record_exit(&k, Exit::Value(code));
    // No strong reference may stay in this frame: it is never unwound.
    drop(k);
    port().exit_current()
}

/// Store the exit value and release everyone waiting on the thread: stoppers
/// and also parkers (a stop that raced a park makes the thread exit rather
/// than park; the parker must not wait for ever).
fn record_exit(k: &Inner, how: Exit) {
    *k.exit.lock() = Some(how);
    k.ctl.set(state::EXITED);
    k.exited.complete_all();
    k.parked.complete_all();
}

/// The entry of every kernel thread (Linux `kthread()`).
///
/// It holds no strong reference to the thread's record while the function
/// runs: a thread that ends with [`exit`] never returns here, and on a port
/// that abandons its frames such a reference would keep the record (and its
/// registry entry, listed as `Z`) alive for ever. The port's data reference
/// keeps it alive until the context has exited.
fn entry() {
    let Some(f) = first_run() else { return };
    let v = f();
    let k = current_inner().expect("kthread data gone before the thread exited");
    record_exit(&k, Exit::Value(v));
}

/// The start of a thread: the function to run, or `None` if it was stopped
/// before it ever ran (its exit is then recorded).
fn first_run() -> Option<ThreadFn> {
    let k = current_inner().expect("kthread entry without its kthread data");
    match k.ctl.first_run() {
        FirstRun::StoppedBeforeRun => {
            // Drop the unrun function here, in the thread's own context,
            // not wherever the last reference happens to go.
            drop(k.func.lock().take());
            record_exit(&k, Exit::NeverRan);
            None
        }
        FirstRun::RunFn => {
            // A park requested before the first run parks here first.
            parkme_inner(&k);
            Some(k.func.lock().take().expect("thread function already taken"))
        }
    }
}

/// Sleep on `wq` until `cond()` holds or the thread is asked to stop (the
/// `wait_event_interruptible(wq, cond || kthread_should_stop())` pattern).
/// True if `cond()` held.
///
/// Context: may sleep; in a kernel thread. Return: true if `cond()` held.
#[track_caller]
pub fn wait_event_or_stop(wq: &WaitQueue, wchan: &'static str, mut cond: impl FnMut() -> bool) -> bool {
    kport::might_sleep();
    let mut ok = false;
    wq.wait_event_interruptible(wchan, || {
        ok = cond();
        ok || should_stop()
    });
    ok
}

/// Sleep `ms` milliseconds unless asked to stop (Linux
/// `msleep_interruptible` in a kthread). True if the full time passed.
///
/// Context: may sleep. Return: true if the full time passed.
#[track_caller]
pub fn sleep_ms_or_stop(ms: u64) -> bool {
    kport::might_sleep();
    let p = port();
    let deadline = p.now_ns() + ms * 1_000_000;
    while p.now_ns() < deadline {
        p.set_current_state(SleepState::Interruptible, "msleep");
        if should_stop() {
            p.set_current_running();
            return false;
        }
        p.schedule_until(deadline);
    }
    true
}

/// Sleep `ms` milliseconds (Linux `msleep`: uninterruptible, never early).
///
/// Context: may sleep.
#[track_caller]
pub fn msleep(ms: u64) {
    kport::might_sleep();
    let p = port();
    let deadline = p.now_ns() + ms * 1_000_000;
    while p.now_ns() < deadline {
        p.set_current_state(SleepState::Uninterruptible, "msleep");
        p.schedule_until(deadline);
    }
}

/// What a user-facing layer calls to signal or kill context `id`: kernel
/// threads answer `EPERM` (they cannot be killed from user space), unknown
/// ids `ESRCH`.
pub fn signal_from_user(id: usize, _signal: u32) -> Result<()> {
    if registry::find(id).is_some() { Err(Error::new(EPERM)) } else { Err(Error::new(ESRCH)) }
}

// ---------------------------------------------------------------- kthreadd

struct Request {
    inner: Arc<Inner>,
    result: SpinLock<Option<Result<()>>>,
    done: Completion,
}

struct Kthreadd {
    queue: SpinLock<VecDeque<Arc<Request>>>,
    wq: WaitQueue,
    me: spin::Once<Arc<Inner>>,
}

static KTHREADD: Kthreadd = Kthreadd {
    queue: SpinLock::ranked("kthreadd queue", crate::RANK_KTHREADD, VecDeque::new()),
    wq: WaitQueue::new(),
    me: spin::Once::new(),
};

/// Id of kthreadd (0 before [`init`]).
pub fn kthreadd_id() -> usize {
    KTHREADD.me.get().and_then(|k| k.task.get()).map_or(0, |t| t.id())
}

/// kthreadd's handle.
pub fn kthreadd() -> Option<Kthread> {
    KTHREADD.me.get().map(|k| Kthread(k.clone()))
}

fn spawn_now(k: &Arc<Inner>) -> Result<()> {
    let t = port().spawn(SpawnSpec {
        name: k.comm.clone(),
        entry: Box::new(entry),
        affinity: k.affinity,
        priority: k.priority,
        data: Some(k.clone()),
        worker_hooks: k.worker_hooks,
    })?;
    k.task.call_once(|| t);
    Ok(())
}

fn create_through_kthreadd(k: &Arc<Inner>) -> Result<()> {
    let p = port();
    let Some(me) = KTHREADD.me.get() else {
        return Err(Error::new(ESRCH));
    };
    if me.task.get().is_some_and(|t| t.id() == p.current_id()) {
        // kthreadd itself creating (or a request from its own context).
        return spawn_now(k);
    }
    let req = Arc::new(Request {
        inner: k.clone(),
        result: SpinLock::ranked("kthread request", crate::RANK_LEAF, None),
        done: Completion::new(),
    });
    KTHREADD.queue.lock().push_back(req.clone());
    // The caller sleeps at once: a port may run kthreadd on this CPU.
    KTHREADD.wq.wake_all_sync();
    req.done.wait("kthread_create");
    req.result.lock().take().unwrap_or(Err(Error::new(ESRCH)))
}

fn kthreadd_main() -> i32 {
    loop {
        KTHREADD.wq.wait_event_interruptible("kthreadd", || !KTHREADD.queue.lock().is_empty());
        loop {
            let req = KTHREADD.queue.lock().pop_front();
            let Some(req) = req else { break };
            let r = spawn_now(&req.inner);
            *req.result.lock() = Some(r);
            req.done.complete_all();
        }
    }
}

/// The `task_newtask` tracepoint for a kthread just created (its name goes
/// to the trace's name table).
#[cold]
#[inline(never)]
fn trace_newtask(k: &Kthread) {
    kport::trace::save_comm(k.id() as u64, &k.0.comm);
    kport::trace::emit(kport::trace::Event::TaskNewtask, [k.id() as u64, 0, 0, 0, 0], "", "");
}

/// Names a context for trace dumps from the registry.
fn trace_comm(pid: u64) -> Option<String> {
    registry::find(pid as usize).map(|k| String::from(k.0.comm.as_str()))
}

/// Start kthreadd (once, at boot, after the port is installed). Returns its
/// handle; later calls return the same one.
///
/// Context: may sleep; boot, after the port is installed. Return: kthreadd's handle.
#[track_caller]
pub fn init() -> Result<Kthread> {
    kport::might_sleep();
    kport::trace::set_comm_resolver(trace_comm);
    if let Some(k) = KTHREADD.me.get() {
        return Ok(Kthread(k.clone()));
    }
    let inner = Arc::new(Inner {
        ctl: Control::new(0),
        full_name: String::from("kthreadd"),
        comm: String::from("kthreadd"),
        task: spin::Once::new(),
        parent: 0,
        cpu: AtomicUsize::new(0),
        func: SpinLock::ranked("kthread fn", crate::RANK_LEAF, Some(Box::new(kthreadd_main))),
        func_id: FnId::of(&kthreadd_main),
        exit: SpinLock::ranked("kthread exit", crate::RANK_LEAF, None),
        exited: Completion::new(),
        parked: Completion::new(),
        user_data: None,
        affinity: CpuMask::ALL,
        priority: Priority::Normal,
        usage: SpinLock::ranked("kthread cpu usage", crate::RANK_LEAF, registry::CpuUsage::since_now()),
        worker_hooks: false,
    });
    spawn_now(&inner)?;
    KTHREADD.me.call_once(|| inner.clone());
    registry::add(&inner);
    let k = Kthread(inner);
    k.wake();
    Ok(k)
}
