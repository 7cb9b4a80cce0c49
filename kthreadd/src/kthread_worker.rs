//! `kthread_worker`: one dedicated kernel thread that runs queued work items
//! in queue order (Linux `kthread_create_worker`, `kthread_queue_work`,
//! `kthread_queue_delayed_work`, `kthread_mod_delayed_work`,
//! `kthread_flush_work`, `kthread_flush_worker`,
//! `kthread_cancel_[delayed_]work_sync`, `kthread_destroy_worker`).
//!
//! A work item belongs to at most one worker at a time. Queueing a pending
//! item answers false. Flushing an item waits for the instance queued or
//! running at the time of the call (a marker is queued right after it, or at
//! the head if it is running). Cancelling reports whether the item was
//! pending and waits for a running instance; while it waits, the item cannot
//! be queued again (Linux's `canceling` count). Destroying flushes what is
//! queued, then stops the thread; items queued afterwards are refused with a
//! warning.
//!
//! A worker created with [`KtwFlags::FREEZABLE`] (Linux `KTW_FREEZABLE`)
//! has a freezable thread ([`crate::freezer`]): while a freeze is on it
//! stops between items, and runs the rest after the thaw.
//!
//! Destroying a worker while a delayed item's timer is armed (Linux warns
//! that the delayed list is not empty and leaves the timer to fire on the
//! freed worker) cancels the timer: the item never runs there, a one-line
//! warning names the worker, and [`KthreadWorker::destroy`] answers how
//! many were cancelled. The item may be queued again, on another worker.
//!
//! Lock: each worker's `state` lock protects its lists (queued items,
//! armed delayed items, pending and cancelling items) and its current
//! item (rank `RANK_KTW_WORKER`; the timer's callback takes it from
//! interrupt context).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::sync::{Arc, Weak};
use core::fmt;
use core::ops::BitOr;

use crate::freezer;
use crate::kthread::{self, Builder, Kthread};
use kport::sync::{Completion, SpinLock, WaitQueue};
use kport::{EINVAL, Error, PortTimer, Result, port};

/// A work item (Linux `struct kthread_work`): a function run by a worker.
#[derive(Clone)]
pub struct KthreadWork(Arc<KthreadWorkInner>);

struct KthreadWorkInner {
    /// I: the function.
    func: Box<dyn Fn() + Send + Sync>,
    /// Own lock (rank `RANK_KTW_ITEM`): the worker it was last queued on.
    on: SpinLock<Option<Weak<WorkerShared>>>,
}

/// An entry of a worker's list (owned by the list: `L:`).
struct Queued {
    /// L: the item.
    work: Arc<KthreadWorkInner>,
    /// L: a flush marker: completing it signals the flusher.
    marker: Option<Arc<Completion>>,
}

/// A worker's lists, inside its lock (every field `L:`).
struct WorkerLists {
    /// L: queued items and flush markers, in order.
    list: VecDeque<Queued>,
    /// L: the item running now.
    current: Option<Arc<KthreadWorkInner>>,
    /// L: items with a pending (queued or timer-armed) instance.
    pending: alloc::vec::Vec<Arc<KthreadWorkInner>>,
    /// L: items being cancelled (refuse queueing).
    canceling: alloc::vec::Vec<Arc<KthreadWorkInner>>,
    /// L: delayed items whose timer is armed, with their timer (Linux
    /// `delayed_work_list`): the timer's callback moves an item from here
    /// to `list`; destroy cancels what is left.
    delayed: alloc::vec::Vec<(Arc<KthreadWorkInner>, Arc<dyn PortTimer>)>,
    /// L: destroy began: refuse new items.
    dying: bool,
}

/// A worker's shared state.
struct WorkerShared {
    /// The worker lock (rank `RANK_KTW_WORKER`; the timer callback takes it
    /// in interrupt context) and what it protects.
    state: SpinLock<WorkerLists>,
    /// The thread sleeps here for items.
    wq: WaitQueue,
    /// Signalled whenever the current item finishes.
    idle: WaitQueue,
    /// O: its thread.
    thread: spin::Once<Kthread>,
    /// I: its name.
    name: alloc::string::String,
    /// I: its flags.
    flags: KtwFlags,
}

