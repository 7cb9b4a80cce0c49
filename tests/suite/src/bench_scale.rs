//! Explicit suites `scale` and `scale_tput`: how the costs grow with the
//! load (docs/benchmarks.md, "Scale"). Both run only when named in `tests=`
//! (`make bench-scale`), never in `make bench`; like every benchmark they
//! print `# bench:` lines and assert nothing about time.
//!
//! - `scale_tput`: the workqueue suite's own `wq_throughput_bound` and
//!   `wq_throughput_unbound`, alone, for a run per CPU count.
//! - `scale`: `kthread_create_run` with 10, 1 000 and 10 000 kernel threads
//!   alive; queueing and `flush_workqueue` with 10, 1 000 and 100 000 items
//!   in flight; memory per kernel thread, work item, idle worker and
//!   workqueue; workers brought in by 10 000 items that block.
//!
//! The Linux counterparts, under the same names, are in
//! `tests/bench-linux/kbench.c` (`kbench.set=scale` and `set=tput`).

use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kport::harness::{MemCounters, harness};
use kport::sync::{Completion, WaitQueue};
use kport::{TaskRef, port};
use kthreadd::kthread::{self, Builder, Kthread};
use workqueue::{DelayedWork, Work, Workqueue, WqFlags, system};

use crate::bench::{ITERATIONS, Pinned, THREAD_ITERATIONS, WARMUP, report_latency, report_throughput};
use crate::port_api::{msleep, wait_for};
use crate::{Failure, check, err, ktest};

const PAGE: u64 = 4096;

/// Print `# bench: NAME bytes=… n=…` (and any further pairs).
fn report_bytes(name: &str, bytes: u64, n: u64, more: &str) {
    crate::harness::diag_line(&format!("bench: {name} bytes={bytes} n={n}{more}"));
}

/// `n` threads that sleep until stopped (each on a wait queue of its own),
/// woken.
fn sleepers(n: usize, what: &str) -> Result<Vec<Kthread>, Failure> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let t = Builder::new(format_args!("{what}/{i}"), move || {
            let q = WaitQueue::new();
            kthread::wait_event_or_stop(&q, "alive", || false);
            0
        })
        .create();
        match t {
            Ok(t) => {
                t.wake();
                v.push(t);
            }
            Err(e) => {
                let _ = stop_all(v);
                return Err(Failure::Fail(format!("creating thread {i} of {n}: {e:?}")));
            }
        }
    }
    Ok(v)
}

/// Stop every thread of `v`; how long that took, in ms.
fn stop_all(v: Vec<Kthread>) -> u64 {
    let t0 = port().now_ns();
    for t in v {
        let _ = t.stop();
    }
    (port().now_ns() - t0) / 1_000_000
}

/// Wait until every thread of `v` has gone to sleep (polling every ms).
fn all_asleep(v: &[Kthread]) -> bool {
    v.iter().all(|t| wait_for(60_000, || !t.task().is_running() && t.task().state() != kport::TaskState::Running))
}

/// Room made in the heap before a memory reading (an allocation of this
/// size, freed): the heap grows from frames in 1 MiB steps and never gives
/// them back, so with room made the frames a measurement hands out are
/// stacks and page tables only, and the heap's part is its bytes in use.
const HEAP_ROOM: usize = 32 << 20;

/// A memory reading after making room in the heap, once memory freed
/// earlier has come back (threads stopped by an earlier case are reaped
/// lazily): four 250 ms windows in a row in which the frames in use moved by
/// at most 16 and the heap by at most 4 KiB, or the last reading of 60.
fn mem_reading() -> MemCounters {
    drop(Vec::<u8>::with_capacity(HEAP_ROOM));
    let mut last = harness().mem_counters();
    let mut quiet = 0;
    for _ in 0..60 {
        if quiet == 4 {
            break;
        }
        msleep(250);
        let now = harness().mem_counters();
        let still = now.used_frames.abs_diff(last.used_frames) <= 16 && now.heap_used.abs_diff(last.heap_used) <= 4096;
        quiet = if still { quiet + 1 } else { 0 };
        last = now;
    }
    last
}

/// Bytes taken between two readings: (frames handed out, heap bytes; either
/// negative when more was freed than taken).
fn mem_delta(before: &MemCounters, after: &MemCounters) -> (i64, i64) {
    let d = |a: u64, b: u64| a as i64 - b as i64;
    (d(after.used_frames, before.used_frames) * PAGE as i64, d(after.heap_used, before.heap_used))
}

