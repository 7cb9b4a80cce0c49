//! Data protected by another object's lock (Rust-for-Linux's `LockedBy`).
//!
//! A pool workqueue's counters are protected by its pool's lock, a worker's
//! scheduled list by the lock of the pool it serves. Writing that in a
//! comment leaves it to the reader; a [`LockedBy`] makes it checked: the
//! data is reachable only with a [`Held`] proof taken from a guard of the
//! owner lock, and the cell checks that the proof is for *its* owner (a
//! proof for another pool's lock is refused with a panic naming both).
//! The cell also refuses a second borrow while one is live, so two
//! mutable references to the same data cannot exist.
//!
//! An owner may change (a rescuer serves several pools in turn): the cell
//! is [`LockedBy::detach`]ed under the old owner's lock and
//! [`LockedBy::attach`]ed under the new one's.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use super::spin::{GuardPolicy, Held, SpinLock};

/// `T`, protected by the lock of another object.
pub struct LockedBy<T: ?Sized> {
    /// Address of the owner lock (null: detached).
    owner: AtomicPtr<u8>,
    borrowed: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: every access goes through a proof that the owner lock is held
// (which serializes contexts) and the `borrowed` flag (which serializes
// borrows within the holder).
unsafe impl<T: ?Sized + Send> Sync for LockedBy<T> {}
// SAFETY: moving the cell moves the data.
unsafe impl<T: ?Sized + Send> Send for LockedBy<T> {}

impl<T> LockedBy<T> {
    /// `data`, protected by `owner`'s lock.
    pub fn new<U: ?Sized, G: GuardPolicy>(owner: &SpinLock<U, G>, data: T) -> Self {
        LockedBy {
            owner: AtomicPtr::new(owner.addr() as *mut u8),
            borrowed: AtomicBool::new(false),
            data: UnsafeCell::new(data),
        }
    }

    /// `data` with no owner yet: unreachable until [`LockedBy::attach`].
    pub const fn detached(data: T) -> Self {
        LockedBy {
            owner: AtomicPtr::new(core::ptr::null_mut()),
            borrowed: AtomicBool::new(false),
            data: UnsafeCell::new(data),
        }
    }
}

impl<T: ?Sized> LockedBy<T> {
    #[track_caller]
    fn check_owner(&self, held: &Held<'_>) {
        let owner = self.owner.load(Ordering::Acquire) as *const u8;
        if owner != held.lock_addr() {
            panic!(
                "LockedBy at {:p}: accessed under the lock at {:p}, but its owner is {:p}",
                self,
                held.lock_addr(),
                owner
            );
        }
    }

    /// Borrow the data, proving the owner lock is held. Panics if `held`
    /// is for another lock or the data is already borrowed.
    ///
    /// Context: under the owner lock.
    #[track_caller]
    pub fn borrow_mut<'h>(&'h self, held: Held<'h>) -> LockedRef<'h, T> {
        self.check_owner(&held);
        // Only the owner lock's holder touches the flag, so a load and a
        // store suffice (the lock orders them against other holders): a
        // locked exchange here was one of the per-item atomics of a work
        // item's queue and run.
        if self.borrowed.load(Ordering::Relaxed) {
            panic!("LockedBy at {:p}: borrowed twice", self);
        }
        self.borrowed.store(true, Ordering::Relaxed);
        LockedRef { cell: self }
    }

    /// Give the detached cell an owner. Panics if it has one.
    ///
    /// Context: under the new owner's lock.
    #[track_caller]
    pub fn attach(&self, held: Held<'_>) {
        if self
            .owner
            .compare_exchange(core::ptr::null_mut(), held.lock_addr() as *mut u8, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            panic!("LockedBy at {:p}: attached while it has an owner", self);
        }
    }

    /// Take the cell from its owner. Panics if `held` is not for the owner
    /// or the data is borrowed.
    ///
    /// Context: under the owner lock.
    #[track_caller]
    pub fn detach(&self, held: Held<'_>) {
        self.check_owner(&held);
        if self.borrowed.load(Ordering::Acquire) {
            panic!("LockedBy at {:p}: detached while borrowed", self);
        }
        self.owner.store(core::ptr::null_mut(), Ordering::Release);
    }

    /// Mutable access without the owner (the `&mut` proves exclusivity).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

/// A borrow of a [`LockedBy`]'s data; the owner lock stays held while it
/// lives.
pub struct LockedRef<'a, T: ?Sized> {
    cell: &'a LockedBy<T>,
}

impl<T: ?Sized> Deref for LockedRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the owner lock is held (checked at borrow) and this is the
        // cell's only borrow (the flag).
        unsafe { &*self.cell.data.get() }
    }
}

impl<T: ?Sized> DerefMut for LockedRef<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes it exclusive.
        unsafe { &mut *self.cell.data.get() }
    }
}

impl<T: ?Sized> Drop for LockedRef<'_, T> {
    fn drop(&mut self) {
        self.cell.borrowed.store(false, Ordering::Relaxed);
    }
}
