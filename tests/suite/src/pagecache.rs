//! Suite `pagecache`: the page cache over the block suite's disks (the
//! runner gives them to boots with `block` or `pagecache`): writes stay in
//! the cache until `fsync`/`sync` and then are on the device (the runner
//! checks the image), reads hit the cache, pages get their second chance,
//! and a writeback error reaches `fsync` with the page left dirty.

use alloc::format;
use alloc::vec::Vec;

use drivers::block::SECTOR_SIZE;
use drivers::pagecache::{PAGE_SIZE, PageCache, PageState};
use kport::EIO;

use crate::block::{disk, holds_pattern, image_check, pattern_byte};
use crate::{check, check_eq, err, ktest};

/// Where the cases write on kblk-main: 11 MiB, a megabyte no other suite uses.
const AREA: u64 = 11 << 20;

ktest!(pagecache::written_data_reaches_the_disk_at_sync_not_before => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let cache = PageCache::new(main.clone()).map_err(err("page cache"))?;
    let mut cursor = cache.cursor();
    let at = AREA + 1000;
    let data: Vec<u8> = (0..20_000).map(|_| ctx.rng.next_u64() as u8).collect();
    check_eq!(cache.write(at, &data), Ok(data.len()), "write through the cache");
    let mut back = alloc::vec![0u8; data.len()];
    check_eq!(cache.read(at, &mut back), Ok(data.len()), "read back through the cache");
    check!(back == data, "the cache gave back other bytes");
    let first = at / PAGE_SIZE as u64 * PAGE_SIZE as u64;
    let end = (at + data.len() as u64).next_multiple_of(PAGE_SIZE as u64);
    check_eq!(cache.stats().dirty, (end - first) / PAGE_SIZE as u64, "dirty pages");
    check!(cache.page_state(first / PAGE_SIZE as u64).is_some_and(|s| s.0 == PageState::Dirty && s.1 > 0), "a written page is dirty with its dirtied_when");
    // Not on the device yet: it still holds the runner's pattern there.
    let disk_now = main.read(first / SECTOR_SIZE as u64, (end - first) as usize).map_err(err("device read"))?;
    holds_pattern(disk_now.as_slice(), first / SECTOR_SIZE as u64)?;
    check_eq!(cache.sync(&mut cursor), Ok(()), "sync");
    check_eq!(cache.stats().dirty, 0, "dirty pages after sync");
    let disk_now = main.read(first / SECTOR_SIZE as u64, (end - first) as usize).map_err(err("device read"))?;
    let mut want: Vec<u8> = (0..(end - first)).map(|k| pattern_byte((first + k) / 512, ((first + k) % 512) as usize)).collect();
    want[(at - first) as usize..(at - first) as usize + data.len()].copy_from_slice(&data);
    check!(disk_now.as_slice() == want.as_slice(), "after sync the device lacks what was written");
    image_check("kblk-main", first / SECTOR_SIZE as u64, &want);
    Ok(())
});

ktest!(pagecache::fsync_of_a_range_writes_only_that_range => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let cache = PageCache::new(main.clone()).map_err(err("page cache"))?;
    let mut cursor = cache.cursor();
    let (a, b) = (AREA + (256 << 10), AREA + (512 << 10));
    check_eq!(cache.write(a, &[0xa5; PAGE_SIZE]), Ok(PAGE_SIZE), "write page a");
    check_eq!(cache.write(b, &[0x5a; PAGE_SIZE]), Ok(PAGE_SIZE), "write page b");
    check_eq!(cache.fsync_range(&mut cursor, a, a + PAGE_SIZE as u64), Ok(()), "fsync of a's range");
    check_eq!(cache.page_state(a / PAGE_SIZE as u64).map(|s| s.0), Some(PageState::Clean), "page a after its fsync");
    check_eq!(cache.page_state(b / PAGE_SIZE as u64).map(|s| s.0), Some(PageState::Dirty), "page b after a's fsync");
    let on_disk = main.read(b / SECTOR_SIZE as u64, PAGE_SIZE).map_err(err("device read"))?;
    holds_pattern(on_disk.as_slice(), b / SECTOR_SIZE as u64)?;
    check_eq!(cache.sync(&mut cursor), Ok(()), "sync");
    image_check("kblk-main", a / SECTOR_SIZE as u64, &[0xa5; PAGE_SIZE]);
    image_check("kblk-main", b / SECTOR_SIZE as u64, &[0x5a; PAGE_SIZE]);
    Ok(())
});

