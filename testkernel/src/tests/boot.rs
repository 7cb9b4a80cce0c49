//! Suite `boot`: the machine came up as QEMU was told.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kport::sync::Completion;
use kport::{CpuMask, port};
use ktests::port_api::{msleep, spawn_on};
use ktests::{check, check_eq, ktest};

use crate::{bootinfo, mem, percpu, time};

/// Run `f(cpu)` on every CPU in a bound context and wait for all.
fn on_every_cpu(f: impl Fn(usize) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let n = port().cpu_count();
    let done = Arc::new(Completion::new());
    let left = Arc::new(AtomicUsize::new(n));
    for cpu in 0..n {
        let (f, d, l) = (f.clone(), done.clone(), left.clone());
        spawn_on("boot-percpu", CpuMask::one(cpu), move || {
            f(cpu);
            if l.fetch_sub(1, Ordering::AcqRel) == 1 {
                d.complete_all();
            }
        })
        .wake();
    }
    done.wait("on_every_cpu");
}

ktest!(boot::cpus_online_as_qemu_was_told => |ctx| {
    let up = percpu::cpus_up();
    check_eq!(up, percpu::present(), "CPUs started vs CPUs in the MADT");
    if let Some(n) = ctx.args.expect_cpus {
        check_eq!(up, n, "CPUs started vs QEMU's -smp");
    }
    check_eq!(crate::sched::online_mask(), crate::sched::present_mask());
    Ok(())
});

ktest!(boot::frame_counters_add_up_to_memory_map => |ctx| {
    let c = mem::frames::counters();
    check_eq!(c.total, bootinfo::usable_frames(), "allocator total vs memory map");
    check_eq!(c.free + c.used + c.reserved, c.total, "free + used + reserved");
    check!(c.free > 0 && c.used > 0 && c.reserved > 0, "{c:?}");
    // Allocating and freeing moves frames between free and used only (other
    // CPUs may allocate or free meanwhile, so only the sums are exact).
    let pa = mem::frames::alloc(3).ok_or(ktests::Failure::Fail("order-3 allocation failed".into()))?;
    let c2 = mem::frames::counters();
    check_eq!(c2.free + c2.used + c2.reserved, c2.total);
    check_eq!(c2.reserved, c.reserved);
    mem::frames::free(pa, 3);
    let c3 = mem::frames::counters();
    check_eq!(c3.free + c3.used + c3.reserved, c3.total);
    Ok(())
});

ktest!(boot::buddy_merges_back => |ctx| {
    // On a private allocator over one 4 MiB block: split into 1024 single
    // frames, free them in random order, and they must merge back into the
    // one block.
    let order = mem::frames::MAX_ORDER;
    let mut rng = ctx.rng.clone();
    let hist = mem::frames::self_test_merge(order, |frames| {
        for i in (1..frames.len()).rev() {
            frames.swap(i, rng.below(i as u64 + 1) as usize);
        }
    })
    .ok_or(ktests::Failure::Fail("no free 4 MiB block".into()))?;
    let mut want = [0u64; mem::frames::MAX_ORDER + 1];
    want[order] = 1;
    check_eq!(hist, want, "free blocks per order after freeing every frame");
    Ok(())
});

