//! Memory pressure: the free-page watermarks a host kernel's frame
//! allocator checks, the lock-free kswapd wake-up from inside it, the
//! sleeping allocation's slow path (direct reclaim, waiting for kswapd,
//! the out-of-memory report) and the counters of `/proc/vmstat` that
//! belong to the allocator. Linux: `mm/page_alloc.c`
//! (`calculate_min_free_kbytes`, `__setup_per_zone_wmarks`,
//! `__zone_watermark_ok`, `__alloc_pages_slowpath`), `mm/oom_kill.c`.
//!
//! # How a port uses it
//! * At boot, once its allocator knows the memory: [`init`] with the total
//!   and free page counts. Until then every check passes.
//! * In its allocator, under its own lock: [`watermark_ok`] before taking
//!   pages (with the caller's [`Gfp`]), then, after the lock is dropped or
//!   still under it, [`note_free`] with the free count. Both are lock-free:
//!   falling below the low watermark only sets a flag.
//! * From its timer tick: [`tick`], which wakes kswapd when the flag is set
//!   (a wake-up from interrupt context, never from inside the allocator).
//! * Where an allocation may sleep: [`alloc_slowpath`] around the
//!   allocation, which wakes kswapd, reclaims directly, waits for
//!   writeback, retries ([`MAX_RECLAIM_RETRIES`]) and in the end reports
//!   out of memory and returns `ENOMEM`.
//!
//! The reclaim itself (kswapd, the page cache's LRU, shrinkers) lives
//! above the port (`drivers::vmscan`) and registers with
//! [`set_reclaimer`].
//!
//! # Watermarks (pages)
//! `min_free_kbytes` defaults to `int_sqrt(memory_kbytes * 16)` clamped to
//! `[128, 262144]`; `min` is that in pages; the gap `d = max(min / 4,
//! total * watermark_scale_factor / 10000)` gives `low = min + d` and
//! `high = low + d`. Both settings can be changed ([`set_min_free_kbytes`],
//! [`set_watermark_scale_factor`]), which recomputes the three. One zone:
//! the port's allocator is one pool of frames.
//!
//! # Who may go below `min`
//! [`Gfp::Kernel`] (may sleep) is first served down to `low`; when that
//! fails the slow path wakes kswapd at once (the caller may sleep, so it
//! may wake a thread) and tries again down to `min` ([`Gfp::KernelMin`]),
//! then reclaims directly. [`Gfp::Atomic`] (cannot sleep: interrupt
//! context, under a spinlock, the kernel heap's growth) may use part of the
//! reserve, down to `3/8 min`, as Linux's `GFP_ATOMIC` (`ALLOC_HIGH` halves
//! `min`, `ALLOC_HARDER` takes a quarter more). [`Gfp::NoWatermark`] (the
//! allocator's own boot use) is never refused while pages exist.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::sync::{SpinLock, WaitQueue};
use crate::{ENOMEM, Error, Result, port};

/// Bytes in a page.
pub const PAGE_SIZE: u64 = 4096;
/// Linux's default `watermark_scale_factor`: 10 (0.1 % of memory).
pub const DEFAULT_WATERMARK_SCALE_FACTOR: u64 = 10;
/// Largest `watermark_scale_factor` Linux accepts (30 % of memory).
pub const MAX_WATERMARK_SCALE_FACTOR: u64 = 3000;
/// Bounds of the computed `min_free_kbytes`.
pub const MIN_FREE_KBYTES_RANGE: (u64, u64) = (128, 262_144);
/// How often the slow path reclaims and retries before it gives up
/// (Linux `MAX_RECLAIM_RETRIES`).
pub const MAX_RECLAIM_RETRIES: u32 = 16;
/// How long the slow path waits for kswapd or writeback between tries
/// (Linux throttles reclaim for up to `HZ/10`).
pub const RECLAIM_WAIT_NS: u64 = 100_000_000;

/// How an allocation may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gfp {
    /// The caller may sleep, first attempt: served while free pages stay
    /// at or above `low` (Linux's fast path, `ALLOC_WMARK_LOW`); else the
    /// slow path wakes kswapd and retries with [`Gfp::KernelMin`].
    Kernel,
    /// The caller may sleep and kswapd was woken: served down to `min`
    /// (`ALLOC_WMARK_MIN`); below it the slow path reclaims directly.
    KernelMin,
    /// The caller cannot sleep: may go down to `3/8 min`.
    Atomic,
    /// No watermark at all (boot, the allocator's own needs).
    NoWatermark,
}

