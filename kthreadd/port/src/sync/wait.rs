//! Wait queues and completions (Linux `wait_queue_head_t`, `wait_event`,
//! `struct completion`).

use alloc::collections::VecDeque;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::SpinLock;
use crate::{SleepState, TaskRef, might_sleep, port};

/// A queue of sleeping contexts (Linux `wait_queue_head_t`).
pub struct WaitQueue {
    waiters: SpinLock<VecDeque<TaskRef>>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        WaitQueue { waiters: SpinLock::ranked("wait queue", super::rank::WAITQUEUE, VecDeque::new()) }
    }

    fn enqueue_self(&self, me: &TaskRef, state: SleepState, wchan: &'static str) {
        let mut w = self.waiters.lock();
        if !w.iter().any(|t| t.id() == me.id()) {
            w.push_back(me.clone());
        }
        port().set_current_state(state, wchan);
    }

    fn dequeue_self(&self, me: &TaskRef) {
        port().set_current_running();
        self.waiters.lock().retain(|t| t.id() != me.id());
    }

    /// Sleep until `cond()` holds (Linux `wait_event`). The condition is
    /// evaluated after the caller is queued and marked sleeping, so a waker
    /// that changes the condition and then calls a wake function is never
    /// missed.
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn wait_event(&self, wchan: &'static str, cond: impl FnMut() -> bool) {
        might_sleep();
        self.wait_in(SleepState::Uninterruptible, wchan, cond);
    }

    /// The loop of the waits without a deadline, sleeping in `state`.
    fn wait_in(&self, state: SleepState, wchan: &'static str, mut cond: impl FnMut() -> bool) {
        if cond() {
            return;
        }
        let p = port();
        let me = p.current();
        loop {
            self.enqueue_self(&me, state, wchan);
            if cond() {
                break;
            }
            p.schedule();
        }
        self.dequeue_self(&me);
    }

    /// Like [`WaitQueue::wait_event`], sleeping interruptibly ("S" rather
    /// than "D" in listings; the `wait_event_interruptible(wq, cond ||
    /// kthread_should_stop())` pattern puts the stop test in `cond`).
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn wait_event_interruptible(&self, wchan: &'static str, cond: impl FnMut() -> bool) {
        might_sleep();
        self.wait_in(SleepState::Interruptible, wchan, cond);
    }

    /// Like [`WaitQueue::wait_event`], sleeping idle ("I" rather than "D" in
    /// listings, and not a hung task however long it waits): Linux
    /// `wait_event_idle`, for a thread that waits for work.
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn wait_event_idle(&self, wchan: &'static str, cond: impl FnMut() -> bool) {
        might_sleep();
        self.wait_in(SleepState::Idle, wchan, cond);
    }

    /// Sleep until `cond()` holds or `deadline_ns` passes; true if the
    /// condition held (Linux `wait_event_timeout`).
    ///
    /// Context: may sleep. Return: whether `cond()` held.
    #[track_caller]
    pub fn wait_event_deadline(&self, wchan: &'static str, deadline_ns: u64, mut cond: impl FnMut() -> bool) -> bool {
        might_sleep();
        if cond() {
            return true;
        }
        let p = port();
        let me = p.current();
        let ok = loop {
            self.enqueue_self(&me, SleepState::Interruptible, wchan);
            if cond() {
                break true;
            }
            if p.schedule_until(deadline_ns) {
                break cond();
            }
        };
        self.dequeue_self(&me);
        ok
    }

    /// Wake the longest waiter; true if there was one.
    ///
    /// Context: any.
    pub fn wake_one(&self) -> bool {
        let t = self.waiters.lock().pop_front();
        t.map(|t| t.wake()).is_some()
    }

    /// Wake every waiter; returns how many there were.
    ///
    /// Context: any.
    pub fn wake_all(&self) -> usize {
        self.wake_all_with(|t| t.wake())
    }

    /// [`WaitQueue::wake_all`] from a caller that sleeps right after (Linux
    /// `wake_up_all_sync`): each waiter is woken with
    /// [`crate::PortTask::wake_sync`].
    ///
    /// Context: any.
    pub fn wake_all_sync(&self) -> usize {
        self.wake_all_with(|t| t.wake_sync())
    }

    /// Take every waiter off and wake each with `wake`; how many there were.
    fn wake_all_with(&self, wake: impl Fn(&crate::TaskRef) -> bool) -> usize {
        let all = core::mem::take(&mut *self.waiters.lock());
        let n = all.len();
        for t in all {
            wake(&t);
        }
        n
    }

    /// Are there waiters?
    pub fn has_waiters(&self) -> bool {
        !self.waiters.lock().is_empty()
    }
}

/// A one-way event others can wait for (Linux `struct completion`).
pub struct Completion {
    done: AtomicUsize,
    wq: WaitQueue,
}

impl Default for Completion {
    fn default() -> Self {
        Self::new()
    }
}

impl Completion {
    /// Not yet completed.
    pub const fn new() -> Self {
        Completion { done: AtomicUsize::new(0), wq: WaitQueue::new() }
    }

    /// Complete it for every waiter, now and later (Linux `complete_all`).
    ///
    /// Context: any.
    pub fn complete_all(&self) {
        self.done.store(usize::MAX / 2, Ordering::Release);
        self.wq.wake_all();
    }

    /// Has it been completed?
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire) > 0
    }

    /// Wait for completion (Linux `wait_for_completion`).
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn wait(&self, wchan: &'static str) {
        self.wq.wait_event(wchan, || self.is_done());
    }

    /// Wait until completed or `deadline_ns`.
    ///
    /// Context: may sleep. Return: true if completed.
    #[track_caller]
    pub fn wait_deadline(&self, wchan: &'static str, deadline_ns: u64) -> bool {
        self.wq.wait_event_deadline(wchan, deadline_ns, || self.is_done())
    }

    /// Back to not completed (Linux `reinit_completion`).
    pub fn reset(&self) {
        self.done.store(0, Ordering::Release);
    }
}
