//! Suite `misuse`: the misuse table of `docs/misuse.md`, one case per row
//! (or a few closely related rows per case).
//!
//! Each case makes one misuse of a public API on purpose and checks what
//! comes back: the exact error (`kport::Error`'s errno) and, where the
//! subsystem warns, exactly one counted warning line with the expected
//! words ([`kport::warn`]). Nothing may be lost: an item involved in a
//! misuse still runs exactly once or is reported cancelled, and each case
//! checks that too. Linux's behaviour for each row is in the table.

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use kport::sync::{Mutex, SpinLock};
use kport::{CpuMask, EBUSY, EINTR, EINVAL, ENOSYS, EPERM, EROFS, ESRCH, port};
use kthreadd::kthread::{self, Kthread};
use kthreadd::kthread_worker::{KthreadDelayedWork, KthreadWork, KthreadWorker};
use kthreadd::{kthread_create, kthread_run};
use softirq::{IrqFlags, IrqReturn, Tasklet, free_irq, request_irq, request_threaded_irq};
use workqueue::{QueueError, WQ_DFL_ACTIVE, WQ_MAX_ACTIVE, Work, Workqueue, WqFlags};

use crate::port_api::{msleep, wait_for};
use crate::{Failure, TestResult, check, check_eq, err, fail, ktest, skip};

/// Exactly one warning made since `before` (a [`kport::warn::count`])
/// contains every word of `words`.
fn warned_once(before: u64, words: &[&str]) -> TestResult {
    let lines = kport::warn::since(before);
    let hits = lines.iter().filter(|l| words.iter().all(|w| l.contains(w))).count();
    if hits == 1 {
        Ok(())
    } else {
        fail(format!("{hits} warnings with {words:?} (want 1); warnings since the misuse: {lines:?}"))
    }
}

/// No warning made since `before` contains `word`.
fn not_warned(before: u64, word: &str) -> TestResult {
    let lines = kport::warn::since(before);
    match lines.iter().find(|l| l.contains(word)) {
        Some(l) => fail(format!("unexpected warning: {l}")),
        None => Ok(()),
    }
}

/// A thread that sleeps until stopped, then returns `ret`; woken and
/// started before it is returned.
fn sleeper(name: &str, ret: i32) -> Result<Kthread, Failure> {
    // Waited for until its function runs, not only until it has started: a
    // thread that has started but not yet passed the park point of its
    // first run (Linux's `kthread()` parks there too) would still park.
    let running = Arc::new(AtomicBool::new(false));
    let r = running.clone();
    let t = kthread_run!(
        move || {
            r.store(true, Ordering::SeqCst);
            while !kthread::should_stop() {
                kthread::sleep_ms_or_stop(5);
            }
            ret
        },
        "{}",
        name
    )
    .map_err(err("kthread_run"))?;
    check!(wait_for(10_000, || running.load(Ordering::SeqCst)), "[{name}] never ran its function");
    Ok(t)
}

fn wq(name: &str, flags: WqFlags, max_active: usize) -> Result<Workqueue, Failure> {
    Workqueue::new(name, flags, max_active).map_err(|e| Failure::Fail(format!("alloc_workqueue {name}: {e:?}")))
}

fn test_irq() -> Result<&'static dyn kport::irq::TestIrq, Failure> {
    match kport::harness::installed().then(kport::harness::harness).and_then(|h| h.test_irq()) {
        Some(t) => Ok(t),
        None => skip("no test interrupt on this port"),
    }
}

// ---------------------------------------------------------------- kthread

ktest!(misuse::kthread_double_stop_returns_the_saved_value_again => |ctx| {
    let t = sleeper("mis-twice", 3)?;
    check_eq!(t.stop().map_err(|e| e.errno), Ok(3));
    check_eq!(t.stop().map_err(|e| e.errno), Ok(3), "the second stop");
    // Never ran: EINTR, twice.
    let u = kthread_create!(|| 0, "mis-never").map_err(err("create"))?;
    check_eq!(u.stop().map_err(|e| e.errno), Err(EINTR));
    check_eq!(u.stop().map_err(|e| e.errno), Err(EINTR), "the second stop of a thread that never ran");
    Ok(())
});

ktest!(misuse::kthread_stop_of_an_exited_thread_returns_its_exit_value => |ctx| {
    let t = kthread_run!(|| 42, "mis-exited").map_err(err("run"))?;
    check!(wait_for(5_000, || t.has_exited()), "did not exit");
    check_eq!(t.stop().map_err(|e| e.errno), Ok(42), "stop after it exited on its own");
    Ok(())
});

