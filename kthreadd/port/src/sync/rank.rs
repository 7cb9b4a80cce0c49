//! Lock ranks: the lock order, checked in debug builds.
//!
//! A lock made with [`super::SpinLock::ranked`] has a rank from 1 to 31. A
//! context may take it only while every lock it holds has a *lower* rank:
//! the ranks of the locks held at any moment strictly increase. Two locks of
//! the same rank (two pools' locks) are never held together, and a lock is
//! never taken under one that ranks above it. Each crate writes its order
//! down in one place (its crate documentation) and gives its locks ranks
//! from its band:
//!
//! | ranks | crate |
//! |---|---|
//! | 1–9 | reserved for the host kernel's callers |
//! | 10–15 | `kthreadd` |
//! | 16–19 | bottom halves |
//! | 20–27 | `workqueue` |
//! | 28–31 | leaves of every crate (registries, wait-queue lists) |
//!
//! In debug builds each taking of a ranked lock checks the calling
//! context's held ranks, which the port keeps ([`crate::Port::lock_ranks`]:
//! a per-thread word on the host, none elsewhere), and panics naming both
//! locks on a violation. Release builds compile the check out.

#[cfg(debug_assertions)]
use core::panic::Location;

/// Rank of a wait queue's list lock (a leaf: wake-ups run after it is
/// released).
pub const WAITQUEUE: u8 = 31;
/// Rank of the [`crate::might_sleep`] report log (a leaf taken by a report
/// made under any lock).
pub const REPORTS: u8 = 30;
/// Rank of the [`crate::warn`] ring (a leaf taken by a warning made under
/// any lock; never held together with the report log).
pub const WARNINGS: u8 = 30;
#[cfg(debug_assertions)]
use core::sync::atomic::Ordering;

/// Record that the caller takes a lock of rank `rank`; panic if it holds
/// one of the same or a higher rank.
#[cfg(debug_assertions)]
#[track_caller]
pub(super) fn acquire(rank: u8, name: &str, site: &'static Location<'static>) {
    if rank == 0 || !crate::installed() {
        return;
    }
    let Some(word) = crate::port().lock_ranks() else { return };
    let held = word.load(Ordering::Relaxed);
    if held >> rank != 0 {
        let top = u32::BITS - 1 - held.leading_zeros();
        panic!(
            "lock order violated: taking {name} (rank {rank}) at {}:{} while holding a lock of rank {top} (held ranks {held:#x})",
            site.file(),
            site.line()
        );
    }
    word.store(held | 1 << rank, Ordering::Relaxed);
}

/// Record that the caller released a lock of rank `rank`.
#[cfg(debug_assertions)]
pub(super) fn release(rank: u8) {
    if rank == 0 || !crate::installed() {
        return;
    }
    if let Some(word) = crate::port().lock_ranks() {
        word.fetch_and(!(1 << rank), Ordering::Relaxed);
    }
}
