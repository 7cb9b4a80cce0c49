//! Suite `observe`: the hung-task and soft-lockup detectors, stack dumps of
//! sleeping threads, SysRq and the sysctl table (`docs/observe.md`).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use kport::sync::WaitQueue;
use kport::sysctl;
use kport::{CpuMask, EINVAL, ENOENT, TaskState, port};
use kthreadd::kthread::{Builder, Kthread};
use kthreadd::{hung_task, sysrq, watchdog};

use crate::port_api::{msleep, wait_for};
use crate::{Failure, TestResult, check, check_eq, err, ktest};

/// Settings a case changes, put back when it ends (also on failure).
struct Restore(Vec<(&'static str, i64)>);

impl Restore {
    fn save(names: &[&'static str]) -> Result<Self, Failure> {
        let mut v = Vec::new();
        for n in names {
            v.push((*n, sysctl::get(n).map_err(err(n))?));
        }
        Ok(Restore(v))
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        for (n, v) in &self.0 {
            let _ = sysctl::set(n, &format!("{v}"));
        }
    }
}

fn set(name: &str, v: i64) -> TestResult {
    sysctl::set(name, &format!("{v}")).map_err(|e| Failure::Fail(format!("sysctl {name}={v}: {e:?}")))
}

/// A thread that sleeps on `wq` (uninterruptibly if `d`) until `go` is
/// set, inside a function of its own so a stack dump can be checked to
/// pass through it.
struct Sleeper {
    k: Kthread,
    go: Arc<AtomicBool>,
    wq: Arc<WaitQueue>,
}

#[inline(never)]
fn observe_blocker(wq: &WaitQueue, go: &AtomicBool, d: bool) {
    if d {
        wq.wait_event("observe_d_wait", || go.load(Ordering::Acquire));
    } else {
        wq.wait_event_interruptible("observe_s_wait", || go.load(Ordering::Acquire));
    }
    // Keep this frame a real call frame (not a tail call).
    core::hint::black_box(go);
}

impl Sleeper {
    fn start(name: &str, d: bool) -> Result<Sleeper, Failure> {
        let go = Arc::new(AtomicBool::new(false));
        let wq = Arc::new(WaitQueue::new());
        let (g, w) = (go.clone(), wq.clone());
        let k = Builder::new(format_args!("{name}"), move || {
            observe_blocker(&w, &g, d);
            0
        })
        .run()
        .map_err(err("run"))?;
        let want = if d { TaskState::DiskSleep } else { TaskState::Sleeping };
        check!(wait_for(5_000, || k.state() == want), "{name} never slept ({:?})", k.state());
        Ok(Sleeper { k, go, wq })
    }

    fn release(&self) {
        self.go.store(true, Ordering::Release);
        self.wq.wake_all();
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        self.release();
        let _ = self.k.stop();
    }
}

/// The start of a hung-task case: `khungtaskd` running, and its settings
/// put back when the returned guard goes.
fn hung_task_case() -> Result<Restore, Failure> {
    hung_task::init().map_err(err("khungtaskd"))?;
    Restore::save(&[
        "kernel.hung_task_timeout_secs",
        "kernel.hung_task_check_interval_secs",
        "kernel.hung_task_warnings",
    ])
}

/// Can this port walk a sleeping thread's stack?
fn walks_stacks() -> bool {
    port().name() != "host"
}

/// Does disabling preemption keep other threads off the CPU? Not on the
/// host port, where preemption state is a per-thread counter and the OS
/// still runs every thread (`kport::host`).
fn preemption_is_real() -> bool {
    port().name() != "host"
}

ktest!(observe::hung_task_reports_d_sleeper_once_with_stack [may_report = true, timeout_s = 120] => |ctx| {
    let _restore = hung_task_case()?;
    let seq0 = hung_task::reports();
    set("kernel.hung_task_warnings", 1)?;
    set("kernel.hung_task_check_interval_secs", 0)?;
    set("kernel.hung_task_timeout_secs", 1)?;
    let d = Sleeper::start("observe_hung", true)?;
    let s = Sleeper::start("observe_sleepy", false)?;
    // Reported at the second check that sees it blocked: 1 to 2 s.
    check!(
        wait_for(8_000, || hung_task::reports_since(seq0).iter().any(|r| r.id == d.k.id())),
        "the D sleeper was not reported within 8 s (checks done: {})",
        hung_task::checks()
    );
    // Three more checks: no further report (the one warning is used up).
    let checks = hung_task::checks();
    check!(wait_for(8_000, || hung_task::checks() >= checks + 3), "khungtaskd stopped checking");
    let reports = hung_task::reports_since(seq0);
    check_eq!(reports.len(), 1, "reports: {reports:?}");
    check_eq!(sysctl::get("kernel.hung_task_warnings").map_err(err("get"))?, 0);
    let r = &reports[0];
    check_eq!(r.name.as_str(), "observe_hung");
    check_eq!(r.wchan, "observe_d_wait");
    check_eq!(r.secs, 1);
    let head = format!("INFO: task observe_hung:{} blocked for more than 1 seconds.", d.k.id());
    check!(r.text.starts_with(&head), "report text:\n{}", r.text);
    check!(r.text.contains("state:D wchan:observe_d_wait"), "report text:\n{}", r.text);
    if walks_stacks() {
        check!(r.frames >= 2, "stack dump has {} frames:\n{}", r.frames, r.text);
        check!(r.text.contains("# backtrace:\n#  0: 0x"), "no frames in:\n{}", r.text);
    }
    check!(s.k.state() == TaskState::Sleeping, "the S sleeper woke");
    drop(d);
    drop(s);
    let _ = ctx;
    Ok(())
});

ktest!(observe::hung_task_repeats_without_limit_and_spares_short_sleeps [may_report = true, timeout_s = 120] => |ctx| {
    let _restore = hung_task_case()?;
    set("kernel.hung_task_warnings", -1)?;
    set("kernel.hung_task_check_interval_secs", 1)?;
    set("kernel.hung_task_timeout_secs", 3)?;
    let seq0 = hung_task::reports();
    // A D sleeper woken after 1.5 s (half the timeout) is never reported.
    let short = Sleeper::start("observe_short", true)?;
    let long = Sleeper::start("observe_long", true)?;
    msleep(1_500);
    short.release();
    check!(wait_for(5_000, || short.k.has_exited()), "short sleeper did not finish");
    // The long one is reported at every check once past 3 s, with no limit.
    check!(
        wait_for(15_000, || hung_task::reports_since(seq0).iter().filter(|r| r.id == long.k.id()).count() >= 2),
        "observe_long was not reported twice: {:?}",
        hung_task::reports_since(seq0)
    );
    let reports = hung_task::reports_since(seq0);
    check!(!reports.iter().any(|r| r.id == short.k.id()), "short sleep reported: {reports:?}");
    check!(reports.iter().all(|r| r.secs == 3), "{reports:?}");
    check_eq!(sysctl::get("kernel.hung_task_warnings").map_err(err("get"))?, -1);
    drop(long);
    drop(short);
    let _ = ctx;
    Ok(())
});

/// How a spinning thread keeps its CPU.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spin {
    /// Preemption on (a preempt=full kernel takes the CPU away).
    Plain,
    /// Preemption off: the CPU takes interrupts but cannot schedule.
    PreemptOff,
    /// Interrupts off: the CPU takes no timer interrupt either.
    IrqsOff,
}

/// Spin on the calling CPU for `ms`.
fn spin_ms(ms: u64, how: Spin) {
    let p = port();
    let irqs = match how {
        Spin::Plain => None,
        Spin::PreemptOff => {
            p.preempt_disable();
            None
        }
        Spin::IrqsOff => Some(p.irq_save()),
    };
    let end = p.now_ns() + ms * 1_000_000;
    while p.now_ns() < end {
        core::hint::spin_loop();
    }
    match irqs {
        Some(was) => p.irq_restore(was),
        None if how == Spin::PreemptOff => p.preempt_enable(),
        None => {}
    }
}

/// Does the host kernel run kernel threads with interrupts off between
/// their yield points (Redox), so a busy CPU is a hard lockup, never a
/// soft one?
fn kernel_runs_irqs_off() -> bool {
    port().name() == "redox"
}

/// The start of a lockup case: skip on the host port, start the
/// watchdog, and set a 1 s `watchdog_thresh` (lockups at 2 s) until the
/// returned guard puts the settings back.
fn lockup_case() -> Result<Restore, Failure> {
    if !preemption_is_real() {
        return crate::skip("host port: a CPU with preemption or interrupts off still runs other threads");
    }
    watchdog::init().map_err(err("watchdog"))?;
    let restore = Restore::save(&["kernel.watchdog_thresh", "kernel.nmi_watchdog"])?;
    set("kernel.watchdog_thresh", 1)?;
    Ok(restore)
}

/// Run a thread bound to CPU 1 that spins for `ms`; the soft-lockup
/// reports made meanwhile.
fn spin_on_cpu1(name: &str, ms: u64, how: Spin) -> Result<(Kthread, Vec<watchdog::Report>), Failure> {
    let seq0 = watchdog::reports();
    let k = Builder::new(format_args!("{name}"), move || {
        let cpu = port().cpu_id();
        spin_ms(ms, how);
        // Where it spun (the reports are checked against CPU 1).
        cpu as i32
    })
    .affinity(CpuMask::one(1))
    .create()
    .map_err(err("create"))?;
    k.wake();
    check!(wait_for(ms + 30_000, || k.has_exited()), "{name} did not finish");
    let reports = watchdog::reports_since(seq0);
    check_eq!(k.stop().map_err(err("exit code"))?, 1, "the CPU {name} spun on");
    Ok((k, reports))
}

ktest!(observe::soft_lockup_reports_cpu_spinning_with_preemption_off [min_cpus = 2, may_report = true, timeout_s = 120] => |ctx| {
    let _restore = lockup_case()?;
    // Threshold 2 s: a 3.5 s spin is reported once (a second report would
    // need another 2 s). Inside Redox the spinning thread also keeps
    // interrupts off: its buddy reports a hard lockup instead.
    let (k, reports) = spin_on_cpu1("observe_spin", 3_500, Spin::PreemptOff)?;
    let hard = kernel_runs_irqs_off();
    check!(!reports.is_empty(), "no lockup report for a 3.5 s spin with preemption off");
    check!(reports.iter().all(|r| r.cpu == 1), "{reports:?}");
    check!(reports.iter().all(|r| r.name == "observe_spin" && r.id == k.id()), "{reports:?}");
    check_eq!(reports.iter().filter(|r| r.hard == hard).count(), 1, "{reports:?}");
    if !hard {
        check!(reports.iter().all(|r| !r.hard && r.secs >= 2), "{reports:?}");
    }
    // The CPU schedules again: no report during a quiet second.
    let seq = watchdog::reports();
    msleep(2_500);
    check_eq!(watchdog::reports_since(seq), Vec::new());
    let _ = ctx;
    Ok(())
});

ktest!(observe::soft_lockup_follows_the_preemption_model [min_cpus = 2, may_report = true, timeout_s = 120] => |ctx| {
    let _restore = lockup_case()?;
    // Preemption on: under preempt=full the watchdog thread preempts the
    // spinner and nothing is reported; under preempt=none the CPU cannot
    // schedule and the lockup is reported, as on Linux.
    let (_, reports) = spin_on_cpu1("observe_spin_on", 3_500, Spin::Plain)?;
    if kernel_runs_irqs_off() {
        check!(reports.iter().any(|r| r.cpu == 1 && r.hard && r.name == "observe_spin_on"), "{reports:?}");
    } else if ctx.args.preempt_full {
        check_eq!(reports, Vec::new(), "preempt=full");
    } else {
        check!(reports.iter().any(|r| r.cpu == 1 && r.name == "observe_spin_on"), "preempt=none: {reports:?}");
    }
    // Turned off (threshold 0): nothing, even with preemption off.
    set("kernel.watchdog_thresh", 0)?;
    let (_, reports) = spin_on_cpu1("observe_spin_off", 3_000, Spin::PreemptOff)?;
    check_eq!(reports, Vec::new(), "watchdog_thresh=0");
    Ok(())
});

ktest!(observe::hard_lockup_seen_by_the_buddy_cpu [min_cpus = 2, may_report = true, timeout_s = 120] => |ctx| {
    let _restore = lockup_case()?;
    // Interrupts off for 3.5 s: CPU 1's own timer cannot fire; the next
    // CPU sees its count stand still (every 3 periods of 0.4 s) and reports
    // a hard lockup, once, naming the thread.
    let (k, reports) = spin_on_cpu1("observe_irqoff", 3_500, Spin::IrqsOff)?;
    let hard: Vec<_> = reports.iter().filter(|r| r.hard).collect();
    check_eq!(hard.len(), 1, "{reports:?}");
    check_eq!((hard[0].cpu, hard[0].name.as_str(), hard[0].id), (1, "observe_irqoff", k.id()), "{reports:?}");
    // Turned off: nothing from the buddy.
    set("kernel.nmi_watchdog", 0)?;
    let (_, reports) = spin_on_cpu1("observe_irqoff2", 3_000, Spin::IrqsOff)?;
    check!(reports.iter().all(|r| !r.hard), "nmi_watchdog=0: {reports:?}");
    let _ = ctx;
    Ok(())
});

ktest!(observe::stack_dump_of_a_sleeping_thread_passes_through_its_functions => |ctx| {
    if !walks_stacks() {
        return crate::skip("the host port cannot walk another thread's stack");
    }
    let d = Sleeper::start("observe_dump", true)?;
    let mut frames = [0usize; sysrq::MAX_FRAMES];
    let n = d.k.task().stack_trace(&mut frames);
    check!(n >= 3, "{n} frames");
    // One return address lies inside observe_blocker (its call of the
    // wait), a few hundred bytes past its start.
    let f = observe_blocker as *const () as usize;
    check!(
        frames[..n].iter().any(|&a| a > f && a < f + 1024),
        "no frame in observe_blocker at {f:#x}: {:x?}",
        &frames[..n]
    );
    // A running thread is not walked.
    let mut mine = [0usize; 4];
    check_eq!(port().current().stack_trace(&mut mine), 0);
    // SysRq w lists it among the blocked threads.
    check!(sysrq::show_state(true) >= 1);
    check!(sysrq::handle('w').is_ok());
    check_eq!(sysrq::handle('?').map_err(|e| e.errno), Err(EINVAL));
    drop(d);
    let _ = ctx;
    Ok(())
});

ktest!(observe::sysctl_table_names_bounds_and_boot_words => |ctx| {
    hung_task::init().map_err(err("khungtaskd"))?;
    watchdog::init().map_err(err("watchdog"))?;
    let _restore = Restore::save(&["kernel.watchdog_thresh", "kernel.hung_task_warnings"])?;
    let names = sysctl::names();
    for n in [
        "kernel.hung_task_timeout_secs",
        "kernel.hung_task_check_interval_secs",
        "kernel.hung_task_warnings",
        "kernel.hung_task_panic",
        "kernel.watchdog_thresh",
        "kernel.soft_watchdog",
        "kernel.softlockup_panic",
    ] {
        check!(names.contains(&n), "{n} missing from {names:?}");
    }
    // Linux's defaults (the harness may have changed them from the
    // command line: compare only what no test here changes on boot).
    check_eq!(sysctl::get("kernel.hung_task_panic").map_err(err("get"))?, 0);
    check_eq!(sysctl::get("kernel.softlockup_panic").map_err(err("get"))?, 0);
    // Bounds: watchdog_thresh is 0..=60; warnings accepts -1 but not -2.
    check_eq!(sysctl::set("kernel.watchdog_thresh", "61").map_err(|e| e.errno), Err(EINVAL));
    check_eq!(sysctl::set("kernel.watchdog_thresh", "-1").map_err(|e| e.errno), Err(EINVAL));
    check_eq!(sysctl::set("kernel.watchdog_thresh", "ten").map_err(|e| e.errno), Err(EINVAL));
    check_eq!(sysctl::set("kernel.hung_task_warnings", "-2").map_err(|e| e.errno), Err(EINVAL));
    check_eq!(sysctl::set("kernel.no_such_setting", "1").map_err(|e| e.errno), Err(ENOENT));
    // The /proc/sys path form, and the list.
    sysctl::set("kernel/watchdog_thresh", "15").map_err(err("set by path"))?;
    check_eq!(sysctl::get("kernel.watchdog_thresh").map_err(err("get"))?, 15);
    check!(sysctl::list().lines().any(|l| l == "kernel.watchdog_thresh = 15"), "{}", sysctl::list());
    // Boot words: applied, unknown or bad ones give a one-line message.
    check_eq!(sysctl::apply_boot_word("sysctl.kernel.watchdog_thresh=12"), Some(Ok(())));
    check_eq!(sysctl::get("kernel.watchdog_thresh").map_err(err("get"))?, 12);
    check_eq!(sysctl::apply_boot_word("seed=3"), None);
    let bad = sysctl::apply_boot_word("sysctl.kernel.nope=1");
    check!(matches!(&bad, Some(Err(m)) if m.contains("kernel.nope") && m.contains("not found")), "{bad:?}");
    let bad = sysctl::apply_boot_word("sysctl.kernel.watchdog_thresh=99");
    check!(matches!(&bad, Some(Err(m)) if m.contains("invalid")), "{bad:?}");
    // `sysctl -p` text.
    check!(sysctl::write("# comment\nkernel.hung_task_warnings = 4\n\nkernel.watchdog_thresh=9\n").is_ok());
    check_eq!(sysctl::get("kernel.hung_task_warnings").map_err(err("get"))?, 4);
    check_eq!(sysctl::get("kernel.watchdog_thresh").map_err(err("get"))?, 9);
    let e = sysctl::write("kernel.watchdog_thresh=8\nkernel.hung_task_warnings").map_err(|(e, l)| (e.errno, l));
    check_eq!(e, Err((EINVAL, String::from("kernel.hung_task_warnings"))));
    let _ = ctx;
    Ok(())
});

ktest!(sysrq_console::key_typed_on_the_serial_console_is_handled [explicit = true, timeout_s = 90] => |ctx| {
    // The runner types the key (`ktest run --sysrq w@1`): a BREAK, then `w`.
    let (before, _) = sysrq::handled();
    check!(wait_for(60_000, || sysrq::handled().0 > before), "no SysRq key arrived from the console in 60 s");
    check_eq!(sysrq::handled().1, 'w');
    let _ = ctx;
    Ok(())
});