/// The three watermarks, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watermarks {
    /// Below it only atomic allocations are served; sleeping ones reclaim.
    pub min: u64,
    /// Below it kswapd is woken.
    pub low: u64,
    /// kswapd reclaims until free pages are above it.
    pub high: u64,
}

/// The allocator-side counters (part of `/proc/vmstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MmStats {
    /// Free pages now.
    pub free: u64,
    /// Pages the allocator manages.
    pub total: u64,
    /// Times an allocation left free pages below `low` (the flag was set).
    pub low_hits: u64,
    /// Times kswapd was woken (from the tick or the slow path).
    pub kswapd_wakeups: u64,
    /// Sleeping allocations that entered direct reclaim (Linux
    /// `allocstall`).
    pub allocstall: u64,
    /// Atomic allocations served from the reserve below `min`.
    pub atomic_reserve: u64,
    /// Allocations refused by the watermarks.
    pub refused: u64,
    /// Out-of-memory reports (Linux `oom_kill`, though nothing is killed).
    pub oom: u64,
}

static INITED: AtomicBool = AtomicBool::new(false);
static TOTAL: AtomicU64 = AtomicU64::new(0);
static FREE: AtomicU64 = AtomicU64::new(0);
static MIN_FREE_KBYTES: AtomicU64 = AtomicU64::new(0);
static SCALE_FACTOR: AtomicU64 = AtomicU64::new(DEFAULT_WATERMARK_SCALE_FACTOR);
static WMARK_MIN: AtomicU64 = AtomicU64::new(0);
static WMARK_LOW: AtomicU64 = AtomicU64::new(0);
static WMARK_HIGH: AtomicU64 = AtomicU64::new(0);
static KSWAPD_WANTED: AtomicBool = AtomicBool::new(false);

static LOW_HITS: AtomicU64 = AtomicU64::new(0);
static KSWAPD_WAKEUPS: AtomicU64 = AtomicU64::new(0);
static ALLOCSTALL: AtomicU64 = AtomicU64::new(0);
static ATOMIC_RESERVE: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static OOM: AtomicU64 = AtomicU64::new(0);

/// The integer square root (Linux `int_sqrt`).
pub fn int_sqrt(x: u64) -> u64 {
    if x < 2 {
        return x;
    }
    // Newton's method from a power of two above the root.
    let mut r = 1u64 << (64 - x.leading_zeros()).div_ceil(2);
    loop {
        let next = (r + x / r) / 2;
        if next >= r {
            return r;
        }
        r = next;
    }
}

/// Linux's default `min_free_kbytes` for `kbytes` of memory.
pub fn default_min_free_kbytes(kbytes: u64) -> u64 {
    int_sqrt(kbytes * 16).clamp(MIN_FREE_KBYTES_RANGE.0, MIN_FREE_KBYTES_RANGE.1)
}

/// The watermarks for `total` pages with `min_free_kbytes` and
/// `watermark_scale_factor`.
pub fn compute_watermarks(total: u64, min_free_kbytes: u64, scale_factor: u64) -> Watermarks {
    let min = (min_free_kbytes * 1024 / PAGE_SIZE).min(total);
    let gap = (min / 4).max(total * scale_factor / 10_000);
    Watermarks { min, low: min + gap, high: min + 2 * gap }
}

fn recompute() {
    let w = compute_watermarks(
        TOTAL.load(Ordering::Relaxed),
        MIN_FREE_KBYTES.load(Ordering::Relaxed),
        SCALE_FACTOR.load(Ordering::Relaxed),
    );
    WMARK_MIN.store(w.min, Ordering::Relaxed);
    WMARK_LOW.store(w.low, Ordering::Relaxed);
    WMARK_HIGH.store(w.high, Ordering::Relaxed);
}

/// Start the watermarks: the allocator manages `total` pages, `free` of
/// them free now. Called once by the port when its allocator is up.
pub fn init(total: u64, free: u64) {
    TOTAL.store(total, Ordering::Relaxed);
    FREE.store(free, Ordering::Relaxed);
    MIN_FREE_KBYTES.store(default_min_free_kbytes(total * PAGE_SIZE / 1024), Ordering::Relaxed);
    recompute();
    INITED.store(true, Ordering::Release);
    crate::sysctl::register(&SYSCTLS);
    crate::fault::register_sysctls();
}

fn sysctl_get(key: usize) -> i64 {
    (if key == 0 { min_free_kbytes() } else { watermark_scale_factor() }) as i64
}

fn sysctl_set(key: usize, v: i64) -> Result<()> {
    let v = u64::try_from(v).map_err(|_| Error::new(crate::EINVAL))?;
    if key == 0 { set_min_free_kbytes(v) } else { set_watermark_scale_factor(v) }
}

