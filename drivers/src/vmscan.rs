//! Reclaim: `kswapd0`, direct reclaim, shrinkers, and the `/proc/vmstat`
//! and `/proc/meminfo` tables. Linux: `mm/vmscan.c` (`kswapd`,
//! `balance_pgdat`, `shrink_node`, `do_shrink_slab`), `mm/shrinker.c`,
//! `mm/vmstat.c`, `fs/proc/meminfo.c`.
//!
//! * **kswapd0** sleeps until the port's allocator falls below the `low`
//!   watermark (`kport::mm`: a flag set inside the allocator, turned into
//!   a wake-up at the next tick or by a sleeping allocation). Awake, it
//!   reclaims until free pages are above `high`: the page caches' inactive
//!   lists oldest first (clean pages freed, referenced ones rotated, dirty
//!   ones handed to their device's flusher), then every registered
//!   [`Shrinker`]. Having balanced, it naps 100 ms (Linux `HZ/10`) in case
//!   the pressure goes on, then sleeps. It can be parked and stopped like
//!   any kthread.
//! * **Direct reclaim** is the same pass run by a sleeping allocation that
//!   found free pages under `min` (`kport::mm::alloc_slowpath`). It takes
//!   the caches' mutexes like kswapd: no path allocates a frame while it
//!   holds one (a cache fills and allocates its pages outside its mutex).
//! * **Shrinkers** ([`register_shrinker`]): other caches that can give
//!   memory back (Linux `struct shrinker`: `count_objects`,
//!   `scan_objects`). Each pass asks each shrinker for a share of what is
//!   still wanted, in proportion to what it holds.
//!
//! Linux scans each LRU `size >> priority` pages per round with a priority
//! falling from 12 to 0; here a pass scans `max(32, size >> p)` pages per
//! cache for `p` from 6 down to 0, stopping as soon as enough is freed.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kport::mm::{self, PAGE_SIZE};
use kport::sync::{Mutex, SpinLock, WaitQueue};
use kport::{Result, port};
use kthreadd::kthread::{self, Builder, Kthread};

use crate::pagecache::{self, COUNTERS};
use crate::writeback;

/// Pages reclaim tries to free beyond what is needed (Linux
/// `SWAP_CLUSTER_MAX`).
pub const SWAP_CLUSTER_MAX: u64 = 32;
/// kswapd's nap after balancing, before it sleeps (Linux `HZ/10`).
pub const KSWAPD_NAP_NS: u64 = 100_000_000;

/// A cache that can give memory back under pressure (Linux `struct
/// shrinker`).
pub trait Shrinker: Send + Sync {
    /// Its name in the report.
    fn name(&self) -> &str;
    /// Objects it could free now.
    fn count_objects(&self) -> u64;
    /// Free up to `nr_to_scan` objects; returns the pages freed.
    ///
    /// Context: may sleep.
    fn scan_objects(&self, nr_to_scan: u64) -> u64;
}

static SHRINKERS: SpinLock<Vec<(usize, Arc<dyn Shrinker>)>> = SpinLock::new(Vec::new());
static NEXT_SHRINKER: AtomicUsize = AtomicUsize::new(1);

/// Register a shrinker; returns its id for [`unregister_shrinker`].
pub fn register_shrinker(s: Arc<dyn Shrinker>) -> usize {
    let id = NEXT_SHRINKER.fetch_add(1, Ordering::Relaxed);
    SHRINKERS.lock().push((id, s));
    id
}

/// Remove a shrinker; it is not called after this returns (a pass that
/// took it before may still be running it).
pub fn unregister_shrinker(id: usize) {
    let gone = {
        let mut v = SHRINKERS.lock();
        v.iter().position(|e| e.0 == id).map(|i| v.swap_remove(i))
    };
    drop(gone);
}

/// Reclaim counters (Linux `/proc/vmstat` names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmStats {
    /// Pages kswapd looked at.
    pub pgscan_kswapd: u64,
    /// Pages direct reclaim looked at.
    pub pgscan_direct: u64,
    /// Pages kswapd freed.
    pub pgsteal_kswapd: u64,
    /// Pages direct reclaim freed.
    pub pgsteal_direct: u64,
    /// Pages shrinkers freed (`slabs_scanned` counts what they were asked).
    pub shrinker_freed: u64,
    /// Objects shrinkers were asked to scan.
    pub slabs_scanned: u64,
    /// Active pages moved to the inactive list.
    pub pgdeactivate: u64,
    /// Times kswapd started balancing (Linux `pageoutrun`).
    pub pageoutrun: u64,
    /// Dirty pages reclaim met and handed to the flusher.
    pub nr_vmscan_write: u64,
}

