//! Suite `observe` (tracing part): the tracepoints and ring buffers of
//! `kport::trace` and the latency histograms of `kport::trace::hist`.
//!
//! Each case turns on what it needs and restores the enable word when it
//! ends ([`MaskGuard`]), so the command line's `trace_event=` and
//! `latency_hist=` stay as they were for the cases after it.

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kport::trace::{self, Cursor, Event, hist};
use kport::{CpuMask, port};
use softirq::{IrqFlags, IrqReturn, Vector, free_irq, request_irq};
use workqueue::{Work, system};

use crate::bench::{ITERATIONS, Pinned, WARMUP};
use crate::port_api::{spawn_on, wait_for};
use crate::{Failure, check, check_eq, ktest, skip};

/// Restores [`trace::MASK`] when dropped.
struct MaskGuard(u64);

impl MaskGuard {
    /// Remember the enable word; then set exactly `events` and `hists`.
    fn set(events: u64, hists: u64) -> Self {
        let before = trace::MASK.load(Ordering::SeqCst);
        trace::disable(trace::ALL_EVENTS);
        hist::disable(hist::HIST_ALL);
        trace::enable(events);
        hist::enable(hists);
        MaskGuard(before)
    }
}

impl Drop for MaskGuard {
    fn drop(&mut self) {
        trace::MASK.store(self.0, Ordering::SeqCst);
    }
}

fn observe_item_fn() {}

ktest!(observe::trace_events_of_a_queued_item_come_in_order_with_matching_ids => |ctx| {
    let _pin = Pinned::to(0);
    let target = port().cpu_count() - 1;
    let _m = MaskGuard::set(trace::parse_events("workqueue:*").map_err(Failure::Fail)?, 0);
    let ran_on = Arc::new(AtomicUsize::new(usize::MAX));
    let r = ran_on.clone();
    let item = Work::named("observe_item_fn", move || {
        observe_item_fn();
        r.store(port().cpu_id(), Ordering::SeqCst);
    });
    let mut cur = Cursor::now();
    check!(system::wq().queue_on(target, &item), "queue_on refused");
    item.flush();
    let b = cur.read();
    let mine: Vec<_> = b.records.iter().filter(|r| r.args[0] == item.id() as u64).collect();
    let names: Vec<_> = mine.iter().map(|r| r.event.name()).collect();
    check_eq!(
        names,
        alloc::vec!["workqueue_queue_work", "workqueue_activate_work", "workqueue_execute_start", "workqueue_execute_end"],
        "the item's events, in order"
    );
    for r in &mine {
        check_eq!(r.s0, "observe_item_fn", "function of {}", r.event.name());
    }
    let q = mine[0];
    check_eq!(q.s1, "events", "workqueue of queue_work");
    check_eq!((q.args[1], q.args[2]), (target as u64, target as u64), "req_cpu and cpu of queue_work");
    check_eq!(q.cpu, 0, "queue_work is recorded on the queueing CPU");
    check_eq!(mine[1].cpu, 0, "activate_work is recorded on the queueing CPU");
    check_eq!((mine[2].cpu, mine[3].cpu), (target, target), "execute_start/end on the pool's CPU");
    check_eq!(ran_on.load(Ordering::SeqCst), target, "where it ran");
    check!(mine.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns), "timestamps go forward");
    // Nothing but workqueue events was recorded.
    check!(b.records.iter().all(|r| r.event.system() == "workqueue"), "an event of another system was recorded");
    // The text and JSON forms carry the same facts.
    let line = mine[2].text_line();
    let want = format!("workqueue_execute_start: work struct {:#x}: function observe_item_fn", item.id());
    check!(line.ends_with(&want), "text line '{line}' does not end with '{want}'");
    check!(line.contains(&format!("[{target:03}]")), "text line '{line}' lacks the CPU column");
    let j = mine[0].json();
    check!(j.contains("\"event\":\"workqueue_queue_work\"") && j.contains("\"workqueue\":\"events\""), "json: {j}");
    Ok(())
});

