//! Suite `threaded_irq`: Linux's threaded interrupt handlers
//! (`request_threaded_irq`, `free_irq`, `IRQF_ONESHOT`, `IRQF_SHARED`)
//! driven by a real device interrupt the port's harness can fire
//! (`kport::harness::Harness::test_irq`); on a port without one the cases
//! skip.

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kport::irq::TestIrq;
use kport::sync::{Completion, Mutex};
use kport::{EBUSY, EINVAL, port};
use softirq::{IrqFlags, IrqReturn, free_irq, request_irq, request_threaded_irq};

use crate::bench::{THREAD_ITERATIONS, WARMUP, report_latency};
use crate::port_api::wait_for;
use crate::{Failure, TestResult, check, check_eq, err, ktest, skip};

fn test_irq() -> Result<&'static dyn TestIrq, Failure> {
    match kport::harness::installed().then(kport::harness::harness).and_then(|h| h.test_irq()) {
        Some(t) => Ok(t),
        None => skip("no test interrupt on this port"),
    }
}

fn release(a: softirq::IrqAction) -> TestResult {
    free_irq(a).map_err(|(e, _)| Failure::Fail(format!("free_irq: {e:?}")))
}

/// An action the case frees on every way out, so a failed check does not
/// leave the test line busy for the cases after it. `gate`, when given, is
/// opened first so a thread function held on it can finish.
struct Held {
    action: Option<softirq::IrqAction>,
    gate: Option<Arc<Completion>>,
}

impl Held {
    fn new(action: softirq::IrqAction, gate: Option<Arc<Completion>>) -> Self {
        Held { action: Some(action), gate }
    }

    fn get(&self) -> &softirq::IrqAction {
        self.action.as_ref().expect("held until released")
    }

    fn release(mut self) -> TestResult {
        release(self.action.take().expect("held until released"))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(a) = self.action.take() {
            if let Some(g) = &self.gate {
                g.complete_all();
            }
            let _ = free_irq(a);
        }
    }
}

ktest!(threaded_irq::oneshot_thread_runs_in_its_kthread_with_the_line_masked => |ctx| {
    let t = test_irq()?;
    let line = t.line();
    let hard_runs = Arc::new(AtomicUsize::new(0));
    let hard_in_irq = Arc::new(AtomicBool::new(true));
    let thread_runs = Arc::new(AtomicUsize::new(0));
    let thread_id = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Completion::new());
    let (hr, hi) = (hard_runs.clone(), hard_in_irq.clone());
    let (tr, ti, g) = (thread_runs.clone(), thread_id.clone(), gate.clone());
    let action = request_threaded_irq(
        line,
        Some(Box::new(move |_| {
            hr.fetch_add(1, Ordering::SeqCst);
            if !port().in_irq() {
                hi.store(false, Ordering::SeqCst);
            }
            IrqReturn::WakeThread
        })),
        Some(Box::new(move |_| {
            ti.store(port().current_id(), Ordering::SeqCst);
            if tr.fetch_add(1, Ordering::SeqCst) == 0 {
                g.wait("irq thread gate");
            }
            IrqReturn::Handled
        })),
        IrqFlags::ONESHOT,
        "kt-oneshot",
    )
    .map_err(err("request_threaded_irq"))?;
    let action = Held::new(action, Some(gate.clone()));
    let thread = action.get().thread().ok_or(Failure::Fail("no irq thread".into()))?.clone();
    // Linux names the thread `irq/<line>-<name>`, cut to the 15 characters
    // of a task's name.
    let want: alloc::string::String = format!("irq/{line}-kt-oneshot").chars().take(15).collect();
    check_eq!(thread.comm(), want.as_str(), "the thread's name");
    t.fire();
    check!(wait_for(5_000, || thread_runs.load(Ordering::SeqCst) == 1), "the thread function never ran");
    check_eq!(thread_id.load(Ordering::SeqCst), thread.id(), "the thread function ran outside its kthread");
    // The thread function is held: the line is masked, so a second
    // interrupt does not reach the hard handler.
    t.fire();
    crate::port_api::msleep(50);
    let during = hard_runs.load(Ordering::SeqCst);
    gate.complete_all();
    check!(wait_for(5_000, || action.get().thread_runs() >= 1), "the thread did not finish");
    check_eq!(during, 1, "the hard handler ran while the one-shot thread held the line");
    check!(hard_in_irq.load(Ordering::SeqCst), "the hard handler did not run in hard-IRQ context");
    action.release()
});