struct Counters {
    pgscan_kswapd: AtomicU64,
    pgscan_direct: AtomicU64,
    pgsteal_kswapd: AtomicU64,
    pgsteal_direct: AtomicU64,
    shrinker_freed: AtomicU64,
    slabs_scanned: AtomicU64,
    pgdeactivate: AtomicU64,
    pageoutrun: AtomicU64,
    nr_vmscan_write: AtomicU64,
}

static C: Counters = Counters {
    pgscan_kswapd: AtomicU64::new(0),
    pgscan_direct: AtomicU64::new(0),
    pgsteal_kswapd: AtomicU64::new(0),
    pgsteal_direct: AtomicU64::new(0),
    shrinker_freed: AtomicU64::new(0),
    slabs_scanned: AtomicU64::new(0),
    pgdeactivate: AtomicU64::new(0),
    pageoutrun: AtomicU64::new(0),
    nr_vmscan_write: AtomicU64::new(0),
};

/// The reclaim counters now.
pub fn stats() -> VmStats {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    VmStats {
        pgscan_kswapd: l(&C.pgscan_kswapd),
        pgscan_direct: l(&C.pgscan_direct),
        pgsteal_kswapd: l(&C.pgsteal_kswapd),
        pgsteal_direct: l(&C.pgsteal_direct),
        shrinker_freed: l(&C.shrinker_freed),
        slabs_scanned: l(&C.slabs_scanned),
        pgdeactivate: l(&C.pgdeactivate),
        pageoutrun: l(&C.pageoutrun),
        nr_vmscan_write: l(&C.nr_vmscan_write),
    }
}

/// One reclaim pass: free about `nr_to_reclaim` pages from the page caches
/// and the shrinkers. `direct`: in an allocating thread (counted apart).
/// Returns the pages freed.
///
/// Context: may sleep.
pub fn shrink(nr_to_reclaim: u64, direct: bool) -> u64 {
    kport::might_sleep();
    let want = nr_to_reclaim.max(1);
    let caches = pagecache::all_caches();
    let (mut scanned, mut freed, mut dirty) = (0u64, 0u64, 0u64);
    'prio: for prio in (0..=6u32).rev() {
        for c in &caches {
            let scan = (c.nr_pages() >> prio).max(SWAP_CLUSTER_MAX);
            let r = c.shrink(scan, want - freed);
            scanned += r.scanned;
            freed += r.freed;
            dirty += r.dirty;
            C.pgdeactivate.fetch_add(r.deactivated, Ordering::Relaxed);
            if freed >= want {
                break 'prio;
            }
        }
    }
    if freed < want {
        let shrinkers: Vec<Arc<dyn Shrinker>> = SHRINKERS.lock().iter().map(|(_, s)| s.clone()).collect();
        let counts: Vec<u64> = shrinkers.iter().map(|s| s.count_objects()).collect();
        let total: u64 = counts.iter().sum();
        for (s, n) in shrinkers.iter().zip(counts) {
            if freed >= want || total == 0 {
                break;
            }
            // A share of what is still wanted, in proportion to its size.
            let ask = ((want - freed) * n).div_ceil(total).min(n);
            if ask == 0 {
                continue;
            }
            C.slabs_scanned.fetch_add(ask, Ordering::Relaxed);
            let got = s.scan_objects(ask);
            C.shrinker_freed.fetch_add(got, Ordering::Relaxed);
            freed += got;
        }
    }
    if dirty > 0 {
        C.nr_vmscan_write.fetch_add(dirty, Ordering::Relaxed);
        writeback::wakeup_flusher_threads();
    }
    let (scan_c, steal_c) =
        if direct { (&C.pgscan_direct, &C.pgsteal_direct) } else { (&C.pgscan_kswapd, &C.pgsteal_kswapd) };
    scan_c.fetch_add(scanned, Ordering::Relaxed);
    steal_c.fetch_add(freed, Ordering::Relaxed);
    if freed > 0 {
        mm::progress();
    }
    freed
}