/// Opened once for this suite: `NET_RX` is unused by the subsystem and the
/// other suites.
static NET_RX_OPEN: AtomicBool = AtomicBool::new(false);
static NET_RX_RUNS: AtomicUsize = AtomicUsize::new(0);

fn net_rx_probe() {
    NET_RX_RUNS.fetch_add(1, Ordering::SeqCst);
}

/// The count of histogram (`kind`, `name`) now.
fn hist_count(kind: hist::Kind, name: &str) -> u64 {
    hist::find(&hist::snapshot(), kind, name).map_or(0, |h| h.count)
}

ktest!(observe::histograms_count_exactly_the_events_the_test_caused => |ctx| {
    const N: u64 = 17;
    let _pin = Pinned::to(0);
    let _m = MaskGuard::set(0, hist::HIST_ALL);
    // Work items: queue→start and run time, once per run.
    let item = Work::named("observe_hist_item", || {});
    let (q0, r0) = (hist_count(hist::Kind::WorkQueueLatency, "observe_hist_item"), hist_count(hist::Kind::WorkRunTime, "observe_hist_item"));
    for _ in 0..N {
        check!(system::wq().queue_on(0, &item), "queue refused");
        item.flush();
    }
    let hs = hist::snapshot();
    let q = hist::find(&hs, hist::Kind::WorkQueueLatency, "observe_hist_item").map_or(0, |h| h.count) - q0;
    let r = hist::find(&hs, hist::Kind::WorkRunTime, "observe_hist_item").map_or(0, |h| h.count) - r0;
    check_eq!((q, r), (N, N), "work histograms (queue latency, run time)");
    let h = hist::find(&hs, hist::Kind::WorkRunTime, "observe_hist_item").expect("found above");
    check_eq!(h.buckets.iter().sum::<u64>(), h.count, "bucket counts add up to the count");
    let text = hist::text_one(h);
    check!(text.starts_with("@work_run_ns[observe_hist_item]:") && text.contains('|'), "text: {text}");
    // A softirq vector: run time and raise latency, once per run.
    if !NET_RX_OPEN.swap(true, Ordering::SeqCst) {
        softirq::open_softirq(Vector::NetRx, net_rx_probe);
    }
    let runs0 = NET_RX_RUNS.load(Ordering::SeqCst);
    let (s0, l0) = (hist_count(hist::Kind::SoftirqRunTime, "NET_RX"), hist_count(hist::Kind::SoftirqLatency, "NET_RX"));
    for _ in 0..N {
        let bh = softirq::local_bh_disable();
        softirq::raise_softirq(Vector::NetRx);
        drop(bh);
    }
    check!(wait_for(5_000, || NET_RX_RUNS.load(Ordering::SeqCst) - runs0 == N as usize), "NET_RX ran {} times", NET_RX_RUNS.load(Ordering::SeqCst) - runs0);
    let (s1, l1) = (hist_count(hist::Kind::SoftirqRunTime, "NET_RX"), hist_count(hist::Kind::SoftirqLatency, "NET_RX"));
    check_eq!((s1 - s0, l1 - l0), (N, N), "softirq histograms (run time, raise latency)");
    // An IRQ line, where the port has a test interrupt.
    let Some(t) = kport::harness::installed().then(kport::harness::harness).and_then(|h| h.test_irq()) else {
        return skip("work and softirq histograms checked; no test interrupt on this port for the IRQ histogram");
    };
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    let a = request_irq(t.line(), Box::new(move |_| { f.fetch_add(1, Ordering::SeqCst); IrqReturn::Handled }), IrqFlags::empty(), "observe-hist")
        .map_err(|e| Failure::Fail(format!("request_irq: {e:?}")))?;
    let i0 = hist_count(hist::Kind::IrqHandlerTime, "observe-hist");
    for k in 0..N as usize {
        t.fire();
        if !wait_for(5_000, || fired.load(Ordering::SeqCst) == k + 1) {
            let _ = free_irq(a);
            return Err(Failure::Fail(format!("interrupt {k} not handled")));
        }
    }
    let _ = free_irq(a);
    check_eq!(hist_count(hist::Kind::IrqHandlerTime, "observe-hist") - i0, N, "IRQ handler histogram");
    Ok(())
});