ktest!(misuse::kthread_stop_from_the_thread_itself_is_einval_with_a_warning => |ctx| {
    let me: Arc<spin::Once<Kthread>> = Arc::new(spin::Once::new());
    let got = Arc::new(AtomicI64::new(i64::MIN));
    let (m, g) = (me.clone(), got.clone());
    let t = kthread_create!(move || {
        if let Some(t) = m.get() {
            g.store(t.stop().map_or_else(|e| -(e.errno as i64), i64::from), Ordering::SeqCst);
        }
        while !kthread::should_stop() {
            kthread::sleep_ms_or_stop(5);
        }
        7
    }, "mis-selfstop").map_err(err("create"))?;
    me.call_once(|| t.clone());
    let before = kport::warn::count();
    t.wake();
    check!(wait_for(10_000, || got.load(Ordering::SeqCst) != i64::MIN), "the self-stop hung");
    check_eq!(got.load(Ordering::SeqCst), -(EINVAL as i64), "kthread_stop of itself");
    warned_once(before, &["kthread_stop of [mis-selfstop]", "from the thread itself"])?;
    // Still alive and stoppable from outside.
    check_eq!(t.stop().map_err(|e| e.errno), Ok(7));
    Ok(())
});

ktest!(misuse::kthread_park_of_an_exited_thread_is_enosys_and_a_second_park_ebusy => |ctx| {
    let t = kthread_run!(|| 0, "mis-park-dead").map_err(err("run"))?;
    check!(wait_for(5_000, || t.has_exited()), "did not exit");
    let before = kport::warn::count();
    check_eq!(t.park().map_err(|e| e.errno), Err(ENOSYS), "park of an exited thread");
    warned_once(before, &["kthread_park of [mis-park-dead]", "it has exited"])?;
    check_eq!(t.stop().map_err(|e| e.errno), Ok(0));
    // A second park while the first is pending.
    let u = kthread_create!(|| { while !kthread::should_stop() { if kthread::should_park() { kthread::parkme(); } kthread::sleep_ms_or_stop(1); } 5 }, "mis-park2")
        .map_err(err("create"))?;
    u.park().map_err(err("park"))?;
    let before = kport::warn::count();
    check_eq!(u.park().map_err(|e| e.errno), Err(EBUSY), "a second park");
    warned_once(before, &["kthread_park of [mis-park2]", "already pending"])?;
    u.unpark();
    check_eq!(u.stop().map_err(|e| e.errno), Ok(5));
    Ok(())
});

ktest!(misuse::kthread_park_of_a_thread_that_never_parks_ends_with_enosys_at_stop => |ctx| {
    // Not an smpboot thread and no parkme in its loop: the park waits (as
    // Linux's does) until a stop makes the thread exit instead. Started is
    // not enough: a thread parks once at its start if a park came first
    // (Linux's kthread() does too), so wait until it sleeps in its loop.
    let t = sleeper("mis-noparkme", 4)?;
    check!(
        wait_for(10_000, || t.state() == kport::TaskState::Sleeping && t.task().wait_channel() == "msleep"),
        "[mis-noparkme] never slept in its loop"
    );
    let answer = Arc::new(AtomicI64::new(i64::MIN));
    let (t2, a) = (t.clone(), answer.clone());
    let parker = kthread_run!(move || {
        a.store(t2.park().map_or_else(|e| -(e.errno as i64), |()| 0), Ordering::SeqCst);
        0
    }, "mis-parker").map_err(err("run"))?;
    msleep(30);
    check_eq!(answer.load(Ordering::SeqCst), i64::MIN, "the park returned although the thread never parks");
    check_eq!(t.stop().map_err(|e| e.errno), Ok(4), "stop wins over the pending park");
    check!(wait_for(5_000, || answer.load(Ordering::SeqCst) != i64::MIN), "the park never returned after the stop");
    check_eq!(answer.load(Ordering::SeqCst), -(ENOSYS as i64), "the park's answer");
    check_eq!(parker.stop().map_err(|e| e.errno), Ok(0));
    Ok(())
});

ktest!(misuse::kthread_bind_after_wake_is_ebusy_with_a_warning => |ctx| {
    let t = sleeper("mis-bindlate", 0)?;
    let aff = t.affinity();
    let before = kport::warn::count();
    check_eq!(t.bind(0).map_err(|e| e.errno), Err(EBUSY), "bind after the first wake-up");
    warned_once(before, &["kthread_bind of [mis-bindlate]", "after its first wake-up"])?;
    check_eq!(t.affinity(), aff, "a refused bind changes nothing");
    check_eq!(t.stop().map_err(|e| e.errno), Ok(0));
    Ok(())
});

