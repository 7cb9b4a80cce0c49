//! Suite `observe`, the `ps` part: the kernel-thread listing
//! (`kthreadd::registry::rows()` and its text `registry::ps()`, which is
//! `sys:kthread` inside Redox) shows the right state, CPU, CPU time, `%CPU`
//! and wait channel for threads the case controls: one spinning on CPU 1,
//! one spinning then sleeping, sleepers in `S` and `D`, a parked thread, an
//! idle workqueue worker and rescuer (`I`), an exited thread (`Z`).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kport::sync::WaitQueue;
use kport::{CpuMask, port};
use kthreadd::kthread::{self, Builder, Kthread};
use kthreadd::registry::{self, CPU_USAGE_INTERVAL_NS, Row};
use workqueue::{Work, Workqueue, WqFlags, system};

use crate::port_api::{msleep, wait_for};
use crate::{Failure, check, check_eq, err, fail, ktest};

/// How long the spinning thread spins before the listing is read, in ms:
/// more than one `%CPU` interval, so the figure is a measured share.
const SPIN_MS: u64 = 1_500;

/// The share of its spinning time the spinner must have been charged. It
/// is alone on CPU 1 but for the CPU's own kworker and softirq thread,
/// which run for microseconds; a port that charged a thread that keeps its
/// CPU only at its switches would show almost nothing.
const MIN_CHARGED_PERCENT: u64 = 75;

/// The least `%CPU` (tenths of a percent) a thread that did nothing but
/// spin since its creation may show.
const MIN_SPIN_PERMILLE: u32 = 700;

/// The most `%CPU` (tenths of a percent) a thread that has slept through
/// the whole window may show.
const MAX_SLEEP_PERMILLE: u32 = 20;

/// The listing's row of context `id`.
fn row_of(id: usize) -> Result<Row, Failure> {
    registry::rows()
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| Failure::Fail(format!("context {id} is not listed:\n{}", registry::ps())))
}

/// Wait until the row of `id` satisfies `ok`; the last row seen either way.
fn wait_row(id: usize, ok: impl Fn(&Row) -> bool) -> Result<(bool, Row), Failure> {
    let mut last = None;
    let done = wait_for(5_000, || {
        let r = registry::rows().into_iter().find(|r| r.id == id);
        let hit = r.as_ref().is_some_and(&ok);
        last = r;
        hit
    });
    match last {
        Some(r) => Ok((done, r)),
        None => fail(format!("context {id} is not listed:\n{}", registry::ps())),
    }
}

/// The text line of `ps()` for context `id`, split into its nine columns
/// (the name, which may contain spaces, last).
fn text_columns(id: usize) -> Result<Vec<String>, Failure> {
    let text = registry::ps();
    for line in text.lines().skip(1) {
        let mut cols: Vec<String> = Vec::new();
        let mut rest = line;
        for _ in 0..8 {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap_or(rest.len());
            cols.push(String::from(&rest[..end]));
            rest = &rest[end..];
        }
        cols.push(String::from(rest.trim()));
        if cols[0] == format!("{id}") {
            return Ok(cols);
        }
    }
    fail(format!("no line of ps() for context {id}:\n{text}"))
}

/// A thread bound to CPU 1 that spins (with the voluntary preemption
/// points a kernel loop has) until `stop`, then sleeps until asked to stop
/// if `then_sleep`. `began` gets the time it started spinning, `spun` the
/// time it spent spinning once it stops.
struct Spinner {
    t: Kthread,
    stop: Arc<AtomicBool>,
    began: Arc<AtomicU64>,
    spun: Arc<AtomicU64>,
}

fn spinner(name: &str, then_sleep: bool) -> Result<Spinner, Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    let began = Arc::new(AtomicU64::new(0));
    let spun = Arc::new(AtomicU64::new(0));
    let (s, b, d) = (stop.clone(), began.clone(), spun.clone());
    let t = Builder::new(format_args!("{name}"), move || {
        let p = port();
        let start = p.now_ns();
        b.store(start, Ordering::SeqCst);
        while !s.load(Ordering::Acquire) && !kthread::should_stop() {
            core::hint::spin_loop();
            p.cond_resched();
        }
        d.store(p.now_ns() - start, Ordering::SeqCst);
        if then_sleep {
            let wq = WaitQueue::new();
            kthread::wait_event_or_stop(&wq, "observe_ps_nap", || false);
        }
        0
    })
    .affinity(CpuMask::one(1))
    .create()
    .map_err(err("create"))?;
    t.wake();
    if !wait_for(5_000, || began.load(Ordering::SeqCst) != 0) {
        let _ = t.stop();
        return fail(format!("[{name}] never started spinning"));
    }
    Ok(Spinner { t, stop, began, spun })
}