ktest!(observe::disabled_events_record_nothing => |ctx| {
    let _pin = Pinned::to(0);
    let _m = MaskGuard::set(0, 0);
    // A writer that passed its check just before the disable has finished
    // well within this.
    kthreadd::kthread::msleep(10);
    let mut cur = Cursor::now();
    let before = trace::recorded();
    let item = Work::named("observe_quiet_item", || {});
    for _ in 0..8 {
        check!(system::wq().queue_on(0, &item), "queue refused");
        item.flush();
    }
    let k = kthreadd::kthread::Builder::new(format_args!("observe-quiet"), || 0).run().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let _ = k.stop();
    let b = cur.read();
    check_eq!(b.records.len(), 0, "records while every event is off: {:?}", b.records.first().map(|r| r.event));
    check_eq!(b.lost, 0, "lost records while every event is off");
    check_eq!(trace::recorded(), before, "records written while every event is off");
    // The same run with the workqueue events on does record (the check
    // above can fail).
    trace::enable(trace::parse_events("workqueue:workqueue_execute_start").map_err(Failure::Fail)?);
    check!(system::wq().queue_on(0, &item), "queue refused");
    item.flush();
    let b = cur.read();
    check_eq!(b.records.iter().filter(|r| r.args[0] == item.id() as u64).count(), 1, "one execute_start once enabled");
    Ok(())
});

/// What [`emit`](trace::emit)s in the wrap cases write: args that check
/// each other, so a torn record would show.
const MAGIC: u64 = 0x5eed_0b5e_7fac_e000;

fn emit_checked(i: u64) {
    trace::emit(Event::SchedKthreadStopRet, [i, i ^ MAGIC, i.wrapping_mul(3), !i, MAGIC], "observe", "wrap");
}

fn is_ours(r: &trace::Record) -> bool {
    r.event == Event::SchedKthreadStopRet && r.args[4] == MAGIC
}

fn consistent(r: &trace::Record) -> bool {
    let i = r.args[0];
    r.args[1] == i ^ MAGIC && r.args[2] == i.wrapping_mul(3) && r.args[3] == !i && r.s0 == "observe" && r.s1 == "wrap"
}