/// Flags of a worker (Linux `KTW_*`), given to
/// [`KthreadWorker::create_with_flags`].
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct KtwFlags(u32);

impl KtwFlags {
    /// No flag.
    pub const NONE: KtwFlags = KtwFlags(0);
    /// The worker's thread is freezable and freezes between items (Linux
    /// `KTW_FREEZABLE`).
    pub const FREEZABLE: KtwFlags = KtwFlags(1 << 0);

    /// Are all of `other`'s flags set?
    pub fn contains(self, other: KtwFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl BitOr for KtwFlags {
    type Output = KtwFlags;
    fn bitor(self, o: KtwFlags) -> KtwFlags {
        KtwFlags(self.0 | o.0)
    }
}

/// Linux's name of [`KtwFlags::FREEZABLE`].
pub const KTW_FREEZABLE: KtwFlags = KtwFlags::FREEZABLE;

/// A worker (Linux `struct kthread_worker`).
pub struct KthreadWorker(Arc<WorkerShared>);

impl fmt::Debug for KthreadWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KthreadWorker({})", self.0.name)
    }
}

/// A: items pending (queued or timer-armed) or running on every worker,
/// for [`items_in_flight`].
static IN_FLIGHT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Work items pending (queued, or waiting for their timer) or running on
/// every `kthread_worker` (there is no such count in Linux): what a leak
/// check compares before and after a test.
///
/// Context: any.
pub fn items_in_flight() -> usize {
    IN_FLIGHT.load(core::sync::atomic::Ordering::Acquire)
}

fn in_flight_add(n: isize) {
    use core::sync::atomic::Ordering;
    if n > 0 {
        IN_FLIGHT.fetch_add(n as usize, Ordering::AcqRel);
    } else if n < 0 {
        IN_FLIGHT.fetch_sub(n.unsigned_abs(), Ordering::AcqRel);
    }
}

impl WorkerLists {
    /// `w` has a pending instance now (worker lock held).
    fn add_pending(&mut self, w: &Arc<KthreadWorkInner>) {
        self.pending.push(w.clone());
        in_flight_add(1);
    }

    /// `w` has no pending instance any more (it starts, or was cancelled):
    /// true if it had one.
    fn drop_pending(&mut self, w: &Arc<KthreadWorkInner>) -> bool {
        let was = remove(&mut self.pending, w);
        if was {
            in_flight_add(-1);
        }
        was
    }

    /// The item the worker runs now (None: between items), counted in
    /// flight while it runs.
    fn set_current(&mut self, w: Option<Arc<KthreadWorkInner>>) {
        let delta = w.is_some() as isize - self.current.is_some() as isize;
        self.current = w;
        in_flight_add(delta);
    }
}

fn contains(v: &[Arc<KthreadWorkInner>], w: &Arc<KthreadWorkInner>) -> bool {
    v.iter().any(|x| Arc::ptr_eq(x, w))
}

fn remove(v: &mut alloc::vec::Vec<Arc<KthreadWorkInner>>, w: &Arc<KthreadWorkInner>) -> bool {
    match v.iter().position(|x| Arc::ptr_eq(x, w)) {
        Some(i) => {
            v.swap_remove(i);
            true
        }
        None => false,
    }
}

impl KthreadWork {
    /// A work item running `f` (Linux `kthread_init_work`).
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        KthreadWork(Arc::new(KthreadWorkInner {
            func: Box::new(f),
            on: SpinLock::ranked("kthread_work", crate::RANK_KTW_ITEM, None),
        }))
    }
}