ktest!(observe::ps_spinning_thread_is_r_on_its_cpu_with_its_cpu_time [min_cpus = 2] => |ctx| {
    let p = port();
    let s = spinner("ps-spin", false)?;
    let created = s.began.load(Ordering::SeqCst);
    msleep(SPIN_MS);
    let before = p.now_ns();
    let r = row_of(s.t.id());
    let after = p.now_ns();
    let cols = text_columns(s.t.id());
    // The whole listing while it spins (the text `sys:kthread` serves inside Redox).
    for line in registry::ps().lines() {
        crate::diag!("ps: {line}");
    }
    s.stop.store(true, Ordering::Release);
    let _ = s.t.stop();
    let r = r?;
    let cols = cols?;
    crate::diag!("spinner: {:?}", r);
    check_eq!(r.state, 'R', "a spinning thread");
    check_eq!(r.cpu, 1, "the CPU it is bound to");
    check_eq!(r.affinity, 0b10, "its affinity");
    check_eq!(r.wchan, "", "a running thread waits on nothing");
    let spun = before - created;
    check!(
        r.cpu_time_ns >= spun / 100 * MIN_CHARGED_PERCENT,
        "it spun {} µs but is charged {} µs",
        spun / 1000,
        r.cpu_time_ns / 1000
    );
    check!(
        r.cpu_time_ns <= after - created + 50_000_000,
        "charged {} µs in {} µs of life",
        r.cpu_time_ns / 1000,
        (after - created) / 1000
    );
    check!(r.cpu_permille >= MIN_SPIN_PERMILLE, "%CPU of a spinning thread is {}", r.cpu_permille as f64 / 10.0);
    // The text says the same.
    check_eq!(cols[2].as_str(), "R");
    check_eq!(cols[3].as_str(), "1");
    check_eq!(cols[4].as_str(), "0x2");
    check!(cols[5].contains('.') && cols[5].len() >= 3, "%CPU column `{}`", cols[5]);
    let pcpu: u32 = cols[5].replace('.', "").parse().map_err(err("%CPU column"))?;
    check!(pcpu.abs_diff(r.cpu_permille) <= 50, "%CPU {} in the text, {} in the row", cols[5], r.cpu_permille);
    check_eq!(cols[7].as_str(), "-", "WCHAN of a running thread");
    check_eq!(cols[8].as_str(), "[ps-spin]");
    Ok(())
});

ktest!(observe::ps_cpu_share_is_over_the_last_interval [min_cpus = 2] => |ctx| {
    // Spin for a while, then sleep: the total CPU time stays, the share of
    // the last interval drops to nothing once a whole interval passed.
    let s = spinner("ps-burst", true)?;
    msleep(SPIN_MS);
    s.stop.store(true, Ordering::Release);
    let napping = wait_row(s.t.id(), |r| r.state == 'S' && r.wchan == "observe_ps_nap");
    let result = (|| -> Result<(), Failure> {
        let (ok, r) = napping?;
        check!(ok, "the spinner did not go to sleep: {r:?}");
        let spun = s.spun.load(Ordering::SeqCst);
        check!(
            r.cpu_time_ns >= spun / 100 * MIN_CHARGED_PERCENT,
            "it spun {} µs but is charged {} µs",
            spun / 1000,
            r.cpu_time_ns / 1000
        );
        // A read now renews the samples (the newer one is the creation's,
        // over an interval old); a read more than an interval later covers
        // only sleep.
        let _ = row_of(s.t.id())?;
        msleep(CPU_USAGE_INTERVAL_NS / 1_000_000 + 200);
        let later = row_of(s.t.id())?;
        crate::diag!("after the burst: {:?}", later);
        check_eq!(later.state, 'S');
        check!(later.cpu_time_ns >= r.cpu_time_ns, "CPU time went back: {r:?} then {later:?}");
        check!(
            later.cpu_permille <= MAX_SLEEP_PERMILLE,
            "%CPU {} over an interval of sleep (total CPU time {} µs)",
            later.cpu_permille as f64 / 10.0,
            later.cpu_time_ns / 1000
        );
        Ok(())
    })();
    let _ = s.t.stop();
    result
});

