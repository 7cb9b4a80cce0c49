//! Suite `torture`: the stress cases run for a settable time (`torture_s=`
//! on the command line, default [`DEFAULT_TORTURE_S`]) and check their
//! invariants as they go (`docs/torture.md`). The stress cases are
//! explicit: they run only when the suite is named (`make torture
//! DURATION=N SEED=S`, `FAULT=P` for the fault-injection mode), never in
//! `make test`; the cases that show that the checks can fail are not, and
//! run with every suite.
//!
//! Each stress case ends with one figures line,
//! `# torture: CASE key=value ...`, whose last pair is `violations=N`
//! (the runner collects them in its summary); the case fails when N > 0.

use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use kport::{EINTR, port};
use kthreadd::kthread;

use crate::port_api::wait_for;
use crate::{Failure, check, check_eq, ktest};

mod everything;
pub mod tracker;

pub use everything::{BIO_AREA, Op};

/// Seconds a torture case runs when `torture_s` is not given.
pub const DEFAULT_TORTURE_S: u64 = 30;

fn deadline(ctx: &crate::Ctx) -> u64 {
    port().now_ns() + ctx.args.torture_s.unwrap_or(DEFAULT_TORTURE_S) * 1_000_000_000
}

ktest!(torture::workqueue_exactly_once_storm [explicit = true, timeout_s = 86_400] => |ctx| {
    let end = deadline(ctx);
    let mut round = 0u64;
    while port().now_ns() < end {
        crate::workqueue::exactly_once_storm(ctx.seed.wrapping_add(round), 64, 2_000)
            .map_err(|e| match e {
                Failure::Fail(m) => Failure::Fail(format!("round {round}: {m}")),
                f => f,
            })?;
        round += 1;
    }
    crate::diag!(
        "torture: workqueue_exactly_once_storm seconds={} rounds={round} violations=0",
        ctx.args.torture_s.unwrap_or(DEFAULT_TORTURE_S)
    );
    Ok(())
});