/// `vm.min_free_kbytes` and `vm.watermark_scale_factor` in the [`crate::sysctl`] table.
static SYSCTLS: [crate::sysctl::Sysctl; 2] = [
    crate::sysctl::Sysctl {
        name: "vm.min_free_kbytes",
        kind: crate::sysctl::Kind::Fn { key: 0, get: sysctl_get, set: sysctl_set },
    },
    crate::sysctl::Sysctl {
        name: "vm.watermark_scale_factor",
        kind: crate::sysctl::Kind::Fn { key: 1, get: sysctl_get, set: sysctl_set },
    },
];

/// Has the port started the watermarks?
pub fn active() -> bool {
    INITED.load(Ordering::Acquire)
}

/// Set `min_free_kbytes` (Linux `vm.min_free_kbytes`); the watermarks
/// follow.
///
/// Return: `EINVAL` for 0 or for more than the memory.
pub fn set_min_free_kbytes(kbytes: u64) -> Result<()> {
    let total_kb = TOTAL.load(Ordering::Relaxed) * PAGE_SIZE / 1024;
    if kbytes == 0 || (active() && kbytes >= total_kb) {
        return Err(Error::new(crate::EINVAL));
    }
    MIN_FREE_KBYTES.store(kbytes, Ordering::Relaxed);
    recompute();
    Ok(())
}

/// `min_free_kbytes` now.
pub fn min_free_kbytes() -> u64 {
    MIN_FREE_KBYTES.load(Ordering::Relaxed)
}

/// Set `watermark_scale_factor` (Linux `vm.watermark_scale_factor`,
/// 1..=3000, in units of 0.01 % of memory).
///
/// Return: `EINVAL` outside 1..=3000.
pub fn set_watermark_scale_factor(factor: u64) -> Result<()> {
    if !(1..=MAX_WATERMARK_SCALE_FACTOR).contains(&factor) {
        return Err(Error::new(crate::EINVAL));
    }
    SCALE_FACTOR.store(factor, Ordering::Relaxed);
    recompute();
    Ok(())
}

/// `watermark_scale_factor` now.
pub fn watermark_scale_factor() -> u64 {
    SCALE_FACTOR.load(Ordering::Relaxed)
}

/// The watermarks now.
pub fn watermarks() -> Watermarks {
    Watermarks {
        min: WMARK_MIN.load(Ordering::Relaxed),
        low: WMARK_LOW.load(Ordering::Relaxed),
        high: WMARK_HIGH.load(Ordering::Relaxed),
    }
}

/// Free pages as the allocator last reported them.
pub fn free_pages() -> u64 {
    FREE.load(Ordering::Relaxed)
}

/// Pages the allocator manages.
pub fn total_pages() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

/// May `pages` be taken with `free` pages free, for `gfp`? Called by the
/// allocator under its lock; lock-free. A refusal is counted.
///
/// Context: any.
pub fn watermark_ok(free: u64, pages: u64, gfp: Gfp) -> bool {
    if free < pages {
        return false;
    }
    if !active() || gfp == Gfp::NoWatermark {
        return true;
    }
    let min = WMARK_MIN.load(Ordering::Relaxed);
    let after = free - pages;
    let ok = match gfp {
        Gfp::Kernel => after >= WMARK_LOW.load(Ordering::Relaxed),
        Gfp::KernelMin => after >= min,
        Gfp::Atomic => {
            if after < min {
                ATOMIC_RESERVE.fetch_add(1, Ordering::Relaxed);
            }
            after >= min / 2 - min / 8
        }
        Gfp::NoWatermark => true,
    };
    if !ok {
        if gfp != Gfp::Kernel {
            REFUSED.fetch_add(1, Ordering::Relaxed);
        }
        KSWAPD_WANTED.store(true, Ordering::Release);
    }
    ok
}

/// The allocator has `free` pages free now (after an allocation or a
/// free). Below `low`, kswapd is wanted: a flag that the next [`tick`] (or
/// a sleeping allocation) turns into a wake-up. Lock-free.
///
/// Context: any (inside the allocator, IRQs off, under its lock).
pub fn note_free(free: u64) {
    FREE.store(free, Ordering::Relaxed);
    if active() && free < WMARK_LOW.load(Ordering::Relaxed) && !KSWAPD_WANTED.swap(true, Ordering::AcqRel) {
        LOW_HITS.fetch_add(1, Ordering::Relaxed);
    }
}

/// From the port's timer tick: wake kswapd if an allocation asked for it.
///
/// Context: any (a hard interrupt).
pub fn tick() {
    if KSWAPD_WANTED.load(Ordering::Relaxed) && KSWAPD_WANTED.swap(false, Ordering::AcqRel) {
        wake_kswapd();
    }
}