ktest!(threaded_irq::free_irq_waits_for_a_running_thread => |ctx| {
    let t = test_irq()?;
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (s, f) = (started.clone(), finished.clone());
    let action = request_threaded_irq(
        t.line(),
        None,
        Some(Box::new(move |_| {
            s.store(true, Ordering::SeqCst);
            crate::port_api::msleep(60);
            f.store(true, Ordering::SeqCst);
            IrqReturn::Handled
        })),
        IrqFlags::ONESHOT,
        "kt-slow",
    )
    .map_err(err("request_threaded_irq"))?;
    t.fire();
    check!(wait_for(5_000, || started.load(Ordering::SeqCst)), "the thread function never started");
    release(action)?;
    check!(finished.load(Ordering::SeqCst), "free_irq returned while the thread function ran");
    Ok(())
});

ktest!(threaded_irq::a_shared_line_calls_every_action => |ctx| {
    let t = test_irq()?;
    let a_runs = Arc::new(AtomicUsize::new(0));
    let b_runs = Arc::new(AtomicUsize::new(0));
    let (a, b) = (a_runs.clone(), b_runs.clone());
    let first = request_irq(t.line(), Box::new(move |_| { a.fetch_add(1, Ordering::SeqCst); IrqReturn::Handled }), IrqFlags::SHARED, "kt-share-a")
        .map_err(err("first"))?;
    let first = Held::new(first, None);
    let second = request_irq(t.line(), Box::new(move |_| { b.fetch_add(1, Ordering::SeqCst); IrqReturn::None }), IrqFlags::SHARED, "kt-share-b")
        .map_err(err("second"))?;
    let second = Held::new(second, None);
    // A third that does not share is refused.
    let refused = request_irq(t.line(), Box::new(|_| IrqReturn::Handled), IrqFlags::empty(), "kt-alone");
    check_eq!(refused.map(|_| ()).map_err(|e| e.errno), Err(EBUSY), "a non-shared action on a shared line");
    for _ in 0..3 {
        t.fire();
    }
    check!(wait_for(5_000, || a_runs.load(Ordering::SeqCst) == 3 && b_runs.load(Ordering::SeqCst) == 3), "each action once per interrupt: {} and {}", a_runs.load(Ordering::SeqCst), b_runs.load(Ordering::SeqCst));
    second.release()?;
    t.fire();
    check!(wait_for(5_000, || a_runs.load(Ordering::SeqCst) == 4), "the remaining action");
    check_eq!(b_runs.load(Ordering::SeqCst), 3, "a freed action ran");
    first.release()
});

ktest!(threaded_irq::bad_requests_are_refused => |ctx| {
    let t = test_irq()?;
    let nr = port().irq_chip().map_or(0, |c| c.nr_irqs());
    check_eq!(request_irq(nr + 7, Box::new(|_| IrqReturn::Handled), IrqFlags::empty(), "x").map(|_| ()).map_err(|e| e.errno), Err(EINVAL), "a line that does not exist");
    check_eq!(request_threaded_irq(t.line(), None, None, IrqFlags::empty(), "x").map(|_| ()).map_err(|e| e.errno), Err(EINVAL), "neither handler nor thread");
    check_eq!(
        request_threaded_irq(t.line(), None, Some(Box::new(|_| IrqReturn::Handled)), IrqFlags::empty(), "x").map(|_| ()).map_err(|e| e.errno),
        Err(EINVAL),
        "a thread without a hard handler needs ONESHOT"
    );
    Ok(())
});

ktest!(threaded_irq::free_irq_from_its_own_thread_is_refused => |ctx| {
    let t = test_irq()?;
    let slot: Arc<Mutex<Option<softirq::IrqAction>>> = Arc::new(Mutex::new(None));
    let answer = Arc::new(kport::sync::SpinLock::new(None));
    let (s, a) = (slot.clone(), answer.clone());
    let action = request_threaded_irq(
        t.line(),
        None,
        Some(Box::new(move |_| {
            // Take the action out first: the slot's guard must not be
            // held while the refused action is put back.
            let mine = s.lock().take();
            if let Some(me) = mine {
                match free_irq(me) {
                    Ok(()) => *a.lock() = Some(false),
                    Err((_, me)) => {
                        // Back in its slot before the answer: the case
                        // takes it from there as soon as it sees one.
                        *s.lock() = Some(me);
                        *a.lock() = Some(true);
                    }
                }
            }
            IrqReturn::Handled
        })),
        IrqFlags::ONESHOT,
        "kt-selffree",
    )
    .map_err(err("request_threaded_irq"))?;
    *slot.lock() = Some(action);
    t.fire();
    check!(wait_for(5_000, || answer.lock().is_some()), "the thread never ran");
    check_eq!(*answer.lock(), Some(true), "free_irq from the action's own thread must be refused");
    let action = slot.lock().take().ok_or(Failure::Fail("the action was lost".into()))?;
    release(action)
});

