//! Suite `kswapd`: the watermarks, kswapd0, direct reclaim, shrinkers and
//! the out-of-memory path, on the port's frame allocator (through DMA
//! buffers, which allocate like any sleeping kernel allocation) and the
//! page cache of the block suite's main disk. Each case ends with memory
//! back where it started: frames (beside what the heap mapped meanwhile,
//! which it keeps) and heap bytes, or it fails naming the difference.
//! Runs wherever the port has started the watermarks (`kport::mm`).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use drivers::block::BlockBuf;
use drivers::pagecache::{PAGE_SIZE, PageCache};
use drivers::vmscan::{self, Shrinker};
use kport::harness::harness;
use kport::mm;
use kport::sync::SpinLock;
use kport::{EINVAL, ENOMEM, port};

use crate::block::disk;
use crate::port_api::{msleep, wait_for};
use crate::{Ctx, Failure, check, check_eq, err, ktest, skip};

fn need_mm() -> Result<(), Failure> {
    if !mm::active() || port().device_bus().is_none() {
        return skip(String::from("the port has no watermarks or no DMA memory"));
    }
    if vmscan::kswapd().is_none() {
        return Err(Failure::Fail(String::from("kswapd0 is not running")));
    }
    Ok(())
}

/// Memory at the start of a case, after the caches were dropped.
struct Baseline {
    used_frames: u64,
    heap_used: u64,
    threads: u64,
}

fn threads() -> u64 {
    kthreadd::registry::rows().len() as u64
}

fn baseline() -> Baseline {
    vmscan::drop_caches();
    let m = harness().mem_counters();
    Baseline { used_frames: m.used_frames, heap_used: m.heap_used, threads: threads() }
}

/// Fails naming what did not come back: frames in use (beside the heap's
/// own, which it keeps) and heap bytes. Kernel threads made meanwhile and
/// still alive (a pool's new idle workers live on for minutes) are allowed
/// their stack and bookkeeping (Redox keeps kernel stacks on the heap), plus
/// a little slack.
fn no_leak(b: &Baseline) -> Result<(), Failure> {
    vmscan::drop_caches();
    let (mut frames_ok, mut heap_ok) = (0, 0);
    let ok = wait_for(3_000, || {
        let m = harness().mem_counters();
        let new = threads().saturating_sub(b.threads);
        frames_ok = b.used_frames + 64 + new * 24;
        heap_ok = b.heap_used + (256 << 10) + new * (96 << 10);
        m.used_frames <= frames_ok && m.heap_used <= heap_ok
    });
    let m = harness().mem_counters();
    check!(
        ok,
        "memory did not come back: frames in use {} -> {} (allowed {frames_ok}); heap bytes {} -> {} (allowed {heap_ok}); kernel threads {} -> {}",
        b.used_frames,
        m.used_frames,
        b.heap_used,
        m.heap_used,
        b.threads,
        threads()
    );
    Ok(())
}

/// Fill a cache with `bytes` of kblk-main's pattern area (clean pages).
fn fill_cache(ctx: &Ctx, bytes: u64) -> Result<Arc<PageCache>, Failure> {
    let main = disk(ctx, "kblk-main")?;
    let cache = PageCache::new(main).map_err(err("page cache"))?;
    let mut buf = alloc::vec![0u8; 64 << 10];
    let mut at = 0;
    while at < bytes {
        cache.read(at, &mut buf).map_err(err("fill read"))?;
        at += buf.len() as u64;
    }
    Ok(cache)
}

/// A hog: page-sized DMA buffers, named in the out-of-memory report.
struct Hog {
    bufs: Vec<BlockBuf>,
    held: Arc<AtomicU64>,
    user: usize,
}

impl Hog {
    /// A hog for up to `pages` pages: its list is allocated up front, so
    /// the storm itself does not grow the heap.
    fn new(name: &str, pages: u64) -> Hog {
        let held = Arc::new(AtomicU64::new(0));
        let h = held.clone();
        let user = mm::register_user(name, move || h.load(Ordering::Relaxed));
        Hog { bufs: Vec::with_capacity(pages as usize), held, user }
    }