ktest!(misuse::kthread_bind_to_a_cpu_out_of_range_is_einval => |ctx| {
    let n = port().cpu_count();
    let t = kthread_create!(|| 0, "mis-bindbad").map_err(err("create"))?;
    let aff = t.affinity();
    check_eq!(t.bind(n).map_err(|e| e.errno), Err(EINVAL), "bind to CPU {n} of {n}");
    check_eq!(t.bind(usize::MAX).map_err(|e| e.errno), Err(EINVAL), "bind to CPU usize::MAX");
    check_eq!(t.bind_mask(CpuMask::NONE).map_err(|e| e.errno), Err(EINVAL), "bind to an empty mask");
    check_eq!(t.affinity(), aff, "a refused bind changes nothing");
    check!(kthread::create_on_cpu(|| 0, n, format_args!("mis-oncpu")).is_err(), "create_on_cpu of a CPU out of range");
    check_eq!(t.set_per_cpu(Some(n)).map_err(|e| e.errno), Err(EINVAL), "set_per_cpu to a CPU that does not exist");
    check_eq!(t.stop().map_err(|e| e.errno), Err(EINTR));
    Ok(())
});

ktest!(misuse::kthread_bind_to_an_offline_cpu_is_kept_for_when_it_returns [min_cpus = 2] => |ctx| {
    let n = port().cpu_count();
    let victim = n - 1;
    let h = kport::harness::harness();
    if let Err(e) = h.cpu_down(victim) {
        return skip(format!("cannot take CPU {victim} offline here: {e:?}"));
    }
    let ran_on = Arc::new(AtomicUsize::new(usize::MAX));
    let r = ran_on.clone();
    let t = kthread_create!(move || { r.store(port().cpu_id(), Ordering::SeqCst); 0 }, "mis-bindoff").map_err(err("create"))?;
    // Linux accepts it (smpboot binds threads to CPUs that are coming up).
    let bound = t.bind(victim).map_err(|e| e.errno);
    let up = h.cpu_up(victim);
    check_eq!(bound, Ok(()), "bind to the offline CPU {victim}");
    up.map_err(err("cpu_up"))?;
    check_eq!(t.affinity(), CpuMask::one(victim));
    t.wake();
    check!(wait_for(10_000, || ran_on.load(Ordering::SeqCst) != usize::MAX), "never ran after its CPU came back");
    check_eq!(t.stop().map_err(|e| e.errno), Ok(0));
    check_eq!(ran_on.load(Ordering::SeqCst), victim, "where it ran");
    Ok(())
});

ktest!(misuse::kthread_signal_from_user_space_is_eperm => |ctx| {
    let t = sleeper("mis-unkillable", 0)?;
    check_eq!(kthread::signal_from_user(t.id(), 9).map_err(|e| e.errno), Err(EPERM), "SIGKILL to a kthread");
    check_eq!(kthread::signal_from_user(usize::MAX, 9).map_err(|e| e.errno), Err(ESRCH), "a thread that does not exist");
    check_eq!(t.stop().map_err(|e| e.errno), Ok(0), "the signal must not have touched it");
    Ok(())
});

// ---------------------------------------------------------------- workqueue

ktest!(misuse::wq_queue_on_a_destroyed_queue_is_refused_with_a_warning => |ctx| {
    let q = wq("mis-destroyed", WqFlags::empty(), 0)?;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let item = Work::named("mis_late_item", move || { r.fetch_add(1, Ordering::SeqCst); });
    let handle = q.clone();
    q.destroy().map_err(err("destroy"))?;
    let before = kport::warn::count();
    check_eq!(handle.try_queue_on(None, &item), Err(QueueError::Destroyed));
    warned_once(before, &["mis_late_item refused on 'mis-destroyed'", "Destroyed"])?;
    check_eq!(kport::Error::from(QueueError::Destroyed).errno, ESRCH);
    check!(!handle.queue(&item), "a destroyed queue accepted an item");
    check!(!item.is_pending(), "a refused item was left pending");
    msleep(10);
    check_eq!(runs.load(Ordering::SeqCst), 0, "a refused item ran");
    // Not lost: it can go elsewhere.
    check!(workqueue::system::wq().queue(&item));
    check!(item.flush() || runs.load(Ordering::SeqCst) == 1);
    check_eq!(runs.load(Ordering::SeqCst), 1);
    Ok(())
});