ktest!(threaded_irq::counters_add_up_to_the_interrupts_fired => |ctx| {
    let t = test_irq()?;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let action = request_irq(t.line(), Box::new(move |_| { r.fetch_add(1, Ordering::SeqCst); IrqReturn::Handled }), IrqFlags::empty(), "kt-count")
        .map_err(err("request_irq"))?;
    let action = Held::new(action, None);
    let total = || (0..port().cpu_count()).map(|c| softirq::irq::irq_count(t.line(), c)).sum::<u64>();
    let before = total();
    for _ in 0..10 {
        let n = runs.load(Ordering::SeqCst);
        t.fire();
        check!(wait_for(5_000, || runs.load(Ordering::SeqCst) > n), "an interrupt was lost");
    }
    check_eq!(total() - before, 10, "the line's counters");
    let text = softirq::irq::interrupts_text();
    check!(text.contains("kt-count") && text.contains("CPU0"), "{text}");
    action.release()
});

static HARD_SLEEPER: Mutex<()> = Mutex::new(());

ktest!(threaded_irq::sleeping_in_a_hard_handler_is_reported [may_report = true] => |ctx| {
    let t = test_irq()?;
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let action = request_irq(t.line(), Box::new(move |_| {
        drop(HARD_SLEEPER.lock());
        d.store(true, Ordering::SeqCst);
        IrqReturn::Handled
    }), IrqFlags::empty(), "kt-sleepy")
    .map_err(err("request_irq"))?;
    let before = kport::context::reports();
    t.fire();
    check!(wait_for(5_000, || done.load(Ordering::SeqCst)), "never ran");
    release(action)?;
    let reps = kport::context::reports_since(before);
    let r = reps.first().ok_or(Failure::Fail("no report from a hard handler that takes a mutex".into()))?;
    check!(r.context.hardirq, "{:?}", r.context);
    Ok(())
});

ktest!(threaded_irq::bench_threaded_irq_latency [bench = true] => |ctx| {
    let t = test_irq()?;
    let p = port();
    let hard_at = Arc::new(AtomicU64::new(0));
    let thread_at = Arc::new(AtomicU64::new(0));
    let (h, th) = (hard_at.clone(), thread_at.clone());
    let action = request_threaded_irq(
        t.line(),
        Some(Box::new(move |_| { h.store(port().cycles(), Ordering::SeqCst); IrqReturn::WakeThread })),
        Some(Box::new(move |_| { th.store(port().cycles(), Ordering::SeqCst); IrqReturn::Handled })),
        IrqFlags::ONESHOT,
        "kt-bench",
    )
    .map_err(err("request_threaded_irq"))?;
    let mut samples = Vec::with_capacity(THREAD_ITERATIONS);
    for i in 0..WARMUP + THREAD_ITERATIONS {
        thread_at.store(0, Ordering::SeqCst);
        t.fire();
        while thread_at.load(Ordering::SeqCst) == 0 {
            p.yield_now();
        }
        if i >= WARMUP {
            samples.push(thread_at.load(Ordering::SeqCst).saturating_sub(hard_at.load(Ordering::SeqCst)));
        }
    }
    release(action)?;
    report_latency("threaded_irq_latency", &mut samples);
    Ok(())
});

ktest!(threaded_irq::bench_irq_exit_overhead [bench = true] => |ctx| {
    // What the interrupt-exit hook adds to an interrupt with nothing
    // pending: the call, its context checks and a look at the pending mask.
    // Under TCG the clock advances in steps of about 30 ns, more than one
    // call costs, so each sample times a batch of calls and divides; the
    // median of empty readings (two clock reads), taken in the same loop,
    // is subtracted first.
    const BATCH: u64 = 32;
    let p = port();
    let mut samples = Vec::with_capacity(crate::bench::ITERATIONS);
    let mut empty = Vec::with_capacity(crate::bench::ITERATIONS);
    for i in 0..WARMUP + crate::bench::ITERATIONS {
        let was = p.irq_save();
        let e0 = p.cycles();
        let e1 = p.cycles();
        let t0 = p.cycles();
        for _ in 0..BATCH {
            kport::irq::irq_exit();
        }
        let t1 = p.cycles();
        p.irq_restore(was);
        if i >= WARMUP {
            empty.push(e1.saturating_sub(e0));
            samples.push(t1.saturating_sub(t0));
        }
    }
    empty.sort_unstable();
    let base = empty[empty.len() / 2];
    for s in &mut samples {
        *s = s.saturating_sub(base) / BATCH;
    }
    crate::diag!("irq_exit_overhead: batches of {BATCH}, clock reading pair {} ns subtracted", p.cycles_to_ns(base));
    report_latency("irq_exit_overhead", &mut samples);
    Ok(())
});
