//! A sleeping mutex (Linux `struct mutex`).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use super::WaitQueue;
use crate::might_sleep;

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
    ///
    /// Context: may sleep (reported by [`might_sleep`] even when the mutex
    /// is free).
    #[track_caller]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        might_sleep();
        if !self.try_acquire() {
            self.wq.wait_event("mutex", || self.try_acquire());
        }
        MutexGuard { m: self }
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Take the mutex only if it is free (Linux `mutex_trylock`).
    ///
    /// Context: any task context; never sleeps.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        // Lazily: a guard built for a failed attempt would unlock the
        // holder's mutex when dropped.
        self.try_acquire().then(|| MutexGuard { m: self })
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