ktest!(misuse::wq_queue_on_a_cpu_that_does_not_exist_is_refused_with_a_warning => |ctx| {
    let n = port().cpu_count();
    let item = Work::named("mis_far_item", || {});
    let before = kport::warn::count();
    check_eq!(workqueue::system::wq().try_queue_on(Some(n + 5), &item), Err(QueueError::BadCpu));
    check!(!item.is_pending(), "a refused item was left pending");
    warned_once(before, &["mis_far_item refused on", &format!("no CPU {}", n + 5)])?;
    check_eq!(kport::Error::from(QueueError::BadCpu).errno, EINVAL);
    Ok(())
});

/// Queue on a fresh queue an item that calls `f(queue, itself)` once, wait
/// for it and return the queue, its run count and `f`'s answer.
fn in_own_item<R: Send + 'static>(
    name: &'static str,
    f: impl Fn(&Workqueue, &Work) -> R + Send + Sync + 'static,
) -> Result<(Workqueue, Arc<AtomicUsize>, R), Failure> {
    let q = wq(name, WqFlags::empty(), 0)?;
    let runs = Arc::new(AtomicUsize::new(0));
    let answer: Arc<SpinLock<Option<R>>> = Arc::new(SpinLock::new(None));
    let me: Arc<spin::Once<(Workqueue, Work)>> = Arc::new(spin::Once::new());
    let (r, a, m) = (runs.clone(), answer.clone(), me.clone());
    let item = Work::named(name, move || {
        if let Some((q, w)) = m.get() {
            let x = f(q, w);
            *a.lock() = Some(x);
        }
        r.fetch_add(1, Ordering::SeqCst);
    });
    me.call_once(|| (q.clone(), item.clone()));
    check!(q.queue(&item));
    check!(wait_for(10_000, || runs.load(Ordering::SeqCst) > 0), "the item hung");
    q.flush().map_err(err("flush"))?;
    let x = answer.lock().take().ok_or(Failure::Fail("no answer".into()))?;
    Ok((q, runs, x))
}

ktest!(misuse::wq_flush_work_from_its_own_item_is_refused_with_a_warning => |ctx| {
    let before = kport::warn::count();
    let (q, runs, waited) = in_own_item("mis_self_flush", |_, w| w.flush())?;
    check!(!waited, "flush_work of itself claims it waited");
    warned_once(before, &["deadlock: mis_self_flush waits for itself", "flush_work from its own function"])?;
    check_eq!(runs.load(Ordering::SeqCst), 1);
    q.destroy().map_err(err("destroy"))
});

ktest!(misuse::wq_flush_workqueue_from_its_own_item_is_eperm_with_a_warning => |ctx| {
    let before = kport::warn::count();
    let (q, runs, r) = in_own_item("mis_self_flush_wq", |q, _| q.flush().map_err(|e| e.errno))?;
    check_eq!(r, Err(EPERM), "flush_workqueue from an item of the queue");
    warned_once(before, &["deadlock: mis_self_flush_wq flushes its own queue 'mis_self_flush_wq'"])?;
    check_eq!(runs.load(Ordering::SeqCst), 1);
    q.destroy().map_err(err("destroy"))
});

ktest!(misuse::wq_cancel_sync_from_its_own_item_does_not_wait_and_warns => |ctx| {
    let before = kport::warn::count();
    let (q, runs, was) = in_own_item("mis_self_cancel", |_, w| w.cancel_sync())?;
    check!(!was, "nothing was pending to cancel");
    warned_once(before, &["deadlock: mis_self_cancel waits for itself", "cancel_work_sync from its own function"])?;
    check_eq!(runs.load(Ordering::SeqCst), 1);
    // A pending instance queued by the item itself is cancelled and said so.
    let before = kport::warn::count();
    let (q2, runs2, was2) = in_own_item("mis_self_cancel2", |q, w| { q.queue(w); w.cancel_sync() })?;
    check!(was2, "the pending instance it queued was not reported cancelled");
    warned_once(before, &["mis_self_cancel2 waits for itself"])?;
    msleep(10);
    check_eq!(runs2.load(Ordering::SeqCst), 1, "the cancelled instance ran");
    q2.destroy().map_err(err("destroy"))?;
    q.destroy().map_err(err("destroy"))
});