/// Free every clean page-cache page (Linux `echo 1 > drop_caches`);
/// returns the pages freed.
///
/// Context: may sleep.
pub fn drop_caches() -> u64 {
    pagecache::all_caches().iter().map(|c| c.drop_clean()).sum()
}

struct Kswapd {
    thread: Mutex<Option<Kthread>>,
    wq: WaitQueue,
    wanted: AtomicBool,
}

static KSWAPD: Kswapd = Kswapd { thread: Mutex::new(None), wq: WaitQueue::new(), wanted: AtomicBool::new(false) };

impl mm::Reclaimer for Kswapd {
    fn wake_kswapd(&self) -> bool {
        if kport::trace::on(kport::trace::Event::MmVmscanKswapdWake) {
            kport::trace::emit(kport::trace::Event::MmVmscanKswapdWake, [0; 5], "", "");
        }
        self.wanted.store(true, Ordering::Release);
        self.wq.wake_all() > 0
    }

    fn direct_reclaim(&self, pages: u64) -> u64 {
        if kport::trace::on(kport::trace::Event::MmVmscanDirectReclaimBegin) {
            kport::trace::emit(kport::trace::Event::MmVmscanDirectReclaimBegin, [0; 5], "", "");
        }
        let freed = shrink(pages + SWAP_CLUSTER_MAX, true);
        if kport::trace::on(kport::trace::Event::MmVmscanDirectReclaimEnd) {
            kport::trace::emit(kport::trace::Event::MmVmscanDirectReclaimEnd, [freed, 0, 0, 0, 0], "", "");
        }
        freed
    }

    fn pages_in_flight(&self) -> u64 {
        COUNTERS.writeback.load(Ordering::Relaxed) + COUNTERS.dirty.load(Ordering::Relaxed)
    }

    fn wait_progress(&self, deadline_ns: u64) {
        let start = stats().pgsteal_kswapd + COUNTERS.written.load(Ordering::Relaxed);
        mm::wait_for_progress(deadline_ns, || {
            stats().pgsteal_kswapd + COUNTERS.written.load(Ordering::Relaxed) != start
        });
    }
}

fn below(mark: u64) -> bool {
    mm::active() && mm::free_pages() < mark
}

/// kswapd's loop (Linux `kswapd` + `balance_pgdat`).
fn kswapd_main() -> i32 {
    loop {
        kthread::wait_event_or_stop(&KSWAPD.wq, "kswapd", || {
            KSWAPD.wanted.load(Ordering::Acquire) || below(mm::watermarks().low) || kthread::should_park()
        });
        if kthread::should_stop() {
            return 0;
        }
        if kthread::should_park() {
            kthread::parkme();
            continue;
        }
        KSWAPD.wanted.store(false, Ordering::Release);
        if !below(mm::watermarks().high) {
            continue;
        }
        C.pageoutrun.fetch_add(1, Ordering::Relaxed);
        let mut idle_rounds = 0;
        while below(mm::watermarks().high) && !kthread::should_stop_or_park() {
            let want = mm::watermarks().high.saturating_sub(mm::free_pages()) + SWAP_CLUSTER_MAX;
            if shrink(want, false) > 0 {
                idle_rounds = 0;
                continue;
            }
            // Nothing freed: wait for writeback the flusher was asked for,
            // or give up until the next wake-up.
            idle_rounds += 1;
            if idle_rounds > mm::MAX_RECLAIM_RETRIES
                || COUNTERS.writeback.load(Ordering::Relaxed) + COUNTERS.dirty.load(Ordering::Relaxed) == 0
            {
                break;
            }
            mm::wait_for_progress(port().now_ns() + KSWAPD_NAP_NS, || false);
        }
        mm::progress();
        if kport::trace::on(kport::trace::Event::MmVmscanKswapdSleep) {
            kport::trace::emit(kport::trace::Event::MmVmscanKswapdSleep, [0; 5], "", "");
        }
        // Nap before sleeping for good, in case the pressure goes on.
        let deadline = port().now_ns() + KSWAPD_NAP_NS;
        KSWAPD.wq.wait_event_deadline("kswapd_nap", deadline, || {
            KSWAPD.wanted.load(Ordering::Acquire) || kthread::should_stop_or_park()
        });
    }
}