/// Wake kswapd now (if one is registered and asleep).
///
/// Context: any that may wake a thread.
pub fn wake_kswapd() {
    if let Some(r) = reclaimer()
        && r.wake_kswapd()
    {
        KSWAPD_WAKEUPS.fetch_add(1, Ordering::Relaxed);
    }
}

/// What reclaims memory: kswapd and the LRU above the port
/// (`drivers::vmscan`).
pub trait Reclaimer: Send + Sync {
    /// Wake kswapd; true if it was asleep.
    ///
    /// Context: any that may wake a thread (hard IRQ included).
    fn wake_kswapd(&self) -> bool;
    /// Reclaim up to `pages` pages now, in the caller (direct reclaim);
    /// returns the pages freed. Starts writeback of dirty pages it meets.
    ///
    /// Context: may sleep.
    fn direct_reclaim(&self, pages: u64) -> u64;
    /// Pages under writeback or otherwise on their way to being freeable:
    /// a reason to wait and retry rather than give up.
    fn pages_in_flight(&self) -> u64;
    /// Wait until reclaim made progress (kswapd ran, writeback completed)
    /// or `deadline_ns` passed.
    ///
    /// Context: may sleep.
    fn wait_progress(&self, deadline_ns: u64);
}

static RECLAIMER: spin::Once<&'static dyn Reclaimer> = spin::Once::new();

/// Register the reclaimer (once; later calls are ignored).
pub fn set_reclaimer(r: &'static dyn Reclaimer) {
    RECLAIMER.call_once(|| r);
}

fn reclaimer() -> Option<&'static dyn Reclaimer> {
    RECLAIMER.get().copied()
}

/// The slow path of an allocation that may sleep (Linux
/// `__alloc_pages_slowpath`): `try_alloc(gfp)` is the allocator's attempt
/// at a watermark. Tries at `low` ([`Gfp::Kernel`]); then wakes kswapd and
/// tries at `min` ([`Gfp::KernelMin`]); then reclaims directly and tries
/// again, waiting for kswapd or writeback when pages are in flight, up to
/// [`MAX_RECLAIM_RETRIES`] rounds; then prints the out-of-memory report
/// naming the largest users and fails.
///
/// Return: `ENOMEM` when nothing more can be reclaimed.
///
/// Context: may sleep.
#[track_caller]
pub fn alloc_slowpath<T>(pages: u64, mut try_alloc: impl FnMut(Gfp) -> Option<T>) -> Result<T> {
    crate::might_sleep();
    // Injected failure (`fail_page_alloc` with `ignore_gfp_wait` 0): no
    // attempt, no reclaim, as Linux's page allocator returns NULL at once.
    if crate::fault::FAIL_PAGE_ALLOC_IGNORE_GFP_WAIT.get() == 0
        && crate::fault::FAIL_PAGE_ALLOC.should_fail(pages, core::panic::Location::caller())
    {
        return Err(Error::new(ENOMEM));
    }
    if let Some(x) = try_alloc(Gfp::Kernel) {
        return Ok(x);
    }
    wake_kswapd();
    if let Some(x) = try_alloc(Gfp::KernelMin) {
        return Ok(x);
    }
    let Some(r) = reclaimer() else {
        oom_report(pages);
        return Err(Error::new(ENOMEM));
    };
    ALLOCSTALL.fetch_add(1, Ordering::Relaxed);
    for _ in 0..MAX_RECLAIM_RETRIES {
        // What this allocation needs (the reclaimer adds its batch, Linux's
        // SWAP_CLUSTER_MAX): balancing to `high` is kswapd's work.
        let got = r.direct_reclaim(pages);
        if let Some(x) = try_alloc(Gfp::KernelMin) {
            return Ok(x);
        }
        if got == 0 && r.pages_in_flight() == 0 {
            break;
        }
        wake_kswapd();
        r.wait_progress(port().now_ns() + RECLAIM_WAIT_NS);
        if let Some(x) = try_alloc(Gfp::KernelMin) {
            return Ok(x);
        }
    }
    oom_report(pages);
    Err(Error::new(ENOMEM))
}

/// A memory user the out-of-memory report names: its name and a function
/// giving the pages it holds.
type UserFn = Box<dyn Fn() -> u64 + Send + Sync>;

static USERS: SpinLock<Vec<(usize, String, UserFn)>> = SpinLock::new(Vec::new());
static NEXT_USER: AtomicUsize = AtomicUsize::new(1);
static LAST_REPORT: SpinLock<Option<String>> = SpinLock::new(None);
static PROGRESS: WaitQueue = WaitQueue::new();