ktest!(misuse::wq_destroy_with_an_item_that_requeues_forever_warns_and_refuses_outsiders [timeout_s = 120] => |ctx| {
    let q = wq("mis-forever", WqFlags::empty(), 0)?;
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let me: Arc<spin::Once<(Workqueue, Work)>> = Arc::new(spin::Once::new());
    let (s, r, m) = (stop.clone(), runs.clone(), me.clone());
    let item = Work::named("mis_requeuer", move || {
        r.fetch_add(1, Ordering::SeqCst);
        kthread::msleep(1);
        if !s.load(Ordering::SeqCst)
            && let Some((q, w)) = m.get()
        {
            q.queue(w);
        }
    });
    me.call_once(|| (q.clone(), item.clone()));
    check!(q.queue(&item));
    let before = kport::warn::count();
    let done = Arc::new(AtomicI64::new(i64::MIN));
    let (d, q2) = (done.clone(), q.clone());
    let destroyer = kthread_run!(move || {
        d.store(q2.destroy().map_or_else(|e| -(e.errno as i64), |()| 0), Ordering::SeqCst);
        0
    }, "mis-destroyer").map_err(err("run"))?;
    let warned = wait_for(30_000, || kport::warn::since(before).iter().any(|l| l.contains("drain of 'mis-forever' isn't complete")));
    // From outside the queue, queueing while it drains is refused.
    let outsider = Work::named("mis_outsider", || {});
    let refused = q.try_queue_on(None, &outsider);
    stop.store(true, Ordering::SeqCst);
    check!(wait_for(30_000, || done.load(Ordering::SeqCst) != i64::MIN), "destroy never returned after the chain ended");
    check_eq!(destroyer.stop().map_err(|e| e.errno), Ok(0));
    check!(warned, "no drain warning while the item requeued itself ({} runs)", runs.load(Ordering::SeqCst));
    warned_once(before, &["drain of 'mis-forever' isn't complete after 10 tries"])?;
    check_eq!(done.load(Ordering::SeqCst), 0, "destroy's result");
    check_eq!(refused, Err(QueueError::Draining), "an outsider queued during the drain");
    warned_once(before, &["mis_outsider refused on 'mis-forever'", "Draining"])?;
    check!(!outsider.is_pending() && !item.is_pending(), "an item was left pending");
    let n = runs.load(Ordering::SeqCst);
    msleep(10);
    check_eq!(runs.load(Ordering::SeqCst), n, "the item ran after destroy returned");
    Ok(())
});

ktest!(misuse::wq_max_active_0_is_the_default_and_above_the_limit_is_clamped_with_a_warning => |ctx| {
    let before = kport::warn::count();
    let q = wq("mis-dfl", WqFlags::empty(), 0)?;
    check_eq!(q.max_active(), WQ_DFL_ACTIVE, "max_active 0");
    not_warned(before, "mis-dfl")?;
    let big = WQ_MAX_ACTIVE + 1;
    let r = wq("mis-big", WqFlags::empty(), big)?;
    check_eq!(r.max_active(), WQ_MAX_ACTIVE, "max_active {big}");
    warned_once(before, &[&format!("max_active {big} for 'mis-big' out of range, using {WQ_MAX_ACTIVE}")])?;
    let before = kport::warn::count();
    r.set_max_active(0).map_err(err("set_max_active 0"))?;
    check_eq!(r.max_active(), 1, "set_max_active(0) clamps to 1");
    warned_once(before, &["max_active 0 for 'mis-big' out of range, using 1"])?;
    q.destroy().map_err(err("destroy"))?;
    r.destroy().map_err(err("destroy"))
});

ktest!(misuse::wq_set_max_active_on_an_ordered_queue_is_einval_with_a_warning => |ctx| {
    let q = Workqueue::ordered("mis-ordered", WqFlags::empty()).map_err(err("ordered"))?;
    let before = kport::warn::count();
    check_eq!(q.set_max_active(4).map_err(|e| e.errno), Err(EINVAL));
    warned_once(before, &["set_max_active on the ordered queue 'mis-ordered': refused"])?;
    check_eq!(q.max_active(), 1);
    q.destroy().map_err(err("destroy"))
});

ktest!(misuse::wq_bh_queue_with_unbound_or_max_active_is_einval_with_a_warning => |ctx| {
    let before = kport::warn::count();
    check_eq!(Workqueue::new("mis-bh1", WqFlags::BH | WqFlags::UNBOUND, 0).map(|_| ()).map_err(|e| e.errno), Err(EINVAL));
    warned_once(before, &["'mis-bh1': a BH queue takes no flag but HIGHPRI"])?;
    check_eq!(Workqueue::new("mis-bh2", WqFlags::BH, 4).map(|_| ()).map_err(|e| e.errno), Err(EINVAL));
    warned_once(before, &["'mis-bh2': a BH queue takes no flag but HIGHPRI"])?;
    Ok(())
});

