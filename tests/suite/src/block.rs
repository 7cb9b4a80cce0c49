//! Suite `block`: the virtio-blk driver and the block layer against the
//! disks the runner gives the guest (`tests/runner/src/disks.rs`):
//!
//! | serial | what |
//! |---|---|
//! | `kblk-main` | 16 MiB, writable, modern-only, two queues |
//! | `kblk-ro` | 1 MiB, read-only, transitional device, one queue |
//! | `kblk-err` | 1 MiB, EIO on reads of sector 8, writes of sector 16 and every flush |
//! | `kblk-slow` | 1 MiB, throttled to 20 requests a second, no MSI-X (the INTx line) |
//!
//! Every image starts with the runner's pattern ([`pattern_byte`]). Cases
//! that write print `block-image` lines; the runner checks those ranges of
//! the image byte for byte after the boot. On a port without a device
//! bus, or a boot without the disks, the cases skip.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use drivers::blk::Interrupts;
use drivers::block::{BlockBuf, BlockDevice, Op, SECTOR_SIZE};
use kport::sync::{Completion, SpinLock};
use kport::{CpuMask, EINVAL, EIO, EROFS, port};

use crate::port_api::{msleep, spawn_on, wait_for};
use crate::{Failure, check, check_eq, err, ktest, skip};

/// The runner's pattern: byte `i` of sector `s` (see the module doc of
/// the runner's `disks`).
pub fn pattern_byte(sector: u64, i: usize) -> u8 {
    if i < 8 { sector.to_le_bytes()[i] } else { (sector.wrapping_mul(31).wrapping_add(i as u64) & 0xff) as u8 }
}

/// FNV-1a, 64 bits, as the runner computes it.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// Ask the runner to compare a range of the image with what was written.
pub(crate) fn image_check(serial: &str, sector: u64, bytes: &[u8]) {
    crate::harness::diag_line(&format!(
        "block-image: serial={serial} sector={sector} count={} fnv1a64={:016x}",
        bytes.len() / SECTOR_SIZE,
        fnv1a64(bytes)
    ));
}

/// The disk with `serial`. Skipped where there is none, unless the runner
/// said it attached the disks (`expect_disks=1`): then a missing disk (or
/// device bus) is a failure.
pub(crate) fn disk(ctx: &crate::Ctx, serial: &str) -> Result<Arc<BlockDevice>, Failure> {
    let missing = |why: String| if ctx.args.expect_disks { Err(Failure::Fail(why)) } else { skip(why) };
    if port().device_bus().is_none() {
        return missing("this port has no device bus (inside Redox: the env word kblk=virtio)".into());
    }
    let disks = drivers::blk::probe_all().map_err(|e| Failure::Fail(format!("probe: {e:?}")))?;
    match disks.into_iter().find(|d| d.info().serial == serial) {
        Some(d) => Ok(d),
        None => missing(format!("no virtio-blk disk {serial} (the runner gives them to the block suite)")),
    }
}

/// Check that `buf` holds the runner's pattern for the sectors from `sector`.
pub(crate) fn holds_pattern(buf: &[u8], sector: u64) -> Result<(), Failure> {
    for (n, chunk) in buf.chunks(SECTOR_SIZE).enumerate() {
        let s = sector + n as u64;
        if let Some(i) = (0..SECTOR_SIZE).find(|&i| chunk[i] != pattern_byte(s, i)) {
            return Err(Failure::Fail(format!(
                "sector {s} byte {i}: {:#04x}, the image has {:#04x}",
                chunk[i],
                pattern_byte(s, i)
            )));
        }
    }
    Ok(())
}

/// Scratch area of `kblk-main` the writing cases use (the first 8 MiB
/// keep the pattern for the reading cases).
const SCRATCH: u64 = 16384;