    /// One page more. Every 32 pages it lets runnable threads go first
    /// (`yield`): kswapd, once woken, then runs even on one CPU without
    /// preemption.
    fn take(&mut self) -> Result<(), kport::Error> {
        let b = BlockBuf::new(PAGE_SIZE)?;
        self.bufs.push(b);
        self.held.store(self.bufs.len() as u64, Ordering::Relaxed);
        if self.bufs.len().is_multiple_of(32) {
            port().yield_now();
        }
        Ok(())
    }
}

impl Hog {
    /// `n` pages more; the first failure, described, if any.
    fn take_n(&mut self, n: u64) -> Option<String> {
        (0..n).find_map(|k| self.take().err().map(|e| format!("allocation {k} of {n}: {e:?}")))
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        mm::unregister_user(self.user);
        self.bufs.clear();
    }
}

ktest!(kswapd::watermarks_follow_min_free_kbytes_and_the_scale_factor => |_ctx| {
    need_mm()?;
    let total = mm::total_pages();
    let (min_kb, factor) = (mm::min_free_kbytes(), mm::watermark_scale_factor());
    check_eq!(min_kb, mm::default_min_free_kbytes(total * 4), "min_free_kbytes from the memory size");
    check_eq!(factor, 10, "watermark_scale_factor's default");
    let w = mm::watermarks();
    check_eq!(w, mm::compute_watermarks(total, min_kb, factor), "the watermarks");
    check!(w.min > 0 && w.min < w.low && w.low < w.high && w.high < total, "watermarks out of order: {w:?} of {total}");
    check_eq!(mm::set_min_free_kbytes(min_kb * 2), Ok(()), "doubling min_free_kbytes");
    check_eq!(mm::watermarks().min, mm::compute_watermarks(total, min_kb * 2, factor).min, "min follows min_free_kbytes");
    check!(mm::watermarks().min >= w.min * 2 - 1, "doubling min_free_kbytes did not double min: {} -> {}", w.min, mm::watermarks().min);
    check_eq!(mm::set_watermark_scale_factor(200), Ok(()), "scale factor 200 (2 %)");
    let w2 = mm::watermarks();
    check_eq!(w2.low - w2.min, (total * 200 / 10_000).max(w2.min / 4), "the gap at 2 %");
    check_eq!(mm::set_watermark_scale_factor(0).map_err(|e| e.errno), Err(EINVAL), "scale factor 0");
    check_eq!(mm::set_watermark_scale_factor(3001).map_err(|e| e.errno), Err(EINVAL), "scale factor above 3000");
    check_eq!(mm::set_min_free_kbytes(0).map_err(|e| e.errno), Err(EINVAL), "min_free_kbytes 0");
    mm::set_min_free_kbytes(min_kb).map_err(err("restore"))?;
    mm::set_watermark_scale_factor(factor).map_err(err("restore"))?;
    check_eq!(mm::watermarks(), w, "the watermarks after restoring");
    Ok(())
});

ktest!(kswapd::atomic_allocations_may_use_the_reserve_sleeping_ones_may_not => |_ctx| {
    need_mm()?;
    let w = mm::watermarks();
    let floor = w.min / 2 - w.min / 8;
    // The allocator's check, at the edges (free pages before taking one).
    check!(mm::watermark_ok(w.low + 1, 1, mm::Gfp::Kernel), "a sleeping allocation's first try above low");
    check!(!mm::watermark_ok(w.low, 1, mm::Gfp::Kernel), "a sleeping allocation's first try would go below low");
    check!(mm::watermark_ok(w.min + 1, 1, mm::Gfp::KernelMin), "a sleeping allocation down to min");
    check!(!mm::watermark_ok(w.min, 1, mm::Gfp::KernelMin), "a sleeping allocation below min");
    let reserve0 = mm::stats().atomic_reserve;
    check!(mm::watermark_ok(w.min, 1, mm::Gfp::Atomic), "an atomic allocation just below min");
    check!(mm::watermark_ok(floor + 1, 1, mm::Gfp::Atomic), "an atomic allocation down to 3/8 min");
    check!(!mm::watermark_ok(floor, 1, mm::Gfp::Atomic), "an atomic allocation below 3/8 min");
    check!(mm::stats().atomic_reserve >= reserve0 + 2, "atomic allocations served from the reserve were not counted");
    check!(mm::watermark_ok(1, 1, mm::Gfp::NoWatermark) && !mm::watermark_ok(0, 1, mm::Gfp::NoWatermark), "no watermark: any page that exists");
    Ok(())
});