/// Print `# bench: NAME bytes=… n=… frames_bytes=… heap_bytes=…` for `n`
/// objects that took the memory between two readings (`bytes` is never
/// below zero; the parts say where a negative came from).
fn report_mem(name: &str, before: &MemCounters, after: &MemCounters, n: u64) {
    let (frames, heap) = mem_delta(before, after);
    let n1 = n.max(1) as i64;
    let bytes = ((frames + heap) / n1).max(0) as u64;
    report_bytes(name, bytes, n, &format!(" frames_bytes={} heap_bytes={}", frames / n1, heap / n1));
}

// ---------------------------------------------------------------- throughput

ktest!(scale_tput::bench_wq_throughput_bound [bench = true, explicit = true, timeout_s = 600] => |ctx| {
    crate::workqueue::throughput("wq_throughput_bound", system::wq())
});

ktest!(scale_tput::bench_wq_throughput_unbound [bench = true, explicit = true, timeout_s = 600] => |ctx| {
    crate::workqueue::throughput("wq_throughput_unbound", system::unbound())
});

// ------------------------------------------------- creation with threads alive

/// The suite's `kthread_create_run` (kthread.rs), under `name`.
fn create_run(name: &str) -> Result<(), Failure> {
    let _pin = Pinned::to(0);
    let p = port();
    let mut v = Vec::with_capacity(THREAD_ITERATIONS);
    for i in 0..(THREAD_ITERATIONS + WARMUP / 10) {
        let first = Arc::new(AtomicU64::new(0));
        let ran = Arc::new(Completion::new());
        let (f, r) = (first.clone(), ran.clone());
        let t0 = p.cycles();
        let t = kthread::create_on_cpu(
            move || {
                f.store(port().cycles(), Ordering::SeqCst);
                r.complete_all();
                0
            },
            0,
            format_args!("bench/0"),
        )
        .map_err(err("create"))?;
        t.wake();
        ran.wait("bench");
        if i >= WARMUP / 10 {
            v.push(first.load(Ordering::SeqCst).wrapping_sub(t0));
        }
        let _ = t.stop();
    }
    report_latency(name, &mut v);
    Ok(())
}

fn create_run_alive(alive: usize) -> Result<(), Failure> {
    let t0 = port().now_ns();
    let threads = sleepers(alive, "alive")?;
    let made_ms = (port().now_ns() - t0) / 1_000_000;
    let r = create_run(&format!("kthread_create_run_alive_{alive}"));
    let stop_ms = stop_all(threads);
    crate::diag!("creating the {alive} threads took {made_ms} ms, stopping them {stop_ms} ms");
    r
}

ktest!(scale::bench_kthread_create_run_alive_10 [bench = true, explicit = true] => |ctx| { create_run_alive(10) });
ktest!(scale::bench_kthread_create_run_alive_1000 [bench = true, explicit = true] => |ctx| { create_run_alive(1000) });
ktest!(scale::bench_kthread_create_run_alive_10000 [bench = true, explicit = true, timeout_s = 900] => |ctx| {
    create_run_alive(10_000)
});

// ------------------------------------------------------------ items in flight