ktest!(block::the_disks_are_found_with_their_features => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let i = main.info();
    check_eq!(i.capacity, 16 * 1024 * 1024 / 512, "kblk-main's capacity in sectors");
    check!(!i.read_only && i.flush, "kblk-main: read-only {} flush {}", i.read_only, i.flush);
    check_eq!(i.nr_hw_queues, 2, "kblk-main's hardware queues (num-queues=2)");
    let ro = disk(ctx, "kblk-ro")?;
    check!(ro.info().read_only, "kblk-ro is not read-only");
    check_eq!(ro.info().capacity, 2048, "kblk-ro's capacity");
    check_eq!(ro.info().nr_hw_queues, 1, "kblk-ro's hardware queues (num-queues=1)");
    check!(drivers::block::diskstats().contains("kblk-main"), "diskstats lacks kblk-main:\n{}", drivers::block::diskstats());
    // MSI-X wherever the port has message-signalled lines: a line per
    // queue and one for configuration; else the shared INTx line.
    let chip = port().irq_chip();
    let port_has_msi = chip.is_some_and(|c| match c.msi_alloc(0) {
        Ok(m) => {
            c.msi_free(m.irq);
            true
        }
        Err(_) => false,
    });
    let mode = drivers::blk::interrupts_of("kblk-main");
    match (&mode, port_has_msi) {
        (Some(Interrupts::Msix { queues, .. }), true) => check_eq!(queues.len(), 2, "kblk-main's queue lines"),
        (Some(Interrupts::Intx(_)), false) => {}
        _ => return Err(Failure::Fail(format!("kblk-main's interrupts {mode:?} with message-signalled lines on the port: {port_has_msi}"))),
    }
    // kblk-slow has no MSI-X (vectors=0): the driver falls back to the
    // legacy INTx line, which the slow-disk case then exercises.
    disk(ctx, "kblk-slow")?;
    let slow = drivers::blk::interrupts_of("kblk-slow");
    check!(matches!(slow, Some(Interrupts::Intx(_))), "kblk-slow (no MSI-X) takes its interrupts by {slow:?}");
    Ok(())
});

ktest!(block::reads_find_the_runners_pattern => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    for (sector, len) in [(0u64, 512usize), (1, 4096), (100, 65536), (8000, 128 * 1024)] {
        let buf = main.read(sector, len).map_err(err("read"))?;
        holds_pattern(buf.as_slice(), sector)?;
    }
    // A transitional device reads the same way.
    let ro = disk(ctx, "kblk-ro")?;
    let buf = ro.read(7, 8192).map_err(err("read kblk-ro"))?;
    holds_pattern(buf.as_slice(), 7)
});

ktest!(block::round_trip_of_every_size_class => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let max = main.info().max_bytes;
    let mut sector = SCRATCH;
    for len in [512usize, 4096, 16384, 65536, 262144, max] {
        let mut buf = BlockBuf::new(len).map_err(err("buffer"))?;
        for b in buf.as_mut_slice() {
            *b = ctx.rng.next_u64() as u8;
        }
        let want: Vec<u8> = buf.as_slice().to_vec();
        let buf = main.write(sector, buf).map_err(|(e, _)| Failure::Fail(format!("write {len} at {sector}: {e:?}")))?;
        drop(buf);
        let back = main.read(sector, len).map_err(err("read back"))?;
        check!(back.as_slice() == want.as_slice(), "{len} bytes at sector {sector} read back differently");
        image_check("kblk-main", sector, &want);
        sector += (len / SECTOR_SIZE) as u64 + 8;
    }
    Ok(())
});

// A flush goes down to QEMU's block layer: kblk-err's blkdebug fails every
// flush that reaches its image (its flush_to_disk rule), so the EIO proves
// the FLUSH request got there, after a write (QEMU skips a flush with
// nothing written since the last); kblk-main's succeeds.
ktest!(block::flush_reaches_the_device => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let before = main.stats().ios[2];
    main.flush().map_err(err("flush"))?;
    check_eq!(main.stats().ios[2], before + 1, "flushes counted");
    let e = disk(ctx, "kblk-err")?;
    check!(e.info().flush, "kblk-err offers no FLUSH");
    // QEMU flushes the image only when something was written since the
    // last flush: write first.
    let mut buf = BlockBuf::new(512).map_err(err("buffer"))?;
    buf.as_mut_slice().fill(0x5a);
    e.write(17, buf).map_err(|(e, _)| Failure::Fail(format!("a write before the flush: {e:?}")))?;
    image_check("kblk-err", 17, &[0x5a; 512]);
    check_eq!(e.flush().map_err(|e| e.errno), Err(EIO), "a flush of kblk-err, whose image fails flushes");
    let ok = e.read(0, 512).map_err(err("a read after the failed flush"))?;
    holds_pattern(ok.as_slice(), 0)
});