ktest!(misuse::wq_enable_without_disable_is_ignored_with_a_warning => |ctx| {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let item = Work::named("mis_unbalanced", move || { r.fetch_add(1, Ordering::SeqCst); });
    let before = kport::warn::count();
    item.enable();
    warned_once(before, &["mis_unbalanced: enable without a matching disable"])?;
    // The count stayed at 0: one disable really disables it.
    item.disable();
    check!(!workqueue::system::wq().queue(&item), "a disabled item was queued");
    check!(item.enable(), "one enable undoes the one disable");
    check!(workqueue::system::wq().queue(&item));
    item.flush();
    check_eq!(runs.load(Ordering::SeqCst), 1);
    Ok(())
});

// ---------------------------------------------------------------- kthread_worker

ktest!(misuse::kthread_worker_destroy_with_an_armed_delayed_item_cancels_it_with_a_warning => |ctx| {
    let w = KthreadWorker::create(format_args!("mis-kw")).map_err(err("create"))?;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let late = KthreadDelayedWork::new(move || { r.fetch_add(1, Ordering::SeqCst); });
    check!(w.queue_delayed(&late, 10_000_000_000));
    let before = kport::warn::count();
    check_eq!(w.destroy(), 1, "destroy reports the cancelled item");
    warned_once(before, &["kthread_destroy_worker mis-kw: 1 delayed item(s) with an armed timer cancelled"])?;
    // Reported cancelled, not lost: it can go to another worker and runs once.
    let other = KthreadWorker::create(format_args!("mis-kw2")).map_err(err("create"))?;
    check!(other.queue(late.work()), "the cancelled item could not be queued elsewhere");
    other.flush();
    check_eq!(runs.load(Ordering::SeqCst), 1);
    other.destroy();
    Ok(())
});

ktest!(misuse::kthread_work_queued_on_a_second_worker_is_refused_with_a_warning => |ctx| {
    let a = KthreadWorker::create(format_args!("mis-kwa")).map_err(err("create a"))?;
    let b = KthreadWorker::create(format_args!("mis-kwb")).map_err(err("create b"))?;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let item = KthreadWork::new(move || { r.fetch_add(1, Ordering::SeqCst); });
    check!(a.queue(&item));
    a.flush_work(&item);
    let before = kport::warn::count();
    check!(!b.queue(&item), "work attached to mis-kwa was queued on mis-kwb");
    warned_once(before, &["queued on worker mis-kwb while attached to worker mis-kwa: refused"])?;
    b.flush();
    check_eq!(runs.load(Ordering::SeqCst), 1, "ran once, on its own worker");
    a.destroy();
    b.destroy();
    Ok(())
});

// ---------------------------------------------------------------- bottom halves and interrupts

static BH_SLEEPER: Mutex<()> = Mutex::new(());

ktest!(misuse::sleeping_in_a_softirq_is_reported [may_report = true] => |ctx| {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let t = Tasklet::named("mis_sleepy_tasklet", move || {
        drop(BH_SLEEPER.lock());
        d.store(true, Ordering::SeqCst);
    });
    let before = kport::context::reports();
    check!(t.schedule());
    check!(wait_for(5_000, || done.load(Ordering::SeqCst)), "the tasklet never ran");
    let reps = kport::context::reports_since(before);
    let r = reps.first().ok_or(Failure::Fail("no might_sleep report from a tasklet taking a mutex".into()))?;
    check!(r.context.softirq && !r.context.hardirq, "the report does not say softirq: {:?}", r.context);
    check!(r.location.file().ends_with("misuse.rs"), "reported at {}:{}", r.location.file(), r.location.line());
    t.kill().map_err(err("tasklet_kill"))
});

ktest!(misuse::sleeping_in_a_hard_irq_handler_is_reported [may_report = true] => |ctx| {
    let t = test_irq()?;
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let action = request_irq(t.line(), Box::new(move |_| {
        drop(BH_SLEEPER.lock());
        d.store(true, Ordering::SeqCst);
        IrqReturn::Handled
    }), IrqFlags::empty(), "mis-sleepy").map_err(err("request_irq"))?;
    let before = kport::context::reports();
    t.fire();
    let ran = wait_for(5_000, || done.load(Ordering::SeqCst));
    free_irq(action).map_err(|(e, _)| Failure::Fail(format!("free_irq: {e:?}")))?;
    check!(ran, "the handler never ran");
    let reps = kport::context::reports_since(before);
    let r = reps.first().ok_or(Failure::Fail("no might_sleep report from a hard handler taking a mutex".into()))?;
    check!(r.context.hardirq, "the report does not say hardirq: {:?}", r.context);
    check!(r.location.file().ends_with("misuse.rs"), "reported at {}:{}", r.location.file(), r.location.line());
    Ok(())
});

