//! Suite `restart` (explicit): what was written through the page cache and
//! synced is still on the disk after the machine restarts.
//!
//! It takes two boots on the same disk images (the runner's `ktest restart`):
//! the first, with `restart=write`, writes a pattern over [`AREA`] of
//! `kblk-main` through a fresh [`PageCache`] and syncs it; the second, with
//! `restart=verify`, reads the area back through another fresh cache (so
//! every page comes from the disk) and compares every byte. The pattern
//! comes from `restart_seed=` (both boots get the same one) and differs from
//! the runner's fresh-image pattern, so a write that never reached the disk
//! shows. Both phases print `block-image` lines, so the runner also checks
//! the image file after each boot. A case whose phase is not this boot's
//! skips; with no `restart=` both skip.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use drivers::block::SECTOR_SIZE;
use drivers::pagecache::{PAGE_SIZE, PageCache};

use crate::args::RestartPhase;
use crate::block::{disk, image_check};
use crate::{Failure, check, check_eq, fail, ktest, skip};

/// Where the pattern goes on kblk-main: 13 MiB + 64 KiB, clear of the
/// few bytes a Redox user program writes at 13 MiB + 777 and of every other
/// suite's area (`pagecache` at 11 MiB, the block storms at 10 and 12 MiB,
/// the block benchmarks from 14 MiB).
pub const AREA: u64 = (13 << 20) + (64 << 10);

/// Length of the area in bytes (whole pages).
pub const AREA_LEN: usize = 512 << 10;

/// The pattern's seed when the command line gives no `restart_seed=`.
pub const DEFAULT_SEED: u64 = 0x7e57_a27e_5eed_0001;

/// Bytes at the start of the area written last (not a page's worth, so the
/// first write begins off a page boundary and the last ones are partial pages).
const HEAD: usize = 1000;

/// Bytes at the end of the area written last.
const TAIL: usize = 700;

/// The byte the pattern seeded with `seed` has at disk offset `pos`: one
/// splitmix64 output per 8 bytes, taken little-endian.
pub fn pattern_byte(seed: u64, pos: u64) -> u8 {
    let mut x = seed ^ (pos / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x.to_le_bytes()[(pos % 8) as usize]
}

/// The pattern's `len` bytes from disk offset `start`.
fn pattern(seed: u64, start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|k| pattern_byte(seed, start + k)).collect()
}

/// This boot's seed, if `want` is this boot's phase; otherwise the case skips.
fn phase(ctx: &crate::Ctx, want: RestartPhase) -> Result<u64, Failure> {
    match ctx.args.restart {
        Some(p) if p == want => Ok(ctx.args.restart_seed.unwrap_or(DEFAULT_SEED)),
        Some(p) => skip(format!("this boot is restart={}, the case runs with restart={}", p.name(), want.name())),
        None => skip("no restart= on the command line (ktest restart boots with restart=write, then restart=verify)"),
    }
}

ktest!(restart::write_phase_writes_the_pattern_and_syncs_it [explicit = true] => |ctx| {
    let seed = phase(ctx, RestartPhase::Write)?;
    let main = disk(ctx, "kblk-main")?;
    let cache = PageCache::new(main).map_err(|e| Failure::Fail(format!("page cache: {e:?}")))?;
    let mut cursor = cache.cursor();
    let want = pattern(seed, AREA, AREA_LEN);
    let put = |from: usize, to: usize| -> Result<(), Failure> {
        let at = AREA + from as u64;
        check_eq!(cache.write(at, &want[from..to]), Ok(to - from), "write of {} bytes at {at}", to - from);
        Ok(())
    };
    // The middle first, from an offset inside a page, in pieces of 1 byte
    // to 3 pages that start and end anywhere in a page; then the head and
    // the tail, partial pages whose other bytes the cache already holds.
    let (mut at, end) = (HEAD, AREA_LEN - TAIL);
    while at < end {
        let n = (1 + ctx.rng.below(3 * PAGE_SIZE as u64) as usize).min(end - at);
        put(at, at + n)?;
        at += n;
    }
    put(0, HEAD)?;
    put(end, AREA_LEN)?;
    check_eq!(cache.sync(&mut cursor), Ok(()), "sync");
    check_eq!(cache.stats().dirty, 0, "dirty pages after sync");
    image_check("kblk-main", AREA / SECTOR_SIZE as u64, &want);
    crate::diag!("restart: wrote {AREA_LEN} bytes at {AREA} with seed {seed}");
    Ok(())
});

ktest!(restart::verify_phase_reads_the_pattern_back_from_the_disk [explicit = true] => |ctx| {
    let seed = phase(ctx, RestartPhase::Verify)?;
    let main = disk(ctx, "kblk-main")?;
    let cache = PageCache::new(main.clone()).map_err(|e| Failure::Fail(format!("page cache: {e:?}")))?;
    let reads = main.stats().ios[0];
    let mut got = vec![0u8; AREA_LEN];
    check_eq!(cache.read(AREA, &mut got), Ok(AREA_LEN), "read of the area through a fresh cache");
    // Cold: nothing came from memory this boot kept.
    let stats = cache.stats();
    check_eq!((stats.misses, stats.hits), ((AREA_LEN / PAGE_SIZE) as u64, 0), "(misses, hits) of the cold read");
    check!(main.stats().ios[0] > reads, "the cold read made no device read");
    let want = pattern(seed, AREA, AREA_LEN);
    if let Some(first) = (0..AREA_LEN).find(|&i| got[i] != want[i]) {
        let differ = (first..AREA_LEN).filter(|&i| got[i] != want[i]).count();
        let pos = AREA + first as u64;
        let fresh = crate::block::pattern_byte(pos / SECTOR_SIZE as u64, (pos % SECTOR_SIZE as u64) as usize);
        let hint = if got[first] == fresh { ", the fresh image's byte: the write never reached the disk" } else { "" };
        return fail(format!(
            "first mismatch at disk offset {pos} (area + {first}): read {:#04x}, written {:#04x}{hint}; \
             {differ} of {AREA_LEN} bytes differ (seed {seed})",
            got[first], want[first]
        ));
    }
    image_check("kblk-main", AREA / SECTOR_SIZE as u64, &want);
    crate::diag!("restart: {AREA_LEN} bytes at {AREA} read back with seed {seed}");
    Ok(())
});