ktest!(block::a_read_only_disk_refuses_writes => |ctx| {
    let ro = disk(ctx, "kblk-ro")?;
    let buf = BlockBuf::new(512).map_err(err("buffer"))?;
    let errors = ro.stats().errors;
    match ro.write(3, buf) {
        Err((e, Some(_))) => check_eq!(e.errno, EROFS, "a write to a read-only disk"),
        Err((e, None)) => return Err(Failure::Fail(format!("the refused write lost its buffer ({e:?})"))),
        Ok(_) => return Err(Failure::Fail("a write to a read-only disk succeeded".into())),
    }
    check_eq!(ro.stats().errors, errors, "a refused request never reached the device");
    let buf = ro.read(3, 512).map_err(err("the read after"))?;
    holds_pattern(buf.as_slice(), 3)
});

ktest!(block::an_injected_io_error_is_eio_and_the_disk_goes_on => |ctx| {
    let d = disk(ctx, "kblk-err")?;
    let errors = d.stats().errors;
    check_eq!(d.read(8, 512).err().map(|e| e.errno), Some(EIO), "a read of the failing sector 8");
    check_eq!(d.read(4, 4096).err().map(|e| e.errno), Some(EIO), "a read spanning sector 8");
    let ok = d.read(0, 4096).map_err(err("a read of good sectors after the error"))?;
    holds_pattern(ok.as_slice(), 0)?;
    let buf = BlockBuf::new(512).map_err(err("buffer"))?;
    match d.write(16, buf) {
        Err((e, _)) => check_eq!(e.errno, EIO, "a write of the failing sector 16"),
        Ok(_) => return Err(Failure::Fail("a write of the failing sector 16 succeeded".into())),
    }
    let mut buf = BlockBuf::new(512).map_err(err("buffer"))?;
    buf.as_mut_slice().fill(0x5a);
    d.write(17, buf).map_err(|(e, _)| Failure::Fail(format!("the write after: {e:?}")))?;
    image_check("kblk-err", 17, &[0x5a; 512]);
    check_eq!(d.stats().errors - errors, 3, "device errors counted");
    check_eq!(d.stats().in_flight, 0, "requests left in flight");
    Ok(())
});

ktest!(block::bad_requests_are_einval_and_the_disk_goes_on => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let cap = main.info().capacity;
    let cases: [(&str, u64, usize); 4] =
        [("at the end", cap, 512), ("across the end", cap - 1, 1024), ("far beyond", u64::MAX - 1, 512), ("not whole sectors", 0, 100)];
    for (what, sector, len) in cases {
        let buf = BlockBuf::new(len).map_err(err("buffer"))?;
        let (r, back) = main.submit_wait(Op::Read, sector, Some(buf));
        check_eq!(r.map_err(|e| e.errno), Err(EINVAL), "a read {what}");
        check!(back.is_some(), "the refused read {what} lost its buffer");
    }
    let buf = BlockBuf::new(512).map_err(err("buffer"))?;
    let (r, _) = main.submit_wait(Op::Flush, 0, Some(buf));
    check_eq!(r.map_err(|e| e.errno), Err(EINVAL), "a flush with data");
    let last = main.read(cap - 1, 512).map_err(err("the last sector"))?;
    holds_pattern(last.as_slice(), cap - 1)
});

/// Where each request finished: (submitting CPU, finishing CPU, in hard
/// IRQ, in softirq, succeeded).
type Landing = (usize, usize, bool, bool, bool);

/// `PER_CPU` 4 KiB requests from a thread bound to each CPU, all in flight
/// at once as far as the queues allow; returns where each finished and
/// the device's counters before and after.
/// Sectors of the window each storm's requests stay in (1 MiB).
const STORM_WINDOW: usize = 2048;