ktest!(misuse::tasklet_kill_from_the_tasklet_itself_is_einval_with_a_warning [may_report = true] => |ctx| {
    let answer = Arc::new(SpinLock::new(None));
    let runs = Arc::new(AtomicUsize::new(0));
    let me: Arc<spin::Once<Tasklet>> = Arc::new(spin::Once::new());
    let (a, r, m) = (answer.clone(), runs.clone(), me.clone());
    let t = Tasklet::named("mis_self_kill", move || {
        r.fetch_add(1, Ordering::SeqCst);
        if let Some(t) = m.get() {
            *a.lock() = Some(t.kill().map_err(|e| e.errno));
        }
    });
    me.call_once(|| t.clone());
    let before = kport::warn::count();
    check!(t.schedule());
    check!(wait_for(5_000, || answer.lock().is_some()), "the tasklet never ran");
    check_eq!(*answer.lock(), Some(Err(EINVAL)), "tasklet_kill from the tasklet");
    warned_once(before, &["tasklet_kill of mis_self_kill from interrupt context"])?;
    t.kill().map_err(err("tasklet_kill from task context"))?;
    check_eq!(runs.load(Ordering::SeqCst), 1);
    Ok(())
});

ktest!(misuse::tasklet_disable_from_the_tasklet_itself_does_not_wait_and_warns => |ctx| {
    let runs = Arc::new(AtomicUsize::new(0));
    let me: Arc<spin::Once<Tasklet>> = Arc::new(spin::Once::new());
    let (r, m) = (runs.clone(), me.clone());
    let t = Tasklet::named("mis_self_disable", move || {
        r.fetch_add(1, Ordering::SeqCst);
        if let Some(t) = m.get() {
            t.disable();
        }
    });
    me.call_once(|| t.clone());
    let before = kport::warn::count();
    check!(t.schedule());
    check!(wait_for(5_000, || runs.load(Ordering::SeqCst) == 1), "the tasklet never ran (or hung disabling itself)");
    warned_once(before, &["tasklet_disable of mis_self_disable from the tasklet itself"])?;
    check!(t.is_disabled(), "the disable did not take");
    // Disabled: scheduled again, it does not run until enabled.
    check!(t.schedule());
    msleep(20);
    check_eq!(runs.load(Ordering::SeqCst), 1, "ran while disabled");
    t.enable();
    check!(wait_for(5_000, || runs.load(Ordering::SeqCst) == 2), "did not run after the enable");
    // It disabled itself again in that run: enable once more and kill it.
    t.enable();
    t.kill().map_err(err("tasklet_kill"))?;
    Ok(())
});

ktest!(misuse::tasklet_enable_without_disable_is_ignored_with_a_warning => |ctx| {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let t = Tasklet::named("mis_unbalanced_tasklet", move || { r.fetch_add(1, Ordering::SeqCst); });
    let before = kport::warn::count();
    t.enable();
    warned_once(before, &["tasklet mis_unbalanced_tasklet: enable without disable; ignored"])?;
    // The count stayed at 0: it still runs when scheduled.
    check!(t.schedule());
    check!(wait_for(5_000, || runs.load(Ordering::SeqCst) == 1), "an over-enabled tasklet never ran");
    t.kill().map_err(err("tasklet_kill"))
});

/// The action a handler frees itself through, and what `free_irq` said.
type SelfFree = (Arc<SpinLock<Option<softirq::IrqAction>>>, Arc<SpinLock<Option<Result<(), i32>>>>);

/// From inside a handler of the action in `sf.0`: `free_irq` it, note the
/// answer, and put a refused action back. The action is taken out of its
/// slot before the call, so the slot's lock is not held across it.
fn free_self(sf: &SelfFree) {
    let mine = sf.0.lock().take();
    if let Some(me) = mine {
        match free_irq(me) {
            Ok(()) => *sf.1.lock() = Some(Ok(())),
            Err((e, me)) => {
                *sf.1.lock() = Some(Err(e.errno));
                *sf.0.lock() = Some(me);
            }
        }
    }
}