/// A delayed work item (Linux `struct kthread_delayed_work`): a work item
/// plus the timer that queues it.
pub struct KthreadDelayedWork {
    work: KthreadWork,
    /// The timer; the worker it is armed for keeps a reference on its
    /// delayed list, so destroying the worker can cancel it.
    timer: Arc<dyn PortTimer>,
    /// The worker the timer will queue it on.
    target: Arc<SpinLock<Option<Weak<WorkerShared>>>>,
}

impl KthreadDelayedWork {
    /// A delayed work item running `f` (Linux `kthread_init_delayed_work`).
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        let work = KthreadWork::new(f);
        let target: Arc<SpinLock<Option<Weak<WorkerShared>>>> =
            Arc::new(SpinLock::ranked("kthread_delayed_work target", crate::RANK_LEAF, None));
        let (w, t) = (work.0.clone(), target.clone());
        let timer = kport::timers::new(Arc::new(move || {
            // Interrupt context: move the item to its worker's list.
            let worker = t.lock().as_ref().and_then(|w| w.upgrade());
            if let Some(worker) = worker {
                worker.timer_fired(&w);
            }
        }));
        KthreadDelayedWork { work, timer: Arc::from(timer), target }
    }

    /// The work item inside.
    pub fn work(&self) -> &KthreadWork {
        &self.work
    }
}

impl WorkerShared {
    fn wake_thread(&self) {
        self.wq.wake_all();
    }

    fn timer_fired(&self, w: &Arc<KthreadWorkInner>) {
        let mut st = self.state.lock();
        // Only an item still on the delayed list: cancel, mod and destroy
        // take it off before they touch the timer.
        if !remove_delayed(&mut st.delayed, w) || !contains(&st.pending, w) || contains(&st.canceling, w) {
            return;
        }
        st.list.push_back(Queued { work: w.clone(), marker: None });
        drop(st);
        self.wake_thread();
    }

    /// Attach `w` to this worker or refuse if it belongs to another.
    fn claim(self: &Arc<Self>, w: &Arc<KthreadWorkInner>) -> bool {
        let mut on = w.on.lock();
        match on.as_ref().and_then(|x| x.upgrade()) {
            Some(other) if !Arc::ptr_eq(&other, self) => {
                kport::warn::warn(&format!(
                    "kthread work queued on worker {} while attached to worker {}: refused",
                    self.name, other.name
                ));
                false
            }
            _ => {
                *on = Some(Arc::downgrade(self));
                true
            }
        }
    }
}

/// Take `w` off a delayed list; true if it was there.
fn remove_delayed(
    v: &mut alloc::vec::Vec<(Arc<KthreadWorkInner>, Arc<dyn PortTimer>)>,
    w: &Arc<KthreadWorkInner>,
) -> bool {
    match v.iter().position(|(x, _)| Arc::ptr_eq(x, w)) {
        Some(i) => {
            v.swap_remove(i);
            true
        }
        None => false,
    }
}

fn worker_fn(w: Arc<WorkerShared>) -> i32 {
    if w.flags.contains(KtwFlags::FREEZABLE) {
        freezer::set_freezable();
    }
    loop {
        let next = {
            let mut st = w.state.lock();
            st.set_current(None);
            match st.list.pop_front() {
                Some(q) => {
                    if q.marker.is_none() {
                        st.drop_pending(&q.work);
                        st.set_current(Some(q.work.clone()));
                    }
                    Some(q)
                }
                None => None,
            }
        };
        w.idle.wake_all();
        match next {
            Some(Queued { marker: Some(m), .. }) => m.complete_all(),
            Some(Queued { work, marker: None }) => {
                (work.func)();
                // The freeze point between items (a no-op unless the
                // worker is freezable and a freeze is on).
                freezer::try_to_freeze();
                kport::local::cond_resched();
            }
            None => {
                if kthread::should_stop() {
                    return 0;
                }
                freezer::wait_event_freezable(&w.wq, "kthread_worker", || !w.state.lock().list.is_empty());
            }
        }
    }
}