fn storm(
    main: &Arc<BlockDevice>,
    cpus: usize,
    area: u64,
    writes: bool,
) -> Result<(Vec<Landing>, drivers::block::IoStats), Failure> {
    const PER_CPU: usize = 48;
    let total = cpus * PER_CPU;
    let landed: Arc<SpinLock<Vec<Landing>>> = Arc::new(SpinLock::new(Vec::new()));
    let all = Arc::new(Completion::new());
    let before = main.stats();
    for cpu in 0..cpus {
        let (main, landed, all) = (main.clone(), landed.clone(), all.clone());
        let t = spawn_on(&format!("blk-sub/{cpu}"), CpuMask::one(cpu), move || {
            for n in 0..PER_CPU {
                let sub = port().cpu_id();
                let (l, a) = (landed.clone(), all.clone());
                let note = move |fin: usize, hard: bool, soft: bool, ok: bool| {
                    let mut g = l.lock();
                    g.push((sub, fin, hard, soft, ok));
                    if g.len() == total {
                        a.complete_all();
                    }
                };
                let Ok(buf) = BlockBuf::new(4096) else {
                    note(sub, false, false, false);
                    continue;
                };
                // Within a 1 MiB window whatever the CPU count (the
                // requests of many CPUs wrap and share sectors).
                let sector = area + ((cpu * PER_CPU + n) * 8 % STORM_WINDOW) as u64;
                let op = if writes && n % 2 == 1 { Op::Write } else { Op::Read };
                let note2 = note.clone();
                let r = main.submit(
                    op,
                    sector,
                    Some(buf),
                    Box::new(move |r, _| {
                        note2(port().cpu_id(), softirq::in_hardirq(), softirq::in_serving_softirq(), r.is_ok());
                    }),
                );
                if r.is_err() {
                    note(sub, false, false, false);
                }
            }
        });
        t.wake();
    }
    let finished = wait_for(120_000, || all.is_done());
    msleep(20);
    let got = landed.lock().clone();
    check!(finished, "{} of {total} requests finished", got.len());
    check!(got.iter().all(|l| l.4), "a request failed");
    check_eq!(got.len(), total, "finish callbacks (each request exactly once)");
    let after = main.stats();
    check_eq!(after.in_flight, 0, "requests left in flight");
    check_eq!((after.ios[0] + after.ios[1]) - (before.ios[0] + before.ios[1]), total as u64, "requests counted");
    let mut d = after;
    for k in 0..4 {
        d.finished_in[k] -= before.finished_in[k];
    }
    crate::harness::diag_line(&format!(
        "block: {total} requests, rq_affinity {}: in the interrupt on the submitter {}, by IPI {}, in softirq {}, in the interrupt elsewhere {}",
        main.rq_affinity(),
        d.finished_in[0],
        d.finished_in[1],
        d.finished_in[2],
        d.finished_in[3]
    ));
    Ok((got, d))
}

fn share_cache(a: usize, b: usize) -> bool {
    let (x, y) = (port().cpu_topology(a), port().cpu_topology(b));
    x.package == y.package && x.llc == y.llc
}