/// Name a memory user for the out-of-memory report (the page cache of a
/// device, the kernel heap, a test's hog); `pages` must be cheap and must
/// not allocate or sleep. Returns the id to remove it with.
pub fn register_user(name: &str, pages: impl Fn() -> u64 + Send + Sync + 'static) -> usize {
    let id = NEXT_USER.fetch_add(1, Ordering::Relaxed);
    let entry = (id, String::from(name), Box::new(pages) as UserFn);
    USERS.lock().push(entry);
    id
}

/// Remove a user registered with [`register_user`].
pub fn unregister_user(id: usize) {
    let gone = {
        let mut u = USERS.lock();
        u.iter().position(|e| e.0 == id).map(|i| u.swap_remove(i))
    };
    drop(gone);
}

/// The largest users now, largest first: `(name, pages)`.
pub fn largest_users(n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = USERS.lock().iter().map(|(_, name, f)| (name.clone(), f())).collect();
    v.sort_by_key(|u| core::cmp::Reverse(u.1));
    v.truncate(n);
    v
}

/// Print (and keep, for [`last_oom_report`]) the out-of-memory report of
/// an allocation of `pages` pages that failed.
pub fn oom_report(pages: u64) {
    OOM.fetch_add(1, Ordering::Relaxed);
    let w = watermarks();
    let users = largest_users(5);
    let mut text = format!(
        "out of memory: a {}-page allocation failed; free {} pages, min {} low {} high {}; largest users:",
        pages,
        free_pages(),
        w.min,
        w.low,
        w.high
    );
    for (name, p) in &users {
        text.push_str(&format!(" {name} {p} pages ({} KiB);", p * PAGE_SIZE / 1024));
    }
    if users.is_empty() {
        text.push_str(" none registered");
    }
    port().console_line(&text);
    *LAST_REPORT.lock() = Some(text);
}

/// The last out-of-memory report, if any.
pub fn last_oom_report() -> Option<String> {
    LAST_REPORT.lock().clone()
}

/// Tell sleepers in [`wait_for_progress`] that reclaim made progress.
///
/// Context: any that may wake a thread.
pub fn progress() {
    PROGRESS.wake_all();
}

/// Sleep until [`progress`] or `deadline_ns` (a helper for reclaimers'
/// [`Reclaimer::wait_progress`]).
///
/// Context: may sleep.
pub fn wait_for_progress(deadline_ns: u64, mut done: impl FnMut() -> bool) {
    PROGRESS.wait_event_deadline("reclaim_throttle", deadline_ns, &mut done);
}

/// The allocator-side counters now.
pub fn stats() -> MmStats {
    MmStats {
        free: free_pages(),
        total: total_pages(),
        low_hits: LOW_HITS.load(Ordering::Relaxed),
        kswapd_wakeups: KSWAPD_WAKEUPS.load(Ordering::Relaxed),
        allocstall: ALLOCSTALL.load(Ordering::Relaxed),
        atomic_reserve: ATOMIC_RESERVE.load(Ordering::Relaxed),
        refused: REFUSED.load(Ordering::Relaxed),
        oom: OOM.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_sqrt_is_the_floor_of_the_root() {
        for x in [0u64, 1, 2, 3, 4, 15, 16, 17, 99, 100, 101, 1 << 40, u64::MAX] {
            let r = int_sqrt(x);
            assert!(r.checked_mul(r).is_some_and(|sq| sq <= x), "{x}: {r}");
            assert!((r + 1).checked_mul(r + 1).is_none_or(|sq| sq > x), "{x}: {r}");
        }
    }

    #[test]
    fn min_free_kbytes_follows_linux() {
        // 64 MiB: sqrt(65536 * 16) = 1024 KiB; 256 MiB: 2048; tiny and huge clamp.
        assert_eq!(default_min_free_kbytes(64 << 10), 1024);
        assert_eq!(default_min_free_kbytes(256 << 10), 2048);
        assert_eq!(default_min_free_kbytes(512), 128);
        assert_eq!(default_min_free_kbytes(1 << 40), 262_144);
    }

    #[test]
    fn watermarks_are_min_plus_one_and_two_gaps() {
        // 64 MiB = 16384 pages, min_free 1024 KiB = 256 pages: gap
        // max(64, 16) = 64.
        assert_eq!(compute_watermarks(16384, 1024, 10), Watermarks { min: 256, low: 320, high: 384 });
        // A large scale factor takes over: 1 % of 16384 = 163.
        assert_eq!(compute_watermarks(16384, 1024, 100), Watermarks { min: 256, low: 419, high: 582 });
    }
}