impl KthreadWorker {
    /// Create a worker with its thread, named from format arguments (Linux
    /// `kthread_create_worker`).
    ///
    /// Context: may sleep. Return: the worker; errors as `kthread::Builder::create`.
    #[track_caller]
    pub fn create(name: fmt::Arguments<'_>) -> Result<KthreadWorker> {
        kport::might_sleep();
        Self::create_inner(name, None, KtwFlags::NONE)
    }

    /// Create a worker with `flags` (Linux `kthread_create_worker(flags,
    /// ...)`), e.g. [`KtwFlags::FREEZABLE`].
    ///
    /// Context: may sleep. Return: the worker; errors as `kthread::Builder::create`.
    #[track_caller]
    pub fn create_with_flags(flags: KtwFlags, name: fmt::Arguments<'_>) -> Result<KthreadWorker> {
        kport::might_sleep();
        Self::create_inner(name, None, flags)
    }

    /// Create a worker whose thread is bound to `cpu` (Linux
    /// `kthread_create_worker_on_cpu`).
    ///
    /// Context: may sleep. Return: the worker; `EINVAL` for a bad CPU.
    #[track_caller]
    pub fn create_on_cpu(cpu: usize, name: fmt::Arguments<'_>) -> Result<KthreadWorker> {
        kport::might_sleep();
        Self::create_on_cpu_with_flags(cpu, KtwFlags::NONE, name)
    }

    /// Create a worker with `flags` whose thread is bound to `cpu` (Linux
    /// `kthread_create_worker_on_cpu(cpu, flags, ...)`).
    ///
    /// Context: may sleep. Return: the worker; `EINVAL` for a bad CPU.
    #[track_caller]
    pub fn create_on_cpu_with_flags(cpu: usize, flags: KtwFlags, name: fmt::Arguments<'_>) -> Result<KthreadWorker> {
        kport::might_sleep();
        if cpu >= port().cpu_count() {
            return Err(Error::new(EINVAL));
        }
        Self::create_inner(name, Some(cpu), flags)
    }

    fn create_inner(name: fmt::Arguments<'_>, cpu: Option<usize>, flags: KtwFlags) -> Result<KthreadWorker> {
        let name = alloc::fmt::format(name);
        let inner = Arc::new(WorkerShared {
            state: SpinLock::ranked(
                "kthread_worker",
                crate::RANK_KTW_WORKER,
                WorkerLists {
                    list: VecDeque::new(),
                    current: None,
                    pending: alloc::vec::Vec::new(),
                    canceling: alloc::vec::Vec::new(),
                    delayed: alloc::vec::Vec::new(),
                    dying: false,
                },
            ),
            wq: WaitQueue::new(),
            idle: WaitQueue::new(),
            thread: spin::Once::new(),
            name: name.clone(),
            flags,
        });
        let w = inner.clone();
        let mut b = Builder::new(format_args!("{name}"), move || worker_fn(w));
        if let Some(cpu) = cpu {
            b = b.on_cpu(cpu);
        }
        let t = b.run()?;
        inner.thread.call_once(|| t);
        Ok(KthreadWorker(inner))
    }

    /// The worker's thread.
    pub fn thread(&self) -> &Kthread {
        self.0.thread.get().expect("worker without a thread")
    }

    /// The flags it was created with.
    pub fn flags(&self) -> KtwFlags {
        self.0.flags
    }

    /// Queue `work` (Linux `kthread_queue_work`): false if it is already
    /// pending, being cancelled, attached to another worker, or the worker
    /// is being destroyed (with a warning).
    ///
    /// Context: any. Return: true if queued.
    pub fn queue(&self, work: &KthreadWork) -> bool {
        if !self.0.claim(&work.0) {
            return false;
        }
        let mut st = self.0.state.lock();
        if st.dying {
            drop(st);
            kport::warn::warn(&format!("kthread work queued on worker {} being destroyed: refused", self.0.name));
            return false;
        }
        if contains(&st.pending, &work.0) || contains(&st.canceling, &work.0) {
            return false;
        }
        st.add_pending(&work.0);
        st.list.push_back(Queued { work: work.0.clone(), marker: None });
        drop(st);
        self.0.wake_thread();
        true
    }