ktest!(kswapd::kswapd_reclaims_the_cache_under_an_allocation_storm [timeout_s = 300] => |ctx| {
    need_mm()?;
    let base = baseline();
    let w = mm::watermarks();
    let cache_pages = (mm::free_pages() / 4).min(2048);
    let cache = fill_cache(ctx, cache_pages * PAGE_SIZE as u64)?;
    let in_cache = cache.nr_pages();
    let (m0, v0) = (mm::stats(), vmscan::stats());
    // Take everything down to the low watermark, then half the cache more:
    // only reclaim of the cache can provide it.
    let want = mm::free_pages().saturating_sub(w.low) + in_cache / 2;
    let mut hog = Hog::new("ktest storm", want);
    let mut lowest = u64::MAX;
    for k in 0..want {
        hog.take().map_err(|e| Failure::Fail(format!("allocation {k} of {want} failed: {e:?}")))?;
        let free = mm::free_pages();
        lowest = lowest.min(free);
        // Below low, kswapd has been woken: the storm pauses now and then
        // (a millisecond every 16 pages) so kswapd, which may have to be
        // woken on a halted CPU, gets to run before the allocations reach
        // min. Without it a storm that reached min first was served by
        // direct reclaim alone, which took the cache before kswapd came
        // (once in a CI run, 2 CPUs, preempt=none: pgsteal_kswapd unchanged).
        if free < w.low && k % 16 == 0 {
            msleep(1);
        }
    }
    // kswapd keeps free memory above low while the cache lasts (it is
    // woken below low and reclaims up to high; between the two it sleeps,
    // as Linux's does).
    let balanced = wait_for(10_000, || mm::free_pages() >= w.low);
    let (m1, v1) = (mm::stats(), vmscan::stats());
    check!(balanced, "free pages {} stayed below low {} with {} cache pages left", mm::free_pages(), w.low, cache.nr_pages());
    check!(m1.kswapd_wakeups > m0.kswapd_wakeups, "kswapd was never woken");
    check!(v1.pageoutrun > v0.pageoutrun, "kswapd never balanced");
    check!(v1.pgsteal_kswapd > v0.pgsteal_kswapd, "kswapd freed nothing");
    check!(cache.nr_pages() < in_cache, "the cache kept all its {in_cache} pages");
    check!(lowest + 1 >= w.min, "a sleeping allocation left {lowest} free pages, below min {}", w.min);
    drop(hog);
    drop(cache);
    no_leak(&base)
});

ktest!(kswapd::direct_reclaim_serves_an_allocation_while_kswapd_is_parked [timeout_s = 300] => |ctx| {
    need_mm()?;
    let kswapd = vmscan::kswapd().ok_or(Failure::Fail(String::from("no kswapd")))?;
    let base = baseline();
    let w = mm::watermarks();
    let cache = fill_cache(ctx, (mm::free_pages() / 4).min(1024) * PAGE_SIZE as u64)?;
    let in_cache = cache.nr_pages();
    kswapd.park().map_err(err("park kswapd"))?;
    let (m0, v0) = (mm::stats(), vmscan::stats());
    // A quarter of the cache beyond min: the rest leaves room for the
    // heap's growth (1 MiB at a time) and page tables meanwhile.
    let want = mm::free_pages().saturating_sub(w.min) + in_cache / 4;
    let mut hog = Hog::new("ktest direct", want);
    let failed = hog.take_n(want);
    let (m1, v1) = (mm::stats(), vmscan::stats());
    kswapd.unpark();
    check!(failed.is_none(), "{}", failed.unwrap_or_default());
    check!(m1.allocstall > m0.allocstall, "no allocation entered direct reclaim");
    check!(v1.pgsteal_direct > v0.pgsteal_direct, "direct reclaim freed nothing");
    check_eq!(v1.pgsteal_kswapd, v0.pgsteal_kswapd, "pages kswapd freed while parked");
    check!(cache.nr_pages() < in_cache, "the cache kept all its pages");
    drop(hog);
    drop(cache);
    no_leak(&base)
});

/// A shrinker over page-sized buffers the case holds.
struct TestShrinker {
    bufs: SpinLock<Vec<BlockBuf>>,
    asked: AtomicU64,
}

