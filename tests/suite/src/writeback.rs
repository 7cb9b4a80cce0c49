//! Suite `writeback`: the per-device flusher and the throttling of
//! writers, on the block suite's disks. Expired pages are written with no
//! `sync`, and never before they expire; the background threshold starts
//! writeback early; a writer past the hard threshold is throttled while a
//! reader runs freely; `sync` on a slow disk sleeps while other threads
//! run; a writeback error of the flusher reaches the next `fsync`; the
//! settings have Linux's names, defaults and bounds.

use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use drivers::block::SECTOR_SIZE;
use drivers::pagecache::{PAGE_SIZE, PageCache, PageState};
use drivers::writeback;
use kport::{CpuMask, EINVAL, EIO, ENOENT, port};

use crate::block::{disk, image_check};
use crate::port_api::{spawn_on, wait_for};
use crate::{Failure, check, check_eq, err, ktest};

/// Where the cases write on kblk-main: 9.5 MiB, half a megabyte no other
/// suite uses.
const AREA: u64 = 9728 << 10;
/// On kblk-slow (1 MiB): the block suite reads only its first 48 KiB.
const SLOW_AREA: u64 = 512 << 10;
/// Pages written on kblk-slow are two pages apart: QEMU's virtio-blk merges
/// adjacent requests of a batch into one, which its throttle counts once.
const SLOW_STRIDE: u64 = 2 * PAGE_SIZE as u64;

/// Sets writeback settings for a case and puts Linux's defaults back when
/// dropped.
struct Settings;

impl Settings {
    fn set(pairs: &[(&str, u64)]) -> Result<Settings, Failure> {
        writeback::reset_defaults();
        for (name, value) in pairs {
            writeback::set(name, *value).map_err(|e| Failure::Fail(format!("setting {name}={value}: {e:?}")))?;
        }
        Ok(Settings)
    }
}

impl Drop for Settings {
    fn drop(&mut self) {
        writeback::reset_defaults();
    }
}

fn now_ms() -> u64 {
    port().now_ns() / 1_000_000
}

/// Wait for the global dirty count to settle under `pages` (what earlier
/// cases left is written by their flushers).
fn quiet_dirty(pages: u64) -> Result<(), Failure> {
    check!(
        wait_for(10_000, || writeback::global_dirty() <= pages),
        "dirty pages from before the case did not drain: {}",
        writeback::global_dirty()
    );
    Ok(())
}

ktest!(writeback::settings_have_linux_names_defaults_and_bounds => |_ctx| {
    let _s = Settings::set(&[])?;
    for (name, want) in [
        ("dirty_background_ratio", 10),
        ("dirty_ratio", 20),
        ("dirty_background_bytes", 0),
        ("dirty_bytes", 0),
        ("dirty_expire_centisecs", 3000),
        ("dirty_writeback_centisecs", 500),
    ] {
        check_eq!(writeback::get(name), Ok(want), "default of {}", name);
    }
    check_eq!(writeback::set("dirty_ratio", 101).map_err(|e| e.errno), Err(EINVAL), "a ratio above 100");
    check_eq!(writeback::set("dirty_bytes", 4096).map_err(|e| e.errno), Err(EINVAL), "dirty_bytes below two pages");
    check_eq!(writeback::set("no_such_setting", 1).map_err(|e| e.errno), Err(ENOENT), "an unknown name");
    // Bytes and ratio exclude each other, as in Linux.
    check_eq!(writeback::set("dirty_bytes", 1 << 20), Ok(()), "dirty_bytes");
    check_eq!(writeback::get("dirty_ratio"), Ok(0), "dirty_ratio after dirty_bytes was set");
    check_eq!(writeback::dirty_limits().1, 256, "the hard threshold of 1 MiB in pages");
    check_eq!(writeback::set("dirty_ratio", 30), Ok(()), "dirty_ratio");
    check_eq!(writeback::get("dirty_bytes"), Ok(0), "dirty_bytes after dirty_ratio was set");
    // The background threshold is capped at half the hard one.
    check_eq!(writeback::set("dirty_bytes", 1 << 20), Ok(()), "dirty_bytes");
    check_eq!(writeback::set("dirty_background_bytes", 2 << 20), Ok(()), "dirty_background_bytes");
    check_eq!(writeback::dirty_limits(), (128, 256), "a background threshold above the hard one becomes half of it");
    Ok(())
});

