//! Redox's frame allocator under the subsystem's watermarks (`kport::mm`): the free-frame count
//! the watermarks read, the check at Redox's one allocation choke point
//! (`allocate_p2frame_complex`, called with IRQs off under a free-list lock: lock-free here, a
//! flag for kswapd and no wake-up), the counts after each allocation and free, and the sleeping
//! allocation of DMA memory through the slow path (kswapd, direct reclaim of the kernel page
//! cache, the out-of-memory report, `ENOMEM`).
//!
//! Every allocation Redox makes itself (page tables, user pages, grants, the kernel heap's
//! growth) goes through the choke point as an atomic one: it may use the reserve down to 3/8 of
//! the `min` watermark and then fails as Redox's allocator fails when empty (`None`). Redox's
//! own callers cannot sleep there, so none of them reclaims; the glue's DMA memory (the page
//! cache's pages, the block layer's buffers) is the sleeping kind.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kport::{
    mm::{self, Gfp},
    Result,
};

use crate::sync::CleanLockToken;

use super::token::lend_blocking;

/// Free frames, kept by the choke point (the free lists' own counts need every list's lock).
static FREE: AtomicUsize = AtomicUsize::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);

/// Start the watermarks from Redox's counts (boot CPU, before other CPUs allocate). The free
/// count is the frames on the free lists (`listed_free_frames`, patch 0007): Redox's
/// `free_frames()` is total minus used and also counts frames that never reach the lists (about
/// 5 MiB of a 512 MiB guest), which would leave the watermarks that much too low.
pub fn init() {
    let (total, free) = (
        crate::memory::total_frames(),
        crate::memory::listed_free_frames(),
    );
    FREE.store(free, Ordering::Relaxed);
    STARTED.store(true, Ordering::Release);
    mm::init(total as u64, free as u64);
}

/// The choke point's check before it takes `pages` frames (an atomic allocation).
pub fn may_take(pages: usize) -> bool {
    !STARTED.load(Ordering::Acquire)
        || mm::watermark_ok(
            FREE.load(Ordering::Relaxed) as u64,
            pages as u64,
            Gfp::Atomic,
        )
}

/// The choke point took `pages` frames.
pub fn taken(pages: usize) {
    if STARTED.load(Ordering::Acquire) {
        let free = FREE
            .fetch_sub(pages, Ordering::Relaxed)
            .saturating_sub(pages);
        mm::note_free(free as u64);
    }
}

/// `deallocate_p2frame` gave `pages` frames back.
pub fn returned(pages: usize) {
    if STARTED.load(Ordering::Acquire) {
        let free = FREE.fetch_add(pages, Ordering::Relaxed) + pages;
        mm::note_free(free as u64);
    }
}

/// May a sleeping allocation of `pages` frames go ahead at `gfp`'s watermark? (The choke point
/// still applies the atomic floor: the two checks race only towards the reserve.)
pub fn allowed(pages: usize, gfp: Gfp) -> bool {
    !STARTED.load(Ordering::Acquire)
        || mm::watermark_ok(FREE.load(Ordering::Relaxed) as u64, pages as u64, gfp)
}

/// `sys:vmstat`: Linux's `/proc/vmstat` lines (`drivers::vmscan::vmstat`). Reading it takes the
/// page caches' sleeping locks, so the caller's token is lent for blocking.
pub fn sys_vmstat(token: &mut CleanLockToken) -> Result<Vec<u8>> {
    Ok(lend_blocking(token, drivers::vmscan::vmstat).into_bytes())
}

/// `sys:meminfo`: Linux's `/proc/meminfo` totals (`drivers::vmscan::meminfo`).
pub fn sys_meminfo(token: &mut CleanLockToken) -> Result<Vec<u8>> {
    Ok(lend_blocking(token, drivers::vmscan::meminfo).into_bytes())
}
