//! Synchronization on the port: an IRQ-safe spinlock, wait queues and
//! completions (Linux `spinlock_t`, `wait_queue_head_t`, `struct
//! completion`). They work on every port: the testkernel, the host and Redox.

use alloc::collections::VecDeque;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::port::{SleepState, TaskRef, port};

/// A spinlock that disables interrupts and preemption while held (Linux
/// `spin_lock_irqsave`). Never sleep while holding it.
pub struct SpinLock<T: ?Sized> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serializes access to `data`.
unsafe impl<T: ?Sized + Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the data.
unsafe impl<T: ?Sized + Send> Send for SpinLock<T> {}

/// Guard of a [`SpinLock`].
pub struct SpinLockGuard<'a, T: ?Sized> {
    lock: &'a SpinLock<T>,
    irqs_were_on: bool,
}

impl<T> SpinLock<T> {
    /// A new unlocked lock.
    pub const fn new(data: T) -> Self {
        SpinLock { locked: AtomicBool::new(false), data: UnsafeCell::new(data) }
    }

    /// Consume the lock, returning the data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// Take the lock.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let irqs_were_on = port().lock_enter();
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
        SpinLockGuard { lock: self, irqs_were_on }
    }

    /// Mutable access without locking (the `&mut` proves exclusivity).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: ?Sized> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        port().lock_exit(self.irqs_were_on);
    }
}

/// A spinlock for data only ever touched while an outer [`SpinLock`] is
/// held (so interrupts and preemption are already off): it is just the lock
/// word, without the interrupt and preemption bookkeeping. Taking it without
/// the outer lock held risks a deadlock with an interrupt handler on the
/// same CPU; the outer lock is named where each one is declared.
pub struct InnerLock<T: ?Sized> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serializes access to `data`.
unsafe impl<T: ?Sized + Send> Sync for InnerLock<T> {}
// SAFETY: moving the lock moves the data.
unsafe impl<T: ?Sized + Send> Send for InnerLock<T> {}

/// Guard of an [`InnerLock`].
pub struct InnerLockGuard<'a, T: ?Sized> {
    lock: &'a InnerLock<T>,
}

impl<T> InnerLock<T> {
    /// A new unlocked lock.
    pub const fn new(data: T) -> Self {
        InnerLock { locked: AtomicBool::new(false), data: UnsafeCell::new(data) }
    }
}

impl<T: ?Sized> InnerLock<T> {
    /// Take the lock (the outer lock must be held).
    pub fn lock(&self) -> InnerLockGuard<'_, T> {
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
        InnerLockGuard { lock: self }
    }
}

impl<T: ?Sized> Deref for InnerLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for InnerLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for InnerLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

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
        WaitQueue { waiters: SpinLock::new(VecDeque::new()) }
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
    pub fn wait_event(&self, wchan: &'static str, mut cond: impl FnMut() -> bool) {
        if cond() {
            return;
        }
        let p = port();
        let me = p.current();
        loop {
            self.enqueue_self(&me, SleepState::Uninterruptible, wchan);
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
    pub fn wait_event_interruptible(&self, wchan: &'static str, mut cond: impl FnMut() -> bool) {
        if cond() {
            return;
        }
        let p = port();
        let me = p.current();
        loop {
            self.enqueue_self(&me, SleepState::Interruptible, wchan);
            if cond() {
                break;
            }
            p.schedule();
        }
        self.dequeue_self(&me);
    }

    /// Sleep until `cond()` holds or `deadline_ns` passes; true if the
    /// condition held (Linux `wait_event_timeout`).
    pub fn wait_event_deadline(&self, wchan: &'static str, deadline_ns: u64, mut cond: impl FnMut() -> bool) -> bool {
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
    pub fn wake_one(&self) -> bool {
        let t = self.waiters.lock().pop_front();
        t.map(|t| t.wake()).is_some()
    }

    /// Wake every waiter; returns how many there were.
    pub fn wake_all(&self) -> usize {
        let all = core::mem::take(&mut *self.waiters.lock());
        let n = all.len();
        for t in all {
            t.wake();
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
    pub fn complete_all(&self) {
        self.done.store(usize::MAX / 2, Ordering::Release);
        self.wq.wake_all();
    }

    /// Has it been completed?
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire) > 0
    }

    /// Wait for completion (Linux `wait_for_completion`).
    pub fn wait(&self, wchan: &'static str) {
        self.wq.wait_event(wchan, || self.is_done());
    }

    /// Wait until completed or `deadline_ns`; true if completed.
    pub fn wait_deadline(&self, wchan: &'static str, deadline_ns: u64) -> bool {
        self.wq.wait_event_deadline(wchan, deadline_ns, || self.is_done())
    }

    /// Back to not completed (Linux `reinit_completion`).
    pub fn reset(&self) {
        self.done.store(0, Ordering::Release);
    }
}

/// A sleeping mutex (Linux `struct mutex`): contenders sleep rather than
/// spin. Must not be taken in atomic context.
pub struct Mutex<T: ?Sized> {
    locked: AtomicBool,
    wq: WaitQueue,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serializes access to `data`.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}
// SAFETY: moving the mutex moves the data.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}

/// Guard of a [`Mutex`].
pub struct MutexGuard<'a, T: ?Sized> {
    m: &'a Mutex<T>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub const fn new(data: T) -> Self {
        Mutex { locked: AtomicBool::new(false), wq: WaitQueue::new(), data: UnsafeCell::new(data) }
    }
}

impl<T: ?Sized> Mutex<T> {
    fn try_acquire(&self) -> bool {
        self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Take the mutex, sleeping while another context holds it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if !self.try_acquire() {
            self.wq.wait_event("mutex", || self.try_acquire());
        }
        MutexGuard { m: self }
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the mutex is held.
        unsafe { &*self.m.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.m.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.m.locked.store(false, Ordering::Release);
        self.m.wq.wake_one();
    }
}