/// Start `kswapd0` and register reclaim with the port's allocator (once;
/// later calls return the running thread).
///
/// Return: `ENOMEM` when the thread cannot be made.
///
/// Context: may sleep.
pub fn init() -> Result<Kthread> {
    kport::might_sleep();
    crate::writeback::register_sysctls();
    let mut t = KSWAPD.thread.lock();
    if let Some(k) = t.as_ref() {
        return Ok(k.clone());
    }
    let k = Builder::new(format_args!("kswapd0"), kswapd_main).run()?;
    *t = Some(k.clone());
    mm::set_reclaimer(&KSWAPD);
    Ok(k)
}

/// The running kswapd, if started.
pub fn kswapd() -> Option<Kthread> {
    KSWAPD.thread.lock().clone()
}

/// `/proc/vmstat`: one `name value` per line.
pub fn vmstat() -> String {
    let m = mm::stats();
    let v = stats();
    let w = mm::watermarks();
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let active: u64 = pagecache::all_caches().iter().map(|c| c.stats().active).sum();
    let file = l(&COUNTERS.file);
    let mut out = String::new();
    let mut line = |name: &str, value: u64| out.push_str(&format!("{name} {value}\n"));
    line("nr_free_pages", m.free);
    line("nr_file_pages", file);
    line("nr_active_file", active);
    line("nr_inactive_file", file.saturating_sub(active));
    line("nr_dirty", l(&COUNTERS.dirty));
    line("nr_writeback", l(&COUNTERS.writeback));
    line("nr_dirtied", l(&COUNTERS.dirtied));
    line("nr_written", l(&COUNTERS.written));
    line("watermark_min", w.min);
    line("watermark_low", w.low);
    line("watermark_high", w.high);
    line("pgscan_kswapd", v.pgscan_kswapd);
    line("pgscan_direct", v.pgscan_direct);
    line("pgsteal_kswapd", v.pgsteal_kswapd);
    line("pgsteal_direct", v.pgsteal_direct);
    line("pgdeactivate", v.pgdeactivate);
    line("slabs_scanned", v.slabs_scanned);
    line("shrinker_freed", v.shrinker_freed);
    line("pageoutrun", v.pageoutrun);
    line("kswapd_low_wmark_hit", m.low_hits);
    line("kswapd_wakeups", m.kswapd_wakeups);
    line("allocstall", m.allocstall);
    line("nr_vmscan_write", v.nr_vmscan_write);
    line("atomic_reserve_allocs", m.atomic_reserve);
    line("alloc_refused", m.refused);
    line("oom_kill", m.oom);
    let wb = writeback::stats();
    line("nr_throttled_writes", wb.throttled);
    line("throttled_ms", wb.throttled_ns / 1_000_000);
    line("wb_background_written", wb.background_written);
    line("wb_expired_written", wb.expired_written);
    out
}

/// `/proc/meminfo`: `Name:  N kB` lines.
pub fn meminfo() -> String {
    let kb = |pages: u64| pages * PAGE_SIZE / 1024;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let free = mm::free_pages();
    let file = l(&COUNTERS.file);
    let active: u64 = pagecache::all_caches().iter().map(|c| c.stats().active).sum();
    let low = mm::watermarks().low;
    // Linux's estimate: free above low plus the clean half of the file LRU.
    let clean = file.saturating_sub(l(&COUNTERS.dirty) + l(&COUNTERS.writeback));
    let available = free.saturating_sub(low) + clean - clean.min(low) / 2;
    let mut out = String::new();
    for (name, pages) in [
        ("MemTotal", mm::total_pages()),
        ("MemFree", free),
        ("MemAvailable", available),
        ("Cached", file),
        ("Active(file)", active),
        ("Inactive(file)", file.saturating_sub(active)),
        ("Dirty", l(&COUNTERS.dirty)),
        ("Writeback", l(&COUNTERS.writeback)),
    ] {
        out.push_str(&format!("{:<16}{:>10} kB\n", format!("{name}:"), kb(pages)));
    }
    out
}