/// With `n` items in flight on an ordered queue, held behind a first item
/// that blocks on a gate:
///
/// - `wq_queue_depth_N`: the latency of queueing one more item (cancelled,
///   untimed, after each sample, so the depth stays `n`);
/// - then `reps` times: `flush_workqueue` called with the `n` items in
///   flight; a thread on CPU 1 opens the gate once the flusher sleeps.
///   `wq_flush_depth_N` is the time from the last item's end to the flush's
///   return, `wq_drain_depth_N` the rate the items ran at once released.
fn depth_case(n: usize, reps: usize) -> Result<(), Failure> {
    if port().cpu_count() < 2 {
        return crate::skip("needs 2 CPUs");
    }
    let _pin = Pinned::to(0);
    let p = port();
    let q = Workqueue::ordered("kbench_depth", WqFlags::empty()).map_err(err("alloc_ordered_workqueue"))?;
    let ran = Arc::new(AtomicUsize::new(0));
    let last_end = Arc::new(AtomicU64::new(0));
    let items: Vec<Work> = (0..n)
        .map(|_| {
            let (r, l) = (ran.clone(), last_end.clone());
            Work::named("depth_item", move || {
                if r.fetch_add(1, Ordering::SeqCst) + 1 == n {
                    l.store(port().cycles(), Ordering::SeqCst);
                }
            })
        })
        .collect();
    let probe = Work::named("depth_probe", || {});
    let flusher: TaskRef = p.current();
    let mut flush = Vec::with_capacity(reps);
    let mut drain_ns = 0u64;
    for rep in 0..reps {
        let gate = Arc::new(Completion::new());
        let started = Arc::new(AtomicUsize::new(0));
        let (g, s) = (gate.clone(), started.clone());
        let gate_item = Work::named("depth_gate", move || {
            s.store(1, Ordering::SeqCst);
            g.wait("gate");
        });
        ran.store(0, Ordering::SeqCst);
        q.queue(&gate_item);
        check!(wait_for(60_000, || started.load(Ordering::SeqCst) == 1), "the gate item never started");
        for it in &items {
            q.queue(it);
        }
        if rep == 0 {
            let mut v = Vec::with_capacity(ITERATIONS);
            for i in 0..(ITERATIONS + WARMUP) {
                let t0 = p.cycles();
                q.queue(&probe);
                let d = p.cycles().wrapping_sub(t0);
                if i >= WARMUP {
                    v.push(d);
                }
                probe.cancel();
            }
            report_latency(&format!("wq_queue_depth_{n}"), &mut v);
        }
        let released = Arc::new(AtomicU64::new(0));
        let (rel, g, f) = (released.clone(), gate.clone(), flusher.clone());
        let helper = kthread::create_on_cpu(
            move || {
                crate::bench::wait_asleep(&f);
                rel.store(port().cycles(), Ordering::SeqCst);
                g.complete_all();
                0
            },
            1,
            format_args!("release/1"),
        );
        let helper = match helper {
            Ok(h) => h,
            Err(e) => {
                gate.complete_all();
                let _ = q.flush();
                return Err(Failure::Fail(format!("create release/1: {e:?}")));
            }
        };
        helper.wake();
        q.flush().map_err(err("flush_workqueue"))?;
        let ret = p.cycles();
        let _ = helper.stop();
        let end = last_end.load(Ordering::SeqCst);
        flush.push(ret.wrapping_sub(end));
        drain_ns += p.cycles_to_ns(end.wrapping_sub(released.load(Ordering::SeqCst)));
    }
    report_latency(&format!("wq_flush_depth_{n}"), &mut flush);
    report_throughput(&format!("wq_drain_depth_{n}"), (n * reps) as u64, drain_ns);
    drop(items);
    q.destroy().map_err(err("destroy_workqueue"))?;
    Ok(())
}

ktest!(scale::bench_wq_depth_10 [bench = true, explicit = true, min_cpus = 2] => |ctx| { depth_case(10, 200) });
ktest!(scale::bench_wq_depth_1000 [bench = true, explicit = true, min_cpus = 2] => |ctx| { depth_case(1000, 20) });
ktest!(scale::bench_wq_depth_100000 [bench = true, explicit = true, min_cpus = 2, timeout_s = 900] => |ctx| {
    depth_case(100_000, 3)
});

// ------------------------------------------------------------------- memory

ktest!(scale::bench_mem_kthread [bench = true, explicit = true] => |ctx| {
    // 1 000 sleeping threads: the frames handed out for them (stacks, page
    // tables) and the heap bytes they took, per thread.
    const N: usize = 1000;
    msleep(200);
    let before = mem_reading();
    let threads = sleepers(N, "mem")?;
    let asleep = all_asleep(&threads);
    let after = mem_reading();
    let _ = stop_all(threads);
    check!(asleep, "the threads did not all go to sleep");
    report_mem("mem_kthread", &before, &after, N as u64);
    Ok(())
});