ktest!(block::many_in_flight_from_every_cpu_complete_once_where_blk_mq_says [timeout_s = 300] => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let ro = disk(ctx, "kblk-ro")?;
    let cpus = ctx.cpus;
    let nq = main.info().nr_hw_queues;
    // The CPU each submitting CPU's interrupt comes to: with MSI-X, queue
    // c % nq's line is aimed at CPU (c % nq) % cpus; with INTx, somewhere.
    let msix = matches!(drivers::blk::interrupts_of("kblk-main"), Some(Interrupts::Msix { .. }));
    let crosses = if msix { cpus > nq } else { cpus > 1 };
    // rq_affinity 1 (Linux's default): the submitter's CPU, or one that
    // shares its cache; always in interrupt context.
    let (got, _) = storm(&main, cpus, SCRATCH + 4096, true)?;
    for (sub, fin, hard, soft, _) in &got {
        check!(*hard || *soft, "a request from CPU {sub} finished outside interrupt context on CPU {fin}");
        check!(fin == sub || share_cache(*sub, *fin), "a request from CPU {sub} finished on CPU {fin}, which shares no cache with it");
    }
    // rq_affinity 2: always on the submitter; one that the interrupt
    // brought elsewhere went there by IPI and finished in its softirq.
    main.set_rq_affinity(2).map_err(err("rq_affinity 2"))?;
    let r = storm(&main, cpus, SCRATCH + 8192, true);
    main.set_rq_affinity(1).map_err(err("rq_affinity 1"))?;
    let (got, d) = r?;
    for (sub, fin, hard, soft, _) in &got {
        check_eq!(fin, sub, "with rq_affinity 2 a request finished away from its submitter");
        check!(*hard || *soft, "a request from CPU {sub} finished outside interrupt context");
    }
    check_eq!(d.finished_in[3], 0, "with rq_affinity 2 no request finishes in another CPU's interrupt");
    if crosses {
        check!(d.finished_in[1] > 0, "no request crossed CPUs by IPI: {:?}", d.finished_in);
        check!(got.iter().any(|l| l.3 && !l.2), "no request finished in softirq context");
    }
    check_eq!(main.set_rq_affinity(3).map_err(|e| e.errno), Err(EINVAL), "rq_affinity 3");
    // Each queue's MSI-X line went only to the CPU it was aimed at, CPU i
    // for queue i (queues no CPU maps to stay quiet).
    if let (Some(Interrupts::Msix { queues, .. }), Some(chip)) = (drivers::blk::interrupts_of("kblk-main"), port().irq_chip()) {
        for (i, line) in queues.iter().enumerate().filter(|(i, _)| *i < cpus) {
            let aim = i % cpus;
            let elsewhere: u64 = (0..cpus).filter(|c| *c != aim).map(|c| chip.count(*line, c)).sum();
            check!(chip.count(*line, aim) > 0, "queue {i}'s line {line} never fired on CPU {aim}");
            check_eq!(elsewhere, 0, "queue {i}'s line {line} fired away from CPU {aim}");
        }
    }
    // One hardware queue (kblk-ro): whatever CPU the interrupt reaches, a
    // request finishes in softirq context, on that CPU (rule 3, when the
    // CPUs share a cache) or its submitter's (rule 2), never in the
    // interrupt unless one CPU is all there is.
    let (got, d) = storm(&ro, cpus, 0, false)?;
    for (sub, fin, hard, soft, _) in &got {
        if cpus > 1 {
            check!(*soft && !*hard, "a request from CPU {sub} on a one-queue disk finished outside softirq on CPU {fin}");
        }
        check!(fin == sub || share_cache(*sub, *fin), "a request from CPU {sub} finished on CPU {fin}, which shares no cache with it");
    }
    if cpus > 1 {
        check_eq!(d.finished_in[1] + d.finished_in[2], (cpus * 48) as u64, "one-queue requests finished in softirq: {:?}", d.finished_in);
    }
    ro.set_rq_affinity(2).map_err(err("rq_affinity 2"))?;
    let r = storm(&ro, cpus, 0, false);
    ro.set_rq_affinity(1).map_err(err("rq_affinity 1"))?;
    let (got, d) = r?;
    check!(got.iter().all(|l| l.0 == l.1), "with rq_affinity 2 a one-queue request finished away from its submitter");
    if cpus > 1 {
        check!(d.finished_in[1] > 0, "no one-queue request crossed CPUs by IPI: {:?}", d.finished_in);
    }
    Ok(())
});

// A plug holds submissions back until it is dropped (Linux blk_start_plug/
// blk_finish_plug): the device hears of them then, all at once; a plug
// holding more than the queue takes hands them over as the queue fills, so
// it cannot deadlock.
ktest!(block::a_plug_holds_requests_until_it_is_dropped => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let finished = Arc::new(AtomicU64::new(0));
    let submit = |plug: &mut drivers::block::Plug, n: u64| -> Result<(), Failure> {
        for i in 0..n {
            let buf = BlockBuf::new(4096).map_err(err("buffer"))?;
            let f = finished.clone();
            plug.submit(Op::Read, i * 8, Some(buf), Box::new(move |r, _| {
                if r.is_ok() {
                    f.fetch_add(1, Ordering::SeqCst);
                }
            }))
            .map_err(|(e, _)| Failure::Fail(format!("submit: {e:?}")))?;
        }
        Ok(())
    };
    let _pin = crate::bench::Pinned::to(0);
    let mut plug = main.plug();
    submit(&mut plug, 10)?;
    msleep(30);
    check_eq!(finished.load(Ordering::SeqCst), 0, "requests finished while the plug held them");
    check_eq!(main.stats().in_flight, 10, "requests in flight under the plug");
    drop(plug);
    check!(wait_for(10_000, || finished.load(Ordering::SeqCst) == 10), "{} of 10 finished after the unplug", finished.load(Ordering::SeqCst));
    // More than a queue holds (42 requests of 3 descriptors in 128).
    let mut plug = main.plug();
    submit(&mut plug, 100)?;
    drop(plug);
    check!(wait_for(30_000, || finished.load(Ordering::SeqCst) == 110), "{} of 110 finished", finished.load(Ordering::SeqCst));
    check_eq!(main.stats().in_flight, 0, "requests left in flight");
    Ok(())
});