    /// Queue `dwork` after `delay_ns` (Linux `kthread_queue_delayed_work`);
    /// false if it is already pending. A zero delay queues it at once.
    ///
    /// Context: any. Return: true if queued or armed.
    pub fn queue_delayed(&self, dwork: &KthreadDelayedWork, delay_ns: u64) -> bool {
        if !self.0.claim(&dwork.work.0) {
            return false;
        }
        let mut st = self.0.state.lock();
        if st.dying {
            drop(st);
            self.refuse_dying("delayed kthread work queued");
            return false;
        }
        if contains(&st.pending, &dwork.work.0) || contains(&st.canceling, &dwork.work.0) {
            return false;
        }
        st.add_pending(&dwork.work.0);
        self.start_delayed(st, dwork, delay_ns);
        true
    }

    /// Queue a pending delayed item now (zero delay) or arm its timer. The
    /// item is already on the pending list; the guard is released.
    fn start_delayed(
        &self,
        mut st: kport::sync::SpinLockGuard<'_, WorkerLists>,
        dwork: &KthreadDelayedWork,
        delay_ns: u64,
    ) {
        if delay_ns == 0 {
            st.list.push_back(Queued { work: dwork.work.0.clone(), marker: None });
            drop(st);
            self.0.wake_thread();
        } else {
            // On the delayed list before the timer can fire; the target is
            // a leaf lock, taken under the worker's.
            st.delayed.push((dwork.work.0.clone(), dwork.timer.clone()));
            *dwork.target.lock() = Some(Arc::downgrade(&self.0));
            drop(st);
            dwork.timer.arm(port().now_ns() + delay_ns, None);
        }
    }

    fn refuse_dying(&self, what: &str) {
        kport::warn::warn(&format!("{what} on worker {} being destroyed: refused", self.0.name));
    }

    /// Change the delay of `dwork` to `delay_ns` from now, queueing it if it
    /// was idle (Linux `kthread_mod_delayed_work`). Returns true if it was
    /// pending (and is now moved), false if it was idle (and is now queued).
    /// An item being cancelled is left alone (true).
    ///
    /// Context: any. Return: true if it was pending.
    pub fn mod_delayed(&self, dwork: &KthreadDelayedWork, delay_ns: u64) -> bool {
        if !self.0.claim(&dwork.work.0) {
            return false;
        }
        let mut st = self.0.state.lock();
        if contains(&st.canceling, &dwork.work.0) {
            return true;
        }
        let was_pending = contains(&st.pending, &dwork.work.0);
        if st.dying {
            drop(st);
            self.refuse_dying("kthread_mod_delayed_work");
            return was_pending;
        }
        if was_pending {
            remove_delayed(&mut st.delayed, &dwork.work.0);
            dwork.timer.cancel();
            st.list.retain(|q| q.marker.is_some() || !Arc::ptr_eq(&q.work, &dwork.work.0));
        } else {
            st.add_pending(&dwork.work.0);
        }
        self.start_delayed(st, dwork, delay_ns);
        was_pending
    }