ktest!(observe::ps_shows_s_d_p_and_z_with_wait_channels => |ctx| {
    // S: an interruptible wait.
    let wq_s = Arc::new(WaitQueue::new());
    let w = wq_s.clone();
    let s = Builder::new(format_args!("ps-sleep-s"), move || {
        kthread::wait_event_or_stop(&w, "observe_ps_s", || false);
        0
    })
    .run()
    .map_err(err("run S"))?;
    // D: an uninterruptible wait, ended by `release`.
    let wq_d = Arc::new(WaitQueue::new());
    let release = Arc::new(AtomicBool::new(false));
    let (w, rel) = (wq_d.clone(), release.clone());
    let d = Builder::new(format_args!("ps-sleep-d"), move || {
        w.wait_event("observe_ps_d", || rel.load(Ordering::Acquire));
        0
    })
    .run()
    .map_err(err("run D"))?;
    // P: parked.
    let pk = Builder::new(format_args!("ps-parked"), || {
        while !kthread::should_stop() {
            if kthread::should_park() {
                kthread::parkme();
            }
            kthread::sleep_ms_or_stop(1);
        }
        0
    })
    .run()
    .map_err(err("run P"))?;
    // Z: exited, its handle kept.
    let z = Builder::new(format_args!("ps-exited"), || 7).run().map_err(err("run Z"))?;

    let result = (|| -> Result<(), Failure> {
        pk.park().map_err(err("park"))?;
        check!(wait_for(5_000, || z.has_exited()), "[ps-exited] did not exit");
        let (ok, r) = wait_row(s.id(), |r| r.state == 'S')?;
        check!(ok, "interruptible sleeper: {r:?}");
        check_eq!(r.wchan, "observe_ps_s");
        let (ok, r) = wait_row(d.id(), |r| r.state == 'D')?;
        check!(ok, "uninterruptible sleeper: {r:?}");
        check_eq!(r.wchan, "observe_ps_d");
        let (ok, r) = wait_row(pk.id(), |r| r.state == 'P')?;
        check!(ok, "parked thread: {r:?}");
        check_eq!(r.wchan, "kthread_parkme");
        let (ok, r) = wait_row(z.id(), |r| r.state == 'Z')?;
        check!(ok, "exited thread: {r:?}");
        check_eq!(r.name.as_str(), "[ps-exited]");
        // The text carries the same letters and channels.
        for (t, letter, wchan) in [(&s, "S", "observe_ps_s"), (&d, "D", "observe_ps_d"), (&pk, "P", "kthread_parkme")] {
            let cols = text_columns(t.id())?;
            check_eq!(cols[2].as_str(), letter, "state in the text of [{}]", t.comm());
            check_eq!(cols[7].as_str(), wchan, "WCHAN in the text of [{}]", t.comm());
        }
        Ok(())
    })();
    release.store(true, Ordering::Release);
    wq_d.wake_all();
    let _ = s.stop();
    let _ = d.stop();
    let _ = pk.stop();
    let _ = z.stop();
    result
});

ktest!(observe::ps_shows_idle_kworkers_and_rescuers_as_i => |ctx| {
    // A worker of CPU 0's pool, found by running an item there.
    let who = Arc::new(AtomicUsize::new(0));
    let w = who.clone();
    let item = Work::named("observe_ps_item", move || w.store(port().current_id(), Ordering::SeqCst));
    check!(system::wq().queue_on(0, &item), "the item was already pending");
    check!(wait_for(5_000, || who.load(Ordering::SeqCst) != 0), "the item did not run");
    let id = who.load(Ordering::SeqCst);
    let (ok, r) = wait_row(id, |r| r.state == 'I')?;
    check!(ok, "an idle kworker: {r:?}");
    check_eq!(r.wchan, "worker_thread");
    check!(r.name.starts_with("[kworker/0:"), "the worker of CPU 0 is listed as {}", r.name);
    // A rescuer waiting for maydays.
    let q = Workqueue::new("ps-rescued", WqFlags::MEM_RECLAIM, 0).map_err(err("workqueue"))?;
    let result = (|| -> Result<(), Failure> {
        let resc = q.rescuer().ok_or(Failure::Fail("a MEM_RECLAIM queue without a rescuer".into()))?;
        let (ok, r) = wait_row(resc.id(), |r| r.state == 'I')?;
        check!(ok, "an idle rescuer: {r:?}");
        check_eq!(r.wchan, "rescuer");
        // The name is cut to the listing's 15 bytes, as Linux's `comm`.
        check!(r.name.starts_with("[kworker/R-ps-"), "the rescuer is listed as {}", r.name);
        Ok(())
    })();
    q.destroy().map_err(err("destroy"))?;
    result
});

ktest!(observe::ps_idle_is_only_for_workqueue_workers => |ctx| {
    // Linux lists kthreadd, ksoftirqd and kthread_worker threads asleep
    // interruptibly: only workqueue workers and rescuers wait for work idle.
    let kd = kthread::kthreadd().ok_or(Failure::Fail("no kthreadd".into()))?;
    let (ok, r) = wait_row(kd.id(), |r| r.state == 'S')?;
    check!(ok, "kthreadd: {r:?}");
    check_eq!(r.wchan, "kthreadd");
    let rows = registry::rows();
    let bad: Vec<&Row> = rows
        .iter()
        .filter(|r| r.state == 'I' && !(r.name.starts_with("[kworker/") && matches!(r.wchan, "worker_thread" | "rescuer")))
        .collect();
    check!(bad.is_empty(), "threads idle that are not workqueue workers: {bad:?}");
    Ok(())
});