/// Fire the test line once the action is in its slot, wait for the
/// handler's answer, free the action from task context, and check the
/// refusal (`EINVAL`) and its one warning.
fn fire_and_check_self_free(
    t: &'static dyn kport::irq::TestIrq,
    sf: &SelfFree,
    action: softirq::IrqAction,
    from: &str,
    warning: &str,
) -> TestResult {
    *sf.0.lock() = Some(action);
    let before = kport::warn::count();
    t.fire();
    let ran = wait_for(5_000, || sf.1.lock().is_some());
    let action = sf.0.lock().take();
    if let Some(a) = action {
        free_irq(a).map_err(|(e, _)| Failure::Fail(format!("free_irq from task context: {e:?}")))?;
    }
    check!(ran, "the handler never ran");
    check_eq!(*sf.1.lock(), Some(Err(EINVAL)), "free_irq from {from}");
    warned_once(before, &[warning])
}

ktest!(misuse::free_irq_from_its_own_hard_handler_is_einval_with_a_warning [may_report = true] => |ctx| {
    let t = test_irq()?;
    let sf: SelfFree = (Arc::new(SpinLock::new(None)), Arc::new(SpinLock::new(None)));
    let inner = sf.clone();
    let action = request_irq(t.line(), Box::new(move |_| {
        free_self(&inner);
        IrqReturn::Handled
    }), IrqFlags::empty(), "mis-selffree").map_err(err("request_irq"))?;
    fire_and_check_self_free(t, &sf, action, "the action's own hard handler", "(mis-selffree) from interrupt context: it would wait for itself; refused")
});

ktest!(misuse::free_irq_from_its_own_thread_is_einval_with_a_warning => |ctx| {
    let t = test_irq()?;
    let sf: SelfFree = (Arc::new(SpinLock::new(None)), Arc::new(SpinLock::new(None)));
    let inner = sf.clone();
    let action = request_threaded_irq(t.line(), None, Some(Box::new(move |_| {
        free_self(&inner);
        IrqReturn::Handled
    })), IrqFlags::ONESHOT, "mis-threadfree").map_err(err("request_threaded_irq"))?;
    fire_and_check_self_free(t, &sf, action, "the action's own thread", "(mis-threadfree) from its own thread: it would wait for itself; refused")
});

ktest!(misuse::request_irq_of_a_bad_line_or_a_thread_without_oneshot_is_einval => |ctx| {
    let t = test_irq()?;
    let nr = port().irq_chip().map_or(0, |c| c.nr_irqs());
    check_eq!(request_irq(nr + 7, Box::new(|_| IrqReturn::Handled), IrqFlags::empty(), "mis-x").map(|_| ()).map_err(|e| e.errno), Err(EINVAL), "a line that does not exist");
    let before = kport::warn::count();
    check_eq!(
        request_threaded_irq(t.line(), None, Some(Box::new(|_| IrqReturn::Handled)), IrqFlags::empty(), "mis-noshot").map(|_| ()).map_err(|e| e.errno),
        Err(EINVAL),
        "a thread without a hard handler needs ONESHOT"
    );
    warned_once(before, &["(mis-noshot): a threaded handler without a hard handler needs ONESHOT"])?;
    Ok(())
});

// ---------------------------------------------------------------- block layer

ktest!(misuse::block_request_beyond_the_device_is_einval => |ctx| {
    use drivers::block::{BlockBuf, Op};
    let main = crate::block::disk(ctx, "kblk-main")?;
    let cap = main.info().capacity;
    let buf = BlockBuf::new(1024).map_err(err("buffer"))?;
    let (r, back) = main.submit_wait(Op::Read, cap - 1, Some(buf));
    check_eq!(r.map_err(|e| e.errno), Err(EINVAL), "a read across the end");
    check!(back.is_some(), "the refused read lost its buffer");
    let buf = BlockBuf::new(512).map_err(err("buffer"))?;
    match main.write(cap, buf) {
        Err((e, Some(_))) => check_eq!(e.errno, EINVAL, "a write past the end"),
        Err((e, None)) => return fail(format!("the refused write lost its buffer ({e:?})")),
        Ok(_) => return fail("a write past the end succeeded"),
    }
    check_eq!(main.stats().in_flight, 0, "requests left in flight");
    Ok(())
});

ktest!(misuse::block_write_to_a_read_only_device_is_erofs => |ctx| {
    use drivers::block::BlockBuf;
    let ro = crate::block::disk(ctx, "kblk-ro")?;
    let errors = ro.stats().errors;
    let buf = BlockBuf::new(512).map_err(err("buffer"))?;
    match ro.write(3, buf) {
        Err((e, Some(_))) => check_eq!(e.errno, EROFS, "a write to a read-only disk"),
        Err((e, None)) => return fail(format!("the refused write lost its buffer ({e:?})")),
        Ok(_) => return fail("a write to a read-only disk succeeded"),
    }
    check_eq!(ro.stats().errors, errors, "a refused request never reached the device");
    Ok(())
});