impl Shrinker for TestShrinker {
    fn name(&self) -> &str {
        "ktest shrinker"
    }
    fn count_objects(&self) -> u64 {
        self.bufs.lock().len() as u64
    }
    fn scan_objects(&self, nr: u64) -> u64 {
        self.asked.fetch_add(nr, Ordering::Relaxed);
        let gone: Vec<BlockBuf> = {
            let mut b = self.bufs.lock();
            let keep = b.len().saturating_sub(nr as usize);
            b.split_off(keep)
        };
        gone.len() as u64
    }
}

ktest!(kswapd::a_registered_shrinker_gives_memory_back_under_pressure [timeout_s = 300] => |_ctx| {
    need_mm()?;
    let base = baseline();
    let w = mm::watermarks();
    let s = Arc::new(TestShrinker { bufs: SpinLock::new(Vec::new()), asked: AtomicU64::new(0) });
    for _ in 0..512 {
        let b = BlockBuf::new(PAGE_SIZE).map_err(err("shrinker's buffer"))?;
        s.bufs.lock().push(b);
    }
    let id = vmscan::register_shrinker(s.clone());
    // With the page caches dropped, only the shrinker has memory to give.
    vmscan::drop_caches();
    let want = mm::free_pages().saturating_sub(w.min) + 256;
    let mut hog = Hog::new("ktest hog", want);
    let failed = hog.take_n(want);
    vmscan::unregister_shrinker(id);
    check!(failed.is_none(), "{}", failed.unwrap_or_default());
    check!(s.asked.load(Ordering::Relaxed) > 0, "the shrinker was never asked");
    check!(s.bufs.lock().len() < 512, "the shrinker gave nothing back");
    drop(hog);
    s.bufs.lock().clear();
    no_leak(&base)
});

ktest!(kswapd::an_allocation_nothing_can_satisfy_gets_enomem_and_an_oom_report [timeout_s = 300] => |_ctx| {
    need_mm()?;
    let base = baseline();
    let oom0 = mm::stats().oom;
    let mut hog = Hog::new("ktest oom hog", mm::total_pages());
    let mut result = Ok(());
    for _ in 0..mm::total_pages() {
        result = hog.take();
        if result.is_err() {
            break;
        }
    }
    let held = hog.bufs.len();
    let report = mm::last_oom_report().unwrap_or_default();
    drop(hog);
    check_eq!(result.map_err(|e| e.errno), Err(ENOMEM), "the allocation past all memory");
    check_eq!(mm::stats().oom, oom0 + 1, "out-of-memory reports");
    check!(report.contains("out of memory"), "report: {report}");
    // The hog is the largest user, named first.
    let first = report.split("largest users:").nth(1).unwrap_or("");
    check!(first.trim_start().starts_with(&format!("ktest oom hog {held} pages")), "the report does not name the hog first with its {held} pages: {report}");
    no_leak(&base)
});

ktest!(kswapd::vmstat_and_meminfo_tables_carry_linux_names => |_ctx| {
    need_mm()?;
    let v = vmscan::vmstat();
    for l in v.lines().chain(vmscan::meminfo().lines()) {
        crate::harness::diag_line(&format!("vmstat: {l}"));
    }
    for name in ["nr_free_pages", "nr_file_pages", "nr_dirty", "nr_writeback", "pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct", "pageoutrun", "allocstall", "oom_kill", "nr_throttled_writes", "kswapd_wakeups"] {
        check!(v.lines().any(|l| l.split(' ').next() == Some(name)), "vmstat lacks {name}:\n{v}");
    }
    let m = vmscan::meminfo();
    for name in ["MemTotal:", "MemFree:", "MemAvailable:", "Cached:", "Dirty:", "Writeback:"] {
        check!(m.lines().any(|l| l.starts_with(name) && l.ends_with(" kB")), "meminfo lacks {name}:\n{m}");
    }
    let total_kb: u64 = m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok()).unwrap_or(0);
    check_eq!(total_kb, mm::total_pages() * 4, "MemTotal");
    Ok(())
});

// ---- benchmarks (docs/benchmarks.md, "Page cache and reclaim") ----

/// Sets the watermark settings for a benchmark and restores them.
struct Watermark {
    min_kb: u64,
    factor: u64,
}