ktest!(boot::heap_allocations_from_every_cpu => |ctx| {
    let bad = Arc::new(AtomicUsize::new(0));
    let b = bad.clone();
    let seed = ctx.seed;
    on_every_cpu(move |cpu| {
        let mut rng = ktests::rng::Rng::new(seed, "heap");
        let mut blocks: Vec<(Vec<u8>, u8)> = Vec::new();
        for i in 0..400 {
            let size = match i % 4 {
                0 => 1 + rng.below(64) as usize,
                1 => 64 + rng.below(4096) as usize,
                2 => 4096 + rng.below(65536) as usize,
                _ => 1 << rng.below(18),
            };
            let fill = (cpu * 31 + i) as u8;
            blocks.push((alloc::vec![fill; size], fill));
            if blocks.len() > 16 {
                let (v, f) = blocks.remove(rng.below(blocks.len() as u64) as usize);
                if v.iter().any(|&x| x != f) {
                    b.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        for (v, f) in blocks {
            if v.iter().any(|&x| x != f) {
                b.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    check_eq!(bad.load(Ordering::SeqCst), 0, "heap blocks were corrupted");
    Ok(())
});

ktest!(boot::heap_blocks_freed_on_another_cpu_come_back_whole [min_cpus = 2] => |ctx| {
    // Small blocks made on CPU 0 and freed on CPU 1 go through CPU 1's
    // cache: their contents arrive intact, the cache never holds more than
    // its bound, and the bytes in use drop by what was freed.
    const N: usize = 3 * mem::heap::CACHE_MAX;
    const SIZE: usize = 100;
    let made: Arc<kport::sync::SpinLock<Vec<Vec<u8>>>> = Arc::new(kport::sync::SpinLock::new(Vec::new()));
    let done = Arc::new(Completion::new());
    let (m, d) = (made.clone(), done.clone());
    spawn_on("heap-make", CpuMask::one(0), move || {
        let v: Vec<Vec<u8>> = (0..N).map(|i| alloc::vec![i as u8; SIZE]).collect();
        *m.lock() = v;
        d.complete_all();
    })
    .wake();
    done.wait("heap-make");
    let bad = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let freed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Completion::new());
    let (m, d, b, mo, fr) = (made.clone(), done.clone(), bad.clone(), most.clone(), freed.clone());
    spawn_on("heap-free", CpuMask::one(1), move || {
        let v = core::mem::take(&mut *m.lock());
        let before = mem::heap::usage().0;
        for (i, block) in v.into_iter().enumerate() {
            if block.len() != SIZE || block.iter().any(|&x| x != i as u8) {
                b.fetch_add(1, Ordering::SeqCst);
            }
            drop(block);
            let high = mem::heap::cached_here().into_iter().max().unwrap_or(0);
            mo.fetch_max(high, Ordering::SeqCst);
        }
        fr.store(before.saturating_sub(mem::heap::usage().0), Ordering::SeqCst);
        d.complete_all();
    })
    .wake();
    done.wait("heap-free");
    check_eq!(bad.load(Ordering::SeqCst), 0, "blocks changed on their way to the other CPU");
    check!(most.load(Ordering::SeqCst) <= mem::heap::CACHE_MAX, "a cache held {} blocks", most.load(Ordering::SeqCst));
    // The blocks and the vector that held them; other CPUs' allocations
    // meanwhile may hide a little of it.
    let want = (N * SIZE) as u64;
    check!(freed.load(Ordering::SeqCst) >= want, "heap bytes in use fell by {}, not {want}", freed.load(Ordering::SeqCst));
    Ok(())
});

ktest!(boot::timer_ticks_on_every_cpu => |ctx| {
    let n = percpu::cpus_up();
    let before: Vec<u64> = (0..n).map(|c| percpu::PERCPU[c].ticks.load(Ordering::Relaxed)).collect();
    msleep(100);
    for (c, &b) in before.iter().enumerate() {
        let after = percpu::PERCPU[c].ticks.load(Ordering::Relaxed);
        check!(after > b, "cpu {c} took no timer interrupt in 100 ms");
    }
    Ok(())
});

ktest!(boot::clock_never_goes_backwards_on_any_cpu => |ctx| {
    // Every CPU reads the clock in a loop; a value published by one CPU is
    // never ahead of a later read on another.
    static LAST: AtomicU64 = AtomicU64::new(0);
    LAST.store(time::now_ns(), Ordering::SeqCst);
    let bad = Arc::new(AtomicU64::new(0));
    let b = bad.clone();
    on_every_cpu(move |_| {
        for i in 0..20_000 {
            let seen = LAST.load(Ordering::SeqCst);
            let t = time::now_ns();
            if t < seen {
                b.store(seen - t, Ordering::SeqCst);
            }
            LAST.fetch_max(t, Ordering::SeqCst);
            if i % 1000 == 0 {
                port().cond_resched();
            }
        }
    });
    check_eq!(bad.load(Ordering::SeqCst), 0, "the clock went backwards by that many ns");
    Ok(())
});