ktest!(scale::bench_mem_work_item [bench = true, explicit = true] => |ctx| {
    // A work item is a handle (size_of) to a heap record: the heap bytes per
    // item over 10 000 of them.
    const N: usize = 10_000;
    let h0 = harness().mem_counters().heap_used;
    let items: Vec<Work> = (0..N).map(|_| Work::new(|| {})).collect();
    let h1 = harness().mem_counters().heap_used;
    let per = h1.saturating_sub(h0).saturating_sub((N * core::mem::size_of::<Work>()) as u64) / N as u64;
    drop(items);
    let size = core::mem::size_of::<Work>();
    report_bytes("mem_work_item", per + size as u64, N as u64, &format!(" size_of={size} heap_bytes={per}"));
    let h0 = harness().mem_counters().heap_used;
    let items: Vec<DelayedWork> = (0..N).map(|_| DelayedWork::new(|| {})).collect();
    let h1 = harness().mem_counters().heap_used;
    let size = core::mem::size_of::<DelayedWork>();
    let per = h1.saturating_sub(h0).saturating_sub((N * size) as u64) / N as u64;
    drop(items);
    report_bytes("mem_delayed_work_item", per + size as u64, N as u64, &format!(" size_of={size} heap_bytes={per}"));
    Ok(())
});

/// Workers of CPU 0's normal pool.
fn cpu0_workers() -> usize {
    workqueue::pools().iter().find(|x| x.cpu == Some(0) && !x.highpri).map_or(0, |x| x.workers.len())
}

ktest!(scale::bench_mem_idle_worker [bench = true, explicit = true] => |ctx| {
    // 128 items that block together on CPU 0's pool make it bring in
    // workers; once they are done and idle, memory and workers against
    // before.
    const N: usize = 128;
    let gate = Arc::new(Completion::new());
    let started = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..N)
        .map(|_| {
            let (g, s) = (gate.clone(), started.clone());
            Work::named("idle_gate", move || {
                s.fetch_add(1, Ordering::SeqCst);
                g.wait("gate");
            })
        })
        .collect();
    msleep(200);
    let (w0, m0) = (cpu0_workers(), mem_reading());
    for it in &items {
        system::wq().queue_on(0, it);
    }
    let ok = wait_for(60_000, || started.load(Ordering::SeqCst) == N);
    gate.complete_all();
    for it in &items {
        it.flush();
    }
    msleep(200);
    let (w1, m1) = (cpu0_workers(), mem_reading());
    check!(ok, "the items did not all start");
    if w1 > w0 {
        report_mem("mem_idle_worker", &m0, &m1, (w1 - w0) as u64);
    } else {
        crate::diag!("no worker was added (before={w0} after={w1})");
    }
    Ok(())
});

ktest!(scale::bench_mem_workqueue [bench = true, explicit = true] => |ctx| {
    // 100 per-CPU workqueues (flags 0, max_active 0).
    const N: usize = 100;
    msleep(200);
    let names: Vec<alloc::string::String> = (0..N).map(|i| format!("kbm{i}")).collect();
    let mut qs = Vec::with_capacity(N);
    let m0 = mem_reading();
    for name in &names {
        qs.push(Workqueue::new(name, WqFlags::empty(), 0).map_err(err("alloc_workqueue"))?);
    }
    let m1 = mem_reading();
    for q in qs {
        q.destroy().map_err(err("destroy_workqueue"))?;
    }
    report_mem("mem_workqueue", &m0, &m1, N as u64);
    Ok(())
});

// ------------------------------------------------- concurrency under blocking

ktest!(scale::bench_wq_workers_blocking_10000 [bench = true, explicit = true, timeout_s = 900] => |ctx| {
    // 10 000 items that each sleep 10 ms, queued at once on CPU 0: how many
    // workers the pool has at the peak (not one per item: concurrency
    // management, and max_active).
    const N: usize = 10_000;
    let before = cpu0_workers();
    let peak = AtomicUsize::new(before);
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..N)
        .map(|_| {
            let (c, m) = (now.clone(), max.clone());
            Work::new(move || {
                m.fetch_max(c.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                kthread::msleep(10);
                c.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    let t0 = port().now_ns();
    for it in &items {
        system::wq().queue_on(0, it);
    }
    let done = wait_for(600_000, || {
        peak.fetch_max(cpu0_workers(), Ordering::SeqCst);
        items.iter().all(|i| !i.is_pending()) && now.load(Ordering::SeqCst) == 0
    });
    check!(done, "items did not finish");
    let peak = peak.load(Ordering::SeqCst);
    // The pool's workers at the peak (idle ones left by earlier cases
    // included: `before` says how many there were).
    crate::harness::diag_line(&format!("bench: wq_workers_blocking_10000 count={peak} before={before}"));
    crate::diag!(
        "workers before={before} peak={peak} concurrent items peak={} elapsed_ms={}",
        max.load(Ordering::SeqCst),
        (port().now_ns() - t0) / 1_000_000
    );
    Ok(())
});