ktest!(observe::ring_wrap_counts_lost_records_and_never_returns_a_torn_one [timeout_s = 300] => |ctx| {
    let _pin = Pinned::to(0);
    let _m = MaskGuard::set(0, 0);
    let n = trace::records_per_cpu() as u64;
    // 1. One CPU writes 2n + 7 records: the reader gets the last n at most,
    //    in order, and counts the rest as lost.
    let mut cur = Cursor::now();
    let total = 2 * n + 7;
    for i in 0..total {
        emit_checked(i);
    }
    let b = cur.read();
    let ours: Vec<_> = b.records.iter().filter(|r| is_ours(r)).collect();
    check!(ours.len() as u64 <= n, "{} records returned from a ring of {n}", ours.len());
    check_eq!(ours.len() as u64 + b.lost, total, "returned + lost = written");
    check!(b.lost >= total - n, "lost {} < {}", b.lost, total - n);
    check!(ours.iter().all(|r| consistent(r)), "a torn record came back");
    check_eq!(ours.last().map(|r| r.args[0]), Some(total - 1), "the newest record survives");
    check!(ours.windows(2).all(|w| w[1].args[0] == w[0].args[0] + 1), "surviving records are consecutive");
    // 2. A writer on another CPU laps its ring while this CPU reads it:
    //    every record returned is whole.
    if port().cpu_count() < 2 {
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let (s, w) = (stop.clone(), written.clone());
    let writer = spawn_on("observe-wrap", CpuMask::one(1), move || {
        let mut i = 0u64;
        while !s.load(Ordering::SeqCst) {
            emit_checked(i);
            i += 1;
            // Bursts of half a ring with a pause between them: a reader
            // slower than the writer (TCG) would otherwise find every slot
            // overwritten by the time it gets there and never read one.
            if i.is_multiple_of((n / 2).max(1)) {
                w.store(i as usize, Ordering::SeqCst);
                kthreadd::kthread::msleep(1);
            }
        }
        w.store(i as usize, Ordering::SeqCst);
    });
    writer.wake();
    let mut cur = Cursor::now();
    let (mut got, mut lost, mut rounds) = (0u64, 0u64, 0);
    let deadline = port().now_ns() + 2_000_000_000;
    while (written.load(Ordering::SeqCst) as u64) < 4 * n && port().now_ns() < deadline || rounds < 8 {
        let b = cur.read();
        for r in b.records.iter().filter(|r| is_ours(r)) {
            if !consistent(r) {
                stop.store(true, Ordering::SeqCst);
                return Err(Failure::Fail(format!("torn record returned: {:?}", r.args)));
            }
            got += 1;
        }
        lost += b.lost;
        rounds += 1;
        port().yield_now();
    }
    stop.store(true, Ordering::SeqCst);
    check!(wait_for(5_000, || writer.state() == kport::TaskState::Dead), "writer did not end");
    crate::diag!("wrap: {} written on cpu 1, {got} read whole, {lost} lost, {rounds} reads", written.load(Ordering::SeqCst));
    check!(got > 0, "nothing read from the writer's ring");
    Ok(())
});

// ---------------------------------------------------------------- benchmarks

/// Hits timed together in one sample (one hit is below the clock's
/// resolution).
const BATCH: u64 = 1000;

/// Time `BATCH` hits of `hit`, `ITERATIONS` times; print ns per hit (median
/// and p99) and the same per batch.
fn per_hit(name: &str, mut hit: impl FnMut(u64)) {
    let p = port();
    let mut v = Vec::with_capacity(ITERATIONS);
    for k in 0..(ITERATIONS + WARMUP) {
        let t0 = p.cycles();
        for i in 0..BATCH {
            hit(core::hint::black_box(i));
        }
        let dt = p.cycles().wrapping_sub(t0);
        if k >= WARMUP {
            v.push(p.cycles_to_ns(dt));
        }
    }
    v.sort_unstable();
    let (med, p99) = (v[v.len() / 2], v[v.len() * 99 / 100]);
    crate::harness::diag_line(&format!(
        "bench: {name} median_ns={} p99_ns={} n={} batch={BATCH} batch_median_ns={med} batch_p99_ns={p99}",
        med / BATCH,
        p99 / BATCH,
        v.len()
    ));
}

/// A tracepoint as the subsystem writes one.
#[inline(always)]
fn tracepoint(i: u64) {
    if trace::on(Event::SchedKthreadStopRet) {
        trace::emit(Event::SchedKthreadStopRet, [i, 0, 0, 0, 0], "", "");
    }
}

ktest!(observe::bench_tracepoint_off_overhead [bench = true] => |ctx| {
    let _pin = Pinned::to(0);
    let _m = MaskGuard::set(0, 0);
    per_hit("tracepoint_off_overhead", tracepoint);
    per_hit("tracepoint_loop_baseline", |i| { core::hint::black_box(i); });
    Ok(())
});

ktest!(observe::bench_tracepoint_on_overhead [bench = true] => |ctx| {
    let _pin = Pinned::to(0);
    let _m = MaskGuard::set(Event::SchedKthreadStopRet.bit(), 0);
    per_hit("tracepoint_on_overhead", tracepoint);
    Ok(())
});

ktest!(observe::bench_wq_queue_run_trace_off_on [bench = true] => |ctx| {
    {
        let _m = MaskGuard::set(0, 0);
        crate::workqueue::queue_run_latency("wq_queue_run_same_cpu_trace_off", 0)?;
    }
    let _m = MaskGuard::set(
        trace::parse_events("workqueue:*,irq:*,sched:*").map_err(Failure::Fail)?,
        hist::HIST_ALL,
    );
    crate::workqueue::queue_run_latency("wq_queue_run_same_cpu_trace_on", 0)
});