ktest!(writeback::the_flusher_writes_expired_pages_without_sync_and_not_before => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    quiet_dirty(64)?;
    // Expire after 600 ms, a pass every 100 ms.
    let _s = Settings::set(&[("dirty_expire_centisecs", 60), ("dirty_writeback_centisecs", 10)])?;
    let cache = PageCache::new(main.clone()).map_err(err("page cache"))?;
    let at = AREA;
    let data: Vec<u8> = (0..4 * PAGE_SIZE).map(|_| ctx.rng.next_u64() as u8).collect();
    let expired_before = writeback::stats().expired_written;
    check_eq!(cache.write(at, &data), Ok(data.len()), "write");
    let first = at / PAGE_SIZE as u64;
    let dirtied: Vec<u64> = (first..first + 4).map(|i| cache.page_state(i).map(|s| s.1).unwrap_or(0)).collect();
    // Armed, or running a pass (the settings' kick) that re-arms it at its end.
    check!(wait_for(2_000, || cache.bdi().is_armed()), "dirtying an idle device did not arm its flusher");
    // Watch the pages: dirty while younger than the expiry, clean within
    // expiry + interval (+ slack for a loaded host).
    let expire_ns = 600_000_000;
    let mut cleaned_at = [None; 4];
    let deadline = port().now_ns() + 8_000_000_000;
    while port().now_ns() < deadline && cleaned_at.iter().any(Option::is_none) {
        let t = port().now_ns();
        for k in 0..4 {
            let state = cache.page_state(first + k as u64).map(|s| s.0);
            if cleaned_at[k].is_none() && state == Some(PageState::Clean) {
                cleaned_at[k] = Some(t);
            }
            check!(t >= dirtied[k] + expire_ns || state == Some(PageState::Dirty), "page {k} was {state:?} {} ms after it was dirtied, before the expiry", (t - dirtied[k]) / 1_000_000);
        }
        crate::port_api::msleep(20);
    }
    for k in 0..4 {
        let Some(at_ns) = cleaned_at[k] else {
            return Err(Failure::Fail(format!("expired page {k} was not written back within 8 s")));
        };
        check!(at_ns >= dirtied[k] + expire_ns, "page {k} written back {} ms after it was dirtied, before the 600 ms expiry", (at_ns - dirtied[k]) / 1_000_000);
    }
    check!(writeback::stats().expired_written >= expired_before + 4, "the periodic pass counted {} pages", writeback::stats().expired_written - expired_before);
    // On the device, without a sync from anyone.
    let on_disk = main.read(at / SECTOR_SIZE as u64, data.len()).map_err(err("device read"))?;
    check!(on_disk.as_slice() == data.as_slice(), "the flusher's write is not on the device");
    image_check("kblk-main", at / SECTOR_SIZE as u64, &data);
    Ok(())
});

ktest!(writeback::the_background_threshold_starts_writeback_early => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    quiet_dirty(8)?;
    // Background at 64 KiB; expiry far away (Linux's 30 s); no throttling.
    let _s = Settings::set(&[("dirty_background_bytes", 64 << 10), ("dirty_bytes", 64 << 20)])?;
    let cache = PageCache::new(main.clone()).map_err(err("page cache"))?;
    let at = AREA + (64 << 10);
    let data: Vec<u8> = (0..(256 << 10)).map(|_| ctx.rng.next_u64() as u8).collect();
    let before = writeback::stats();
    let t0 = now_ms();
    check_eq!(cache.write(at, &data), Ok(data.len()), "write 256 KiB");
    let (bg, _) = writeback::dirty_limits();
    // Written back (not just under way) by a background pass.
    let drained = wait_for(10_000, || writeback::global_dirty() <= bg && writeback::stats().background_written > before.background_written);
    let after = writeback::stats();
    check!(now_ms() - t0 < 30_000, "the case outlived the expiry, so it proves nothing");
    check!(drained, "no background pass took dirty pages under the threshold ({} dirty, threshold {bg}): before {before:?} after {after:?}", writeback::global_dirty());
    check!(after.background > before.background, "no background pass ran");
    check_eq!(after.expired_written, before.expired_written, "pages written as expired, 30 s early");
    let mut cursor = cache.cursor();
    check_eq!(cache.sync(&mut cursor), Ok(()), "sync");
    image_check("kblk-main", at / SECTOR_SIZE as u64, &data);
    Ok(())
});