    /// Wait for the instance of `work` that is queued or running now
    /// (Linux `kthread_flush_work`). Returns at once if it is idle.
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn flush_work(&self, work: &KthreadWork) {
        kport::might_sleep();
        let done = Arc::new(Completion::new());
        {
            let mut st = self.0.state.lock();
            let marker = Queued { work: work.0.clone(), marker: Some(done.clone()) };
            if let Some(i) = st.list.iter().rposition(|q| q.marker.is_none() && Arc::ptr_eq(&q.work, &work.0)) {
                st.list.insert(i + 1, marker);
            } else if st.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &work.0)) {
                st.list.push_front(marker);
            } else {
                return;
            }
        }
        self.0.wake_thread();
        done.wait("kthread_flush_work");
    }

    /// Wait until everything queued now has run (Linux
    /// `kthread_flush_worker`).
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn flush(&self) {
        kport::might_sleep();
        let done = Arc::new(Completion::new());
        let anchor = Arc::new(KthreadWorkInner {
            func: Box::new(|| {}),
            on: SpinLock::ranked("kthread_work", crate::RANK_KTW_ITEM, None),
        });
        self.0.state.lock().list.push_back(Queued { work: anchor, marker: Some(done.clone()) });
        self.0.wake_thread();
        done.wait("kthread_flush_worker");
    }

    fn cancel_inner(&self, work: &Arc<KthreadWorkInner>, timer: Option<&dyn PortTimer>) -> bool {
        let pending = {
            let mut st = self.0.state.lock();
            st.canceling.push(work.clone());
            let was = st.drop_pending(work);
            remove_delayed(&mut st.delayed, work);
            st.list.retain(|q| q.marker.is_some() || !Arc::ptr_eq(&q.work, work));
            was
        };
        if let Some(t) = timer {
            t.cancel_sync();
        }
        // Wait for a running instance to finish.
        self.0.idle.wait_event("kthread_cancel_work_sync", || {
            !self.0.state.lock().current.as_ref().is_some_and(|c| Arc::ptr_eq(c, work))
        });
        remove(&mut self.0.state.lock().canceling, work);
        pending
    }

    /// Cancel `work` and wait for a running instance (Linux
    /// `kthread_cancel_work_sync`); true if it was pending.
    ///
    /// Context: may sleep. Return: true if it was pending.
    #[track_caller]
    pub fn cancel_sync(&self, work: &KthreadWork) -> bool {
        kport::might_sleep();
        self.cancel_inner(&work.0, None)
    }

    /// Cancel `dwork` (timer or queue) and wait for a running instance
    /// (Linux `kthread_cancel_delayed_work_sync`); true if it was pending.
    ///
    /// Context: may sleep. Return: true if it was pending.
    #[track_caller]
    pub fn cancel_delayed_sync(&self, dwork: &KthreadDelayedWork) -> bool {
        kport::might_sleep();
        self.cancel_inner(&dwork.work.0, Some(&*dwork.timer))
    }

    /// Refuse further items, cancel the delayed items whose timer is still
    /// armed, run everything already queued, and stop the thread (Linux
    /// `kthread_destroy_worker`). Each cancelled item is reported in the
    /// return value and, with the worker's name, in a one-line warning (Linux
    /// warns that the delayed list is not empty); it may be queued again on
    /// another worker. A frozen worker runs what is queued after the thaw:
    /// destroy waits for it, as Linux's flush does.
    ///
    /// Context: may sleep. Return: how many delayed items were cancelled.
    #[track_caller]
    pub fn destroy(self) -> usize {
        kport::might_sleep();
        let armed = {
            let mut st = self.0.state.lock();
            st.dying = true;
            let armed = core::mem::take(&mut st.delayed);
            for (w, _) in &armed {
                st.drop_pending(w);
            }
            armed
        };
        // Off the delayed list, so a callback that runs now queues nothing;
        // wait for one that is running.
        for (_, timer) in &armed {
            timer.cancel_sync();
        }
        if !armed.is_empty() {
            kport::warn::warn(&format!(
                "kthread_destroy_worker {}: {} delayed item(s) with an armed timer cancelled",
                self.0.name,
                armed.len()
            ));
        }
        self.flush();
        let _ = self.thread().stop();
        armed.len()
    }
}

impl Drop for KthreadDelayedWork {
    /// A delayed item that goes away must not fire later, nor stay on its
    /// worker's delayed list.
    fn drop(&mut self) {
        let worker = self.target.lock().as_ref().and_then(|w| w.upgrade());
        if let Some(worker) = worker {
            let mut st = worker.state.lock();
            if remove_delayed(&mut st.delayed, &self.work.0) {
                st.drop_pending(&self.work.0);
            }
        }
        self.timer.cancel_sync();
    }
}