impl Watermark {
    fn save() -> Watermark {
        Watermark { min_kb: mm::min_free_kbytes(), factor: mm::watermark_scale_factor() }
    }
}

impl Drop for Watermark {
    fn drop(&mut self) {
        let _ = mm::set_min_free_kbytes(self.min_kb);
        let _ = mm::set_watermark_scale_factor(self.factor);
    }
}

ktest!(kswapd::bench_kswapd_reclaim_mib_s [bench = true, timeout_s = 600] => |ctx| {
    need_mm()?;
    let _pin = crate::bench::Pinned::to(0);
    let base = baseline();
    let restore = Watermark::save();
    let p = port();
    const ROUNDS: usize = 5;
    let (mut stolen, mut ns) = (0u64, 0u64);
    for _ in 0..ROUNDS {
        vmscan::drop_caches();
        let cache = fill_cache(ctx, (mm::free_pages() / 4).min(4096) * PAGE_SIZE as u64)?;
        // A gap between low and high of about three quarters of the cache:
        // kswapd, woken below low, reclaims that much to reach high.
        let gap = cache.nr_pages() * 3 / 4;
        let factor = (gap * 10_000 / mm::total_pages()).clamp(1, mm::MAX_WATERMARK_SCALE_FACTOR);
        mm::set_watermark_scale_factor(factor).map_err(err("scale factor"))?;
        let w = mm::watermarks();
        let mut hog = Hog::new("ktest bench hog", mm::free_pages());
        while mm::free_pages() >= w.low {
            hog.take().map_err(err("hog"))?;
        }
        let s0 = vmscan::stats().pgsteal_kswapd;
        let t0 = p.cycles();
        check!(wait_for(30_000, || mm::free_pages() >= w.high), "kswapd did not reach high: free {} high {}", mm::free_pages(), w.high);
        let t1 = p.cycles();
        stolen += vmscan::stats().pgsteal_kswapd - s0;
        ns += p.cycles_to_ns(t1 - t0);
        drop(hog);
        drop(cache);
        mm::set_watermark_scale_factor(restore.factor).map_err(err("restore"))?;
    }
    let bytes = stolen * PAGE_SIZE as u64;
    crate::harness::diag_line(&format!(
        "bench: kswapd_reclaim_mib_s items_per_s={} n={}",
        (bytes as u128 * 1_000_000_000 / (ns.max(1) as u128 * (1 << 20))) as u64,
        bytes >> 20
    ));
    no_leak(&base)
});

ktest!(kswapd::bench_direct_reclaim_latency [bench = true, timeout_s = 600] => |ctx| {
    need_mm()?;
    let kswapd = vmscan::kswapd().ok_or(Failure::Fail(String::from("no kswapd")))?;
    let _pin = crate::bench::Pinned::to(0);
    let base = baseline();
    let p = port();
    let cache = fill_cache(ctx, (mm::free_pages() / 4).min(4096) * PAGE_SIZE as u64)?;
    let in_cache = cache.nr_pages();
    kswapd.park().map_err(err("park kswapd"))?;
    let w = mm::watermarks();
    let mut hog = Hog::new("ktest bench hog", mm::free_pages() + in_cache);
    // Down to min: from here each allocation that finds no page reclaims.
    let mut failed = None;
    while mm::free_pages() > w.min + 1 {
        if let Err(e) = hog.take() {
            failed = Some(format!("on the way to min: {e:?} (cache {} pages)", cache.nr_pages()));
            break;
        }
    }
    let mut samples = Vec::new();
    while failed.is_none() && cache.nr_pages() > in_cache / 4 {
        let stalls = mm::stats().allocstall;
        let t0 = p.cycles();
        let r = hog.take();
        let t1 = p.cycles();
        if let Err(e) = r {
            failed = Some(format!("after {} samples: {e:?} (cache {} of {in_cache} pages)", samples.len(), cache.nr_pages()));
            break;
        }
        if mm::stats().allocstall != stalls {
            samples.push(t1 - t0);
        }
    }
    kswapd.unpark();
    drop(hog);
    drop(cache);
    check!(failed.is_none(), "an allocation failed {}", failed.unwrap_or_default());
    check!(samples.len() >= 10, "only {} allocations reclaimed directly", samples.len());
    crate::bench::report_latency("direct_reclaim_latency", &mut samples);
    no_leak(&base)
});