ktest!(block::a_slow_disk_blocks_only_its_waiters [timeout_s = 120] => |ctx| {
    let slow = disk(ctx, "kblk-slow")?;
    let reads = 12u64;
    let done = Arc::new(AtomicU64::new(0));
    let (s2, d2) = (slow.clone(), done.clone());
    let reader = spawn_on("blk-slow-reader", CpuMask::ALL, move || {
        for i in 0..reads {
            if s2.read(i * 8, 512).is_ok() {
                d2.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    reader.wake();
    // This thread keeps running while the reader waits on the disk: count
    // the rounds in which the disk had a request in flight.
    let mut rounds_while_busy = 0u64;
    let mut last = String::new();
    let finished = wait_for(60_000, || {
        if slow.stats().in_flight > 0 {
            rounds_while_busy += 1;
        }
        last = format!("{} of {reads} reads done", done.load(Ordering::SeqCst));
        done.load(Ordering::SeqCst) == reads
    });
    check!(finished, "the slow reads did not finish: {last}");
    check!(rounds_while_busy >= 10, "only {rounds_while_busy} rounds of another thread ran while the slow disk had a request in flight");
    Ok(())
});

// ---- benchmarks (docs/benchmarks.md, "Block"); the same five run on Linux's
// virtio-blk from user space (tests/bench-linux/blkbench.c) ----

/// Samples of the latency benchmarks.
const BLK_SAMPLES: usize = 2000;
/// Warm-up requests of every benchmark.
const BLK_WARMUP: usize = 100;

/// A random 4 KiB-aligned sector in `[first, first + sectors)`.
fn random_4k(rng: &mut crate::rng::Rng, first: u64, sectors: u64) -> u64 {
    first + rng.below(sectors / 8) * 8
}

/// Latencies (cycles) of `n` one-at-a-time 4 KiB requests of `op` at
/// random offsets in `[first, first + sectors)` on `d`, after a warm-up.
fn qd1(
    d: &Arc<BlockDevice>,
    ctx: &mut crate::Ctx,
    op: Op,
    first: u64,
    sectors: u64,
    n: usize,
) -> Result<Vec<u64>, Failure> {
    let p = port();
    let mut buf = Some(BlockBuf::new(4096).map_err(err("buffer"))?);
    let mut samples = Vec::with_capacity(n);
    for i in 0..BLK_WARMUP + n {
        let sector = random_4k(&mut ctx.rng, first, sectors);
        let t0 = p.cycles();
        let (r, back) = d.submit_wait(op, sector, buf.take());
        let t1 = p.cycles();
        r.map_err(err("request"))?;
        buf = back;
        if i >= BLK_WARMUP {
            samples.push(t1 - t0);
        }
    }
    Ok(samples)
}

ktest!(block::bench_blk_read_4k_qd1 [bench = true, timeout_s = 300] => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let _pin = crate::bench::Pinned::to(0);
    let mut s = qd1(&main, ctx, Op::Read, 0, 16384, BLK_SAMPLES)?;
    crate::bench::report_latency("blk_read_4k_qd1", &mut s);
    Ok(())
});

ktest!(block::bench_blk_write_4k_qd1 [bench = true, timeout_s = 300] => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let _pin = crate::bench::Pinned::to(0);
    // The last 2 MiB: no case reads them back.
    let mut s = qd1(&main, ctx, Op::Write, 28672, 4096, BLK_SAMPLES)?;
    crate::bench::report_latency("blk_write_4k_qd1", &mut s);
    Ok(())
});

ktest!(block::bench_blk_read_4k_qd32 [bench = true, timeout_s = 300] => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let _pin = crate::bench::Pinned::to(0);
    const DEPTH: usize = 32;
    const COUNTED: usize = 8192;
    const WARM: usize = 256;
    // The callbacks give buffers back to a pool and wake the submitter,
    // which keeps DEPTH requests in flight.
    let pool: Arc<SpinLock<Vec<BlockBuf>>> = Arc::new(SpinLock::new(Vec::new()));
    for _ in 0..DEPTH {
        let b = BlockBuf::new(4096).map_err(err("buffer"))?;
        pool.lock().push(b);
    }
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let wq = Arc::new(kport::sync::WaitQueue::new());
    let p = port();
    let mut issued = 0usize;
    let mut t0 = 0;
    while (done.load(Ordering::Acquire) as usize) < WARM + COUNTED {
        // Read the count before looking at the pool: a completion between
        // the two then shows as a changed count.
        let seen = done.load(Ordering::Acquire);
        if seen as usize >= WARM && t0 == 0 {
            t0 = p.cycles();
        }
        {
            // Every buffer back since the last round goes out in one batch:
            // the device hears of them once (a plug, as io_submit's).
            let mut plug = main.plug();
            while issued < WARM + COUNTED {
                let next = pool.lock().pop();
                let Some(buf) = next else { break };
                let sector = random_4k(&mut ctx.rng, 0, 16384);
                let (pool2, done2, failed2, wq2) = (pool.clone(), done.clone(), failed.clone(), wq.clone());
                let r = plug.submit(Op::Read, sector, Some(buf), Box::new(move |r, b| {
                    if r.is_err() {
                        failed2.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(b) = b {
                        pool2.lock().push(b);
                    }
                    done2.fetch_add(1, Ordering::AcqRel);
                    wq2.wake_all();
                }));
                if let Err((e, _)) = r {
                    return Err(Failure::Fail(format!("submit: {e:?}")));
                }
                issued += 1;
            }
        }
        // Wait for a completion; a request lost by the driver shows as no
        // progress for 10 s.
        let moved = wq.wait_event_deadline("blk_qd32", p.now_ns() + 10_000_000_000, || done.load(Ordering::Acquire) != seen);
        check!(moved, "no completion in 10 s: {seen} done of {issued} issued, {} in flight", main.stats().in_flight);
    }
    let t1 = p.cycles();
    check_eq!(failed.load(Ordering::Relaxed), 0, "failed reads");
    crate::bench::report_throughput("blk_read_4k_qd32", COUNTED as u64, p.cycles_to_ns(t1 - t0));
    Ok(())
});

ktest!(block::bench_blk_read_seq_mib_s [bench = true, timeout_s = 300] => |ctx| {
    let main = disk(ctx, "kblk-main")?;
    let _pin = crate::bench::Pinned::to(0);
    const MIB: usize = 1 << 20;
    if main.info().max_bytes < MIB {
        return skip(format!("kblk-main takes at most {} bytes a request", main.info().max_bytes));
    }
    let p = port();
    let mut buf = Some(BlockBuf::new(MIB).map_err(err("buffer"))?);
    let (r, back) = main.submit_wait(Op::Read, 0, buf.take());
    r.map_err(err("warm-up"))?;
    buf = back;
    let total = main.info().capacity / (MIB / SECTOR_SIZE) as u64;
    let t0 = p.cycles();
    let mut n = 0u64;
    for _ in 0..2 {
        for m in 0..total {
            let (r, back) = main.submit_wait(Op::Read, m * (MIB / SECTOR_SIZE) as u64, buf.take());
            r.map_err(err("read"))?;
            buf = back;
            n += 1;
        }
    }
    let ns = p.cycles_to_ns(p.cycles() - t0).max(1);
    crate::harness::diag_line(&format!("bench: blk_read_seq_mib_s items_per_s={} n={n}", n * 1_000_000_000 / ns));
    Ok(())
});

ktest!(block::bench_blk_complete_cross_cpu [bench = true, min_cpus = 2, timeout_s = 300] => |ctx| {
    let ro = disk(ctx, "kblk-ro")?;
    // kblk-ro has one queue; its interrupt goes to CPU 0 (MSI-X entry 1
    // aimed there, or the INTx line); the submitter sits on the last CPU.
    let last = ctx.cpus - 1;
    let _pin = crate::bench::Pinned::to(last);
    let mut s = qd1(&ro, ctx, Op::Read, 0, 2048, BLK_SAMPLES)?;
    crate::bench::report_latency("blk_complete_cross_cpu", &mut s);
    Ok(())
});