ktest!(writeback::a_writer_past_the_hard_threshold_is_throttled_a_reader_is_not [timeout_s = 120] => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let slow = disk(ctx, "kblk-slow")?;
    quiet_dirty(0)?;
    // Hard threshold 64 KiB (16 pages), background 32 KiB: the writer below
    // dirties 48 pages on a disk that writes 20 a second.
    let _s = Settings::set(&[("dirty_background_bytes", 32 << 10), ("dirty_bytes", 64 << 10)])?;
    let reader_cache = PageCache::new(main).map_err(err("page cache"))?;
    let mut page = alloc::vec![0u8; PAGE_SIZE];
    for i in 0..64u64 {
        reader_cache.read(i * PAGE_SIZE as u64, &mut page).map_err(err("warm read"))?;
    }
    let writer_cache = PageCache::new(slow).map_err(err("page cache"))?;
    let data: Arc<Vec<u8>> = Arc::new((0..48 * PAGE_SIZE).map(|_| ctx.rng.next_u64() as u8).collect());
    let throttled_before = writeback::stats().throttled;
    let writer_done = Arc::new(AtomicU64::new(0));
    let reader_done = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let start = port().now_ns();
    let (wd, wc, d2) = (writer_done.clone(), writer_cache.clone(), data.clone());
    let writer = spawn_on("wb-writer", CpuMask::ALL, move || {
        for k in 0..48usize {
            let chunk = &d2[k * PAGE_SIZE..(k + 1) * PAGE_SIZE];
            if wc.write(SLOW_AREA + k as u64 * SLOW_STRIDE, chunk).is_err() {
                return;
            }
        }
        wd.store(port().now_ns(), Ordering::Release);
    });
    let (rd, rc, n) = (reader_done.clone(), reader_cache.clone(), reads.clone());
    let reader = spawn_on("wb-reader", CpuMask::ALL, move || {
        let mut buf = alloc::vec![0u8; PAGE_SIZE];
        for k in 0..256u64 {
            if rc.read((k % 64) * PAGE_SIZE as u64, &mut buf).is_ok() {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
        rd.store(port().now_ns(), Ordering::Release);
    });
    writer.wake();
    reader.wake();
    // Meanwhile the flusher's worker is listed after the device, as
    // Linux's `kworker/u8:1+flush-8:0`.
    let mut flusher_listed = alloc::string::String::new();
    check!(wait_for(60_000, || {
        if flusher_listed.is_empty()
            && let Some(r) = kthreadd::registry::rows().into_iter().find(|r| r.name.ends_with("+flush-kblk-slow]"))
        {
            flusher_listed = r.name;
        }
        writer_done.load(Ordering::Acquire) != 0 && reader_done.load(Ordering::Acquire) != 0
    }), "writer or reader did not finish in 60 s");
    check!(flusher_listed.starts_with("[kworker/u"), "no unbound worker was listed as +flush-kblk-slow while it wrote back (saw {flusher_listed:?})");
    let (w, r) = (writer_done.load(Ordering::Acquire) - start, reader_done.load(Ordering::Acquire) - start);
    check_eq!(reads.load(Ordering::Relaxed), 256, "reads that succeeded");
    check!(writeback::stats().throttled > throttled_before, "the writer was never throttled");
    check!(r < w, "the reader ({} ms) did not finish before the throttled writer ({} ms)", r / 1_000_000, w / 1_000_000);
    check!(w >= 500_000_000, "the writer finished in {} ms: 32 pages past the threshold on a 20-write/s disk cannot be written that fast", w / 1_000_000);
    let mut cursor = writer_cache.cursor();
    check_eq!(writer_cache.sync(&mut cursor), Ok(()), "sync");
    for k in 0..48usize {
        image_check("kblk-slow", (SLOW_AREA + k as u64 * SLOW_STRIDE) / SECTOR_SIZE as u64, &data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE]);
    }
    Ok(())
});