ktest!(pagecache::a_second_read_hits_the_cache_and_activates_the_page => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let cache = PageCache::new(main.clone()).map_err(err("page cache"))?;
    let at = 3 << 20;
    let mut buf = alloc::vec![0u8; 2 * PAGE_SIZE];
    check_eq!(cache.read(at, &mut buf), Ok(buf.len()), "first read");
    holds_pattern(&buf, at / SECTOR_SIZE as u64)?;
    check_eq!(cache.page_state(at / PAGE_SIZE as u64).map(|s| s.2), Some(false), "a page read once is inactive");
    let reads = main.stats().ios[0];
    let misses = cache.stats().misses;
    check_eq!(cache.read(at, &mut buf), Ok(buf.len()), "second read");
    holds_pattern(&buf, at / SECTOR_SIZE as u64)?;
    check_eq!(main.stats().ios[0], reads, "device reads for a cached range");
    check_eq!(cache.stats().misses, misses, "misses for a cached range");
    check_eq!(cache.page_state(at / PAGE_SIZE as u64).map(|s| s.2), Some(true), "a page used twice moved to the active list");
    check_eq!(cache.stats().active, 2, "active pages");
    Ok(())
});

ktest!(pagecache::a_writeback_error_reaches_fsync_and_the_page_stays_dirty => |ctx| {
    let err_disk = disk(ctx, "kblk-err")?;
    let cache = PageCache::new(err_disk).map_err(err("page cache"))?;
    let mut a = cache.cursor();
    let mut b = cache.cursor();
    // Page 2 holds sector 16, whose writes fail.
    check_eq!(cache.write(2 * PAGE_SIZE as u64 + 600, &[7u8; 100]), Ok(100), "write into page 2");
    check_eq!(cache.fsync_range(&mut a, 0, 3 * PAGE_SIZE as u64).map_err(|e| e.errno), Err(EIO), "fsync over the failing sector");
    check_eq!(cache.page_state(2).map(|s| s.0), Some(PageState::Dirty), "the page whose writeback failed");
    check!(cache.stats().errors >= 1, "no writeback error counted");
    // Another caller that could see the error gets it too.
    check_eq!(cache.check(&mut b).map_err(|e| e.errno), Err(EIO), "a second cursor sampled before the error");
    check_eq!(cache.check(&mut b), Ok(()), "the same error reported twice to one cursor");
    // The page can never be written: give it up, as a truncate would.
    check_eq!(cache.discard_range(0, 3 * PAGE_SIZE as u64), 1, "dirty pages discarded");
    Ok(())
});

// ---- benchmarks (docs/benchmarks.md, "Page cache and reclaim") ----

ktest!(pagecache::bench_cache_read_hit_4k [bench = true, timeout_s = 300] => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let _pin = crate::bench::Pinned::to(0);
    let cache = PageCache::new(main).map_err(err("page cache"))?;
    // 256 pages of the read-only pattern area, all cached before timing.
    const PAGES: u64 = 256;
    let mut buf = alloc::vec![0u8; PAGE_SIZE];
    for i in 0..PAGES {
        cache.read(i * PAGE_SIZE as u64, &mut buf).map_err(err("warm read"))?;
    }
    let p = kport::port();
    let misses = cache.stats().misses;
    let mut samples = Vec::with_capacity(crate::bench::ITERATIONS);
    for k in 0..crate::bench::ITERATIONS + crate::bench::WARMUP {
        let at = (ctx.rng.next_u64() % PAGES) * PAGE_SIZE as u64;
        let t0 = p.cycles();
        let r = cache.read(at, &mut buf);
        let t1 = p.cycles();
        check_eq!(r, Ok(PAGE_SIZE), "read {}", k);
        if k >= crate::bench::WARMUP {
            samples.push(t1 - t0);
        }
    }
    check_eq!(cache.stats().misses, misses, "misses while reading cached pages");
    crate::bench::report_latency("cache_read_hit_4k", &mut samples);
    Ok(())
});

ktest!(pagecache::bench_cache_write_seq_mib_s [bench = true, timeout_s = 300] => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let _pin = crate::bench::Pinned::to(0);
    // 2 MiB at 14 MiB (the block write benchmark's area; nothing reads it back).
    const AT: u64 = 14 << 20;
    const MIB: usize = 1 << 20;
    let data: Vec<u8> = (0..MIB).map(|_| ctx.rng.next_u64() as u8).collect();
    let p = kport::port();
    let cache = PageCache::new(main).map_err(err("page cache"))?;
    let mut cursor = cache.cursor();
    // One round to warm up (the pages get their buffers), then timed rounds:
    // 2 MiB through the cache, then sync (data on the device).
    let mut rounds = 0u64;
    let mut ns = 0u64;
    for round in 0..9 {
        let t0 = p.cycles();
        for m in 0..2u64 {
            check_eq!(cache.write(AT + m * MIB as u64, &data), Ok(MIB), "write");
        }
        check_eq!(cache.sync(&mut cursor), Ok(()), "sync");
        let t1 = p.cycles();
        if round > 0 {
            rounds += 1;
            ns += p.cycles_to_ns(t1 - t0);
        }
    }
    let mib = rounds * 2;
    crate::harness::diag_line(&format!("bench: cache_write_seq_mib_s items_per_s={} n={mib}", mib * 1_000_000_000 / ns.max(1)));
    Ok(())
});