ktest!(torture::kthread_churn_on_every_cpu [explicit = true, timeout_s = 86_400] => |ctx| {
    // Every CPU creates, parks, unparks and stops threads bound to random
    // CPUs; every stop must return the thread's value or EINTR.
    let p = port();
    let n = p.cpu_count();
    let end = deadline(ctx);
    let bad = Arc::new(AtomicUsize::new(0));
    let cycles = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for cpu in 0..n {
        let (b, c, d) = (bad.clone(), cycles.clone(), done.clone());
        let seed = ctx.seed ^ (cpu as u64) << 8;
        threads.push(
            kthread::create_on_cpu(
                move || {
                    let p = port();
                    let mut rng = crate::rng::Rng::new(seed, "churn");
                    while p.now_ns() < end {
                        let target = rng.below(p.cpu_count() as u64) as usize;
                        let want = rng.below(1000) as i32;
                        let Ok(t) = kthread::create_on_cpu(
                            move || {
                                while !kthread::should_stop() {
                                    if kthread::should_park() {
                                        kthread::parkme();
                                    }
                                    kthread::sleep_ms_or_stop(1);
                                }
                                want
                            },
                            target,
                            format_args!("churn/{target}"),
                        ) else {
                            b.fetch_add(1, Ordering::SeqCst);
                            continue;
                        };
                        let woke = rng.below(4) != 0;
                        if woke {
                            t.wake();
                            if rng.below(2) == 0 && t.park().is_ok() {
                                t.unpark();
                            }
                        }
                        match t.stop() {
                            Ok(v) if v == want => {}
                            Err(e) if e.errno == EINTR => {}
                            _ => {
                                b.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    d.fetch_add(1, Ordering::SeqCst);
                    0
                },
                cpu,
                format_args!("churner/{cpu}"),
            )
            .map_err(|e| Failure::Fail(format!("{e:?}")))?,
        );
    }
    for t in &threads {
        t.wake();
    }
    check!(wait_for(u64::MAX / 2_000_000, || done.load(Ordering::SeqCst) == n), "churners did not finish");
    crate::diag!(
        "torture: kthread_churn_on_every_cpu seconds={} cycles={} violations={}",
        ctx.args.torture_s.unwrap_or(DEFAULT_TORTURE_S),
        cycles.load(Ordering::SeqCst),
        bad.load(Ordering::SeqCst)
    );
    check_eq!(bad.load(Ordering::SeqCst), 0, "stops returned wrong values or creations failed");
    Ok(())
});

ktest!(torture::everything [explicit = true, timeout_s = 86_400] => |ctx| {
    everything::run(ctx)
});

ktest!(torture::the_tracker_catches_a_double_run_a_concurrent_run_and_a_lost_item => |ctx| {
    // The checks of torture::everything, fed the faults they exist for:
    // each must be counted, and a correct history must count nothing.
    use tracker::{Tracker, Violation, Violations, check_cpu};
    use kport::sync::Completion;
    let v = Arc::new(Violations::new());
    let t = Arc::new(Tracker::new(4));
    // Correct: queued and ran; queued and cancelled; a refused queueing.
    check!(t.queue_with(0, || true));
    t.run(0, &v, || ());
    check!(t.queue_with(0, || true));
    t.cancelled(0, true, &v);
    check!(!t.queue_with(0, || false));
    t.cancelled(0, false, &v);
    check!(t.is_settled(0));
    t.check_settled(0, &v);
    check_eq!(v.count(), 0, "a correct history counted violations: {:?}", v.describe(&|_| "op"));
    // Ran twice for one queueing.
    check!(t.queue_with(1, || true));
    t.run(1, &v, || ());
    t.run(1, &v, || ());
    check_eq!(v.kept_of(Violation::RanTwice), 1, "a second run of one instance");
    // Ran and was also reported cancelled.
    check!(t.queue_with(3, || true));
    t.run(3, &v, || ());
    t.cancelled(3, true, &v);
    check_eq!(v.kept_of(Violation::RanTwice), 2, "a run and a cancel of one instance");
    // Concurrent with itself: a thread runs item 2 and holds inside it
    // while this one runs it too (two instances, so only the overlap is wrong).
    check!(t.queue_with(2, || true));
    check!(t.queue_with(2, || true));
    let inside = Arc::new(Completion::new());
    let gate = Arc::new(Completion::new());
    let (t2, v2, i2, g2) = (t.clone(), v.clone(), inside.clone(), gate.clone());
    let k = kthread::Builder::new(format_args!("tt-selftest"), move || {
        t2.run(2, &v2, || {
            i2.complete_all();
            g2.wait("tt-selftest gate");
        });
        0
    })
    .run()
    .map_err(|e| Failure::Fail(format!("{e:?}")))?;
    inside.wait("tt-selftest inside");
    t.run(2, &v, || ());
    gate.complete_all();
    check_eq!(k.stop().map_err(|e| e.errno), Ok(0));
    check_eq!(v.kept_of(Violation::Concurrent), 1, "two runs at once");
    // A flush that returned with an instance pending.
    check!(t.queue_with(2, || true));
    t.check_settled(2, &v);
    check_eq!(v.kept_of(Violation::FlushEarly), 1, "an instance left after a flush");
    // At the end: item 1 ran more often than queued, item 3 ran and was
    // reported cancelled, item 2 has an instance that never ran; item 0
    // balances.
    let before = v.count();
    check_eq!(t.check_all(&v), 3);
    check_eq!(v.count(), before + 3);
    check_eq!(v.kept_of(Violation::Unbalanced), 3);
    // A CPU outside the affinity, and one inside.
    check!(check_cpu(1, kport::CpuMask::one(1), 7, &v));
    check!(!check_cpu(2, kport::CpuMask::one(1), 7, &v));
    check_eq!(v.kept_of(Violation::Affinity), 1);
    let lines = v.describe(&|_| "op");
    check!(lines.iter().any(|l| l.contains("ran concurrently with itself")), "{lines:?}");
    check!(lines.iter().any(|l| l.contains("outside its affinity")), "{lines:?}");
    let _ = ctx;
    Ok(())
});