ktest!(writeback::sync_on_a_slow_disk_sleeps_while_other_threads_run [timeout_s = 120] => |ctx| {
    let slow = disk(ctx, "kblk-slow")?;
    let _s = Settings::set(&[])?;
    let cache = PageCache::new(slow).map_err(err("page cache"))?;
    // Ten pages two apart after the throttle case's range.
    let at = SLOW_AREA + 48 * SLOW_STRIDE;
    let data: Vec<u8> = (0..10 * PAGE_SIZE).map(|_| ctx.rng.next_u64() as u8).collect();
    for k in 0..10usize {
        check_eq!(cache.write(at + k as u64 * SLOW_STRIDE, &data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE]), Ok(PAGE_SIZE), "write page {}", k);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let spins = Arc::new(AtomicU64::new(0));
    let (st, sp) = (stop.clone(), spins.clone());
    // Pinned to this CPU: it runs only if sync really sleeps.
    let me = port().cpu_id();
    let other = spawn_on("wb-other", CpuMask::one(me), move || {
        while !st.load(Ordering::Acquire) {
            sp.fetch_add(1, Ordering::Relaxed);
            port().yield_now();
        }
    });
    other.wake();
    let before = spins.load(Ordering::Relaxed);
    let t0 = port().now_ns();
    let mut cursor = cache.cursor();
    let r = cache.sync(&mut cursor);
    let took = port().now_ns() - t0;
    let during = spins.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Release);
    check_eq!(r, Ok(()), "sync");
    check_eq!(cache.stats().dirty, 0, "dirty pages after sync");
    check!(during > 0, "no other thread ran on this CPU during a {} ms sync", took / 1_000_000);
    check!(wait_for(5_000, || other.state() == kport::TaskState::Dead), "the other thread did not end");
    for k in 0..10usize {
        image_check("kblk-slow", (at + k as u64 * SLOW_STRIDE) / SECTOR_SIZE as u64, &data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE]);
    }
    Ok(())
});

ktest!(writeback::a_writeback_error_of_the_flusher_reaches_the_next_fsync => |ctx| {
    let err_disk = disk(ctx, "kblk-err")?;
    let _s = Settings::set(&[("dirty_expire_centisecs", 10), ("dirty_writeback_centisecs", 10)])?;
    let cache = PageCache::new(err_disk).map_err(err("page cache"))?;
    let mut before = cache.cursor();
    // Page 2 holds sector 16, whose writes fail.
    check_eq!(cache.write(2 * PAGE_SIZE as u64 + 100, &[9u8; 64]), Ok(64), "write into page 2");
    check!(wait_for(10_000, || cache.stats().errors >= 1), "the flusher never met the failing sector");
    check_eq!(cache.page_state(2).map(|s| s.0), Some(PageState::Dirty), "a page whose writeback failed is not clean");
    let mut after = cache.cursor();
    check_eq!(cache.check(&mut before).map_err(|e| e.errno), Err(EIO), "the flusher's error at the next fsync");
    check_eq!(cache.check(&mut before), Ok(()), "one error reported twice");
    check_eq!(cache.check(&mut after), Ok(()), "a cursor sampled after the error saw it");
    // Give the page up on purpose (it can never be written), as a
    // truncate would, so no flusher retries it after the case.
    check_eq!(cache.discard_range(0, 3 * PAGE_SIZE as u64), 1, "dirty pages discarded");
    Ok(())
});

// ---- benchmarks (docs/benchmarks.md, "Page cache and reclaim") ----

ktest!(writeback::bench_writeback_expire_latency [bench = true, timeout_s = 300] => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let _pin = crate::bench::Pinned::to(0);
    quiet_dirty(0)?;
    // Expiry 100 ms, a pass every 10 ms: a page dirtied with no sync is on
    // the device after about 100-110 ms plus the write.
    let _s = Settings::set(&[("dirty_expire_centisecs", 10), ("dirty_writeback_centisecs", 1)])?;
    let cache = PageCache::new(main).map_err(err("page cache"))?;
    let p = port();
    const SAMPLES: usize = 30;
    let mut samples = Vec::with_capacity(SAMPLES);
    let page = [0x3cu8; PAGE_SIZE];
    for k in 0..SAMPLES + 2 {
        // 14 MiB + 2 MiB - 64 KiB: the block write benchmark's area.
        let at = (16 << 20) - (64 << 10) + (k as u64 % 16) * PAGE_SIZE as u64;
        let t0 = p.cycles();
        check_eq!(cache.write(at, &page), Ok(PAGE_SIZE), "write");
        let index = at / PAGE_SIZE as u64;
        check!(wait_for(10_000, || cache.page_state(index).is_some_and(|s| s.0 == PageState::Clean)), "page {} not written back in 10 s", index);
        let t1 = p.cycles();
        if k >= 2 {
            samples.push(t1 - t0);
        }
    }
    crate::bench::report_latency("writeback_expire_latency", &mut samples);
    Ok(())
});
