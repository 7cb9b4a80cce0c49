//! The KTAP v1 harness.
//!
//! Runs in a context that may sleep. Each case runs in its own kernel thread;
//! a one-shot timer in interrupt context is the watchdog, so even a case that
//! spins with preemption off on every CPU is reported (`# TIMEOUT`). A
//! timeout, a panic or a CPU exception ends the run with the fail status after
//! the running case is reported `not ok`; the remaining cases are then
//! missing from the output, which the runner also reports.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use kport::sync::{Completion, SpinLock};
use kport::{CpuMask, Priority, SpawnSpec, port};

use crate::args::{BenchMode, LeakCheck};
use crate::{Args, Ctx, Failure, TestCase};

unsafe extern "C" {
    // Only their addresses are used (declared as bytes: TestCase is not an
    // FFI type).
    static __start_ktest_cases: u8;
    static __stop_ktest_cases: u8;
}

/// Every registered case, in link order.
pub fn all_cases() -> &'static [TestCase] {
    // SAFETY: the linker places every `ktest!` static contiguously in the
    // `ktest_cases` section and defines its start and stop symbols (the
    // testkernel's linker script does so explicitly; ELF linkers do it for any
    // section whose name is a C identifier). Each element is a TestCase with
    // its natural alignment, which is a multiple of its size's alignment.
    unsafe {
        let start = (&raw const __start_ktest_cases).cast::<TestCase>();
        let stop = (&raw const __stop_ktest_cases).cast::<TestCase>();
        let n = (stop as usize - start as usize) / core::mem::size_of::<TestCase>();
        core::slice::from_raw_parts(start, n)
    }
}

/// Suites that come first, in this order (the foundations before what
/// stands on them); other suites follow alphabetically. Only display order:
/// every registered suite runs.
const FIRST_SUITES: [&str; 7] = ["boot", "sched", "kthread", "kthread_worker", "softirq", "tasklet", "workqueue"];

/// Cases selected by `args`, grouped by suite in display order.
pub fn plan(args: &Args) -> Result<Vec<(&'static str, Vec<&'static TestCase>)>, String> {
    let cases = all_cases();
    for t in &args.tests {
        if !cases.iter().any(|c| c.suite == t) {
            let mut known: Vec<&str> = cases.iter().map(|c| c.suite).collect();
            known.sort_unstable();
            known.dedup();
            return Err(format!("unknown suite '{t}' (known: {})", known.join(", ")));
        }
    }
    let mut suites: Vec<&'static str> = cases.iter().map(|c| c.suite).collect();
    suites.sort_by_key(|s| (FIRST_SUITES.iter().position(|f| f == s).unwrap_or(FIRST_SUITES.len()), *s));
    suites.dedup();
    let mut out = Vec::new();
    for s in suites {
        if !args.selects(s) {
            continue;
        }
        let sel: Vec<&TestCase> = cases
            .iter()
            .filter(|c| c.suite == s)
            .filter(|c| !c.explicit || args.tests.iter().any(|t| t == s))
            .filter(|c| args.cases.is_empty() || args.cases.iter().any(|w| c.name.contains(w.as_str())))
            .filter(|c| match args.bench {
                BenchMode::Skip => !c.bench,
                BenchMode::Only => c.bench,
                BenchMode::Also => true,
            })
            .flat_map(|c| core::iter::repeat_n(c, args.repeat))
            .collect();
        if !sel.is_empty() {
            out.push((s, sel));
        }
    }
    Ok(out)
}

static PASSED: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);
static SKIPPED: AtomicUsize = AtomicUsize::new(0);
/// Suites that left something behind (the leak check).
static LEAKS: AtomicUsize = AtomicUsize::new(0);

/// Suites whose every case is also leak-checked on its own (a case that
/// leaks fails with the leak as its reason): the torture cases run long and
/// alone, and each should end where it started.
const CHECK_EACH_CASE: [&str; 1] = ["torture"];
/// The running case (for the watchdog and fatal reports).
static CURRENT: AtomicPtr<TestCase> = AtomicPtr::new(core::ptr::null_mut());
static CURRENT_INDEX: AtomicUsize = AtomicUsize::new(0);

fn line(s: &str) {
    port().console_line(s);
}

/// Print a diagnostic line at the running case's indentation.
pub fn diag_line(s: &str) {
    line(&format!("    # {s}"));
}

fn summary_line() {
    line(&format!(
        "# ktest: done passed={} failed={} skipped={}",
        PASSED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
        SKIPPED.load(Ordering::Relaxed)
    ));
}

/// Report the running case as failed with `reason` and print the closing
/// summary. Called on the fatal path (panic, CPU exception) of the host
/// kernel just before it stops the machine; takes no locks.
pub fn report_fatal(reason: &str) {
    let c = CURRENT.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !c.is_null() {
        // SAFETY: CURRENT only ever holds pointers to `'static` registered cases.
        let c = unsafe { &*c };
        FAILED.fetch_add(1, Ordering::Relaxed);
        line(&format!("    not ok {} {} # {reason}", CURRENT_INDEX.load(Ordering::Relaxed), c.name));
    }
    summary_line();
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ").replace('#', "%")
}

/// Run a case in its own thread, with the watchdog armed.
fn run_case(case: &'static TestCase, index: usize, args: &Args, default_timeout: u32) -> Result<(), Failure> {
    let p = port();
    if case.min_cpus > p.cpu_count() {
        return Err(Failure::Skip(format!("needs {} CPUs, have {}", case.min_cpus, p.cpu_count())));
    }
    let timeout = if case.timeout_s > 0 { case.timeout_s } else { default_timeout };
    CURRENT_INDEX.store(index, Ordering::Relaxed);
    CURRENT.store(case as *const TestCase as *mut TestCase, Ordering::Release);

    let watchdog = p.timer(Arc::new(move || {
        // Interrupt context: the case is stuck. Report it and stop.
        let c = CURRENT.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !c.is_null() {
            // SAFETY: CURRENT only holds pointers to registered cases.
            let c = unsafe { &*c };
            FAILED.fetch_add(1, Ordering::Relaxed);
            let p = port();
            p.console_line(&format!("    not ok {index} {} # TIMEOUT after {timeout} s", c.name));
            // What the kernel threads wait on, with their stacks (SysRq w).
            kthreadd::sysrq::show_state(true);
            summary_line();
            kport::harness::harness().exit_machine(false);
        }
    }));
    watchdog.arm(p.now_ns() + timeout as u64 * 1_000_000_000, Some(0));

    let reports_before = kport::context::reports();
    let detectors_before = detector_reports();
    let result: Arc<SpinLock<Option<Result<(), Failure>>>> = Arc::new(SpinLock::new(None));
    let done = Arc::new(Completion::new());
    let (r2, d2) = (result.clone(), done.clone());
    let mut ctx = Ctx {
        seed: args.seed,
        rng: crate::rng::Rng::new(args.seed, case.name),
        cpus: p.cpu_count(),
        args: args.clone(),
    };
    let spawned = p.spawn(SpawnSpec {
        name: format!("ktest/{}", case.name),
        entry: Box::new(move || {
            let r = (case.func)(&mut ctx);
            *r2.lock() = Some(r);
            d2.complete_all();
        }),
        affinity: CpuMask::ALL,
        priority: Priority::Normal,
        data: None,
        worker_hooks: false,
    });
    let r = match spawned {
        Ok(t) => {
            t.wake();
            done.wait("ktest case");
            // Let the case's thread finish exiting, so the next case starts
            // from a quiet machine (cases compare memory counters).
            while t.state() != kport::TaskState::Dead {
                p.set_current_state(kport::SleepState::Interruptible, "ktest reap");
                p.schedule_until(p.now_ns() + 200_000);
            }
            result.lock().take().unwrap_or_else(|| Err(Failure::Fail("case ended without a result".into())))
        }
        Err(e) => Err(Failure::Fail(format!("cannot spawn the case's thread: {e:?}"))),
    };
    watchdog.cancel_sync();
    CURRENT.store(core::ptr::null_mut(), Ordering::Release);
    // A hung task or a soft lockup during a case is a bug of the case or of
    // what it exercises, unless the case causes it on purpose.
    let (hung, soft) = detector_reports();
    let (hung, soft) = (hung - detectors_before.0, soft - detectors_before.1);
    if r.is_ok() && (hung > 0 || soft > 0) && !case.may_report {
        return Err(Failure::Fail(format!(
            "{hung} hung-task and {soft} soft-lockup report(s) during the case (see the console above)"
        )));
    }
    // A sleeping call from atomic context is a bug even when it did not
    // block this time: fail the case that made it.
    let reports = kport::context::reports() - reports_before;
    if r.is_ok() && reports > 0 && !case.may_report {
        let first = kport::context::reports_since(reports_before)
            .first()
            .map_or(String::from("(no longer logged)"), |r| format!("{}:{}", r.location.file(), r.location.line()));
        return Err(Failure::Fail(format!("{reports} might_sleep report(s) during the case, the first at {first}")));
    }
    r
}

/// Run the selected suites and print KTAP. Returns true if nothing failed.
/// The host kernel then stops the machine with the matching status.
pub fn run(args: &Args) -> bool {
    let p = port();
    start_tracing(args);
    line("KTAP version 1");
    line(&format!("# seed: {}", args.seed));
    let plan = match plan(args) {
        Ok(p) => p,
        Err(e) => {
            line(&format!("# ktest: error: {e}"));
            line("1..0");
            return false;
        }
    };
    start_detectors(args);
    let checking = args.leak_check != LeakCheck::Off;
    if checking {
        crate::leak::warm_up();
    }
    line(&format!("1..{}", plan.len()));
    for (si, (suite, cases)) in plan.iter().enumerate() {
        line("    KTAP version 1");
        line(&format!("    # Subtest: {suite}"));
        line(&format!("    1..{}", cases.len()));
        let base = checking.then(crate::leak::baseline);
        let each_case = checking && CHECK_EACH_CASE.contains(suite);
        let mut suite_ok = true;
        for (ci, case) in cases.iter().enumerate() {
            let idx = ci + 1;
            let case_base = each_case.then(crate::leak::baseline);
            let mut result = run_case(case, idx, args, args.timeout_s);
            if let Some(b) = case_base {
                let outcome = crate::leak::check(suite, &b);
                drop(b);
                if args.leak_check == LeakCheck::Verbose {
                    line(&format!("    # leak-check: case {}: {}", case.name, outcome.figures));
                }
                if let Some(what) = outcome.leaked {
                    let what = one_line(&what);
                    line(&format!("    # leak: suite {suite} case {}: {what}", case.name));
                    if result.is_ok() {
                        result = Err(Failure::Fail(format!("leak: {what}")));
                    }
                }
            }
            match result {
                Ok(()) => {
                    PASSED.fetch_add(1, Ordering::Relaxed);
                    line(&format!("    ok {idx} {}", case.name));
                }
                Err(Failure::Skip(why)) => {
                    SKIPPED.fetch_add(1, Ordering::Relaxed);
                    line(&format!("    ok {idx} {} # SKIP {}", case.name, one_line(&why)));
                }
                Err(Failure::Fail(why)) => {
                    suite_ok = false;
                    FAILED.fetch_add(1, Ordering::Relaxed);
                    line(&format!("    not ok {idx} {} # {}", case.name, one_line(&why)));
                }
            }
        }
        // What the suite left behind (`docs/leaks.md`): a leak fails the
        // suite, with what stayed as its reason.
        let outcome = base.map(|b| crate::leak::check(suite, &b));
        if let Some(o) = &outcome
            && args.leak_check == LeakCheck::Verbose
        {
            line(&format!("    # leak-check: suite {suite}: {}", o.figures));
        }
        match outcome.and_then(|o| o.leaked) {
            Some(what) => {
                LEAKS.fetch_add(1, Ordering::Relaxed);
                let what = one_line(&what);
                line(&format!("    # leak: suite {suite}: {what}"));
                line(&format!("not ok {} {suite} # leak: {what}", si + 1));
            }
            None => line(&format!("{} {} {suite}", if suite_ok { "ok" } else { "not ok" }, si + 1)),
        }
    }
    for key in args.sysrq.chars() {
        if kthreadd::sysrq::handle(key).is_err() {
            line(&format!("# ktest: warning: sysrq={}: no key '{key}'", args.sysrq));
        }
    }
    line(&format!(
        "# ktest: watchdogs hung_task={} soft_lockup={} wq_lockup={}",
        kthreadd::hung_task::reports(),
        kthreadd::watchdog::reports(),
        workqueue::lockup_reports()
    ));
    summary_line();
    dump_trace(args.trace_dump);
    let _ = p;
    FAILED.load(Ordering::Relaxed) == 0 && LEAKS.load(Ordering::Relaxed) == 0
}

/// Start the hung-task and soft-lockup detectors (the host kernel may have
/// started them already; starting is idempotent), then apply the command
/// line's `sysctl.NAME=VALUE` words. A word that fails is a one-line
/// warning and the run goes on, as Linux boots on.
fn start_detectors(args: &Args) {
    if let Err(e) = kthreadd::hung_task::init() {
        line(&format!("# ktest: warning: cannot start khungtaskd: {e:?}"));
    }
    if let Err(e) = kthreadd::watchdog::init() {
        line(&format!("# ktest: warning: cannot start the soft-lockup watchdog: {e:?}"));
    } else {
        // Each CPU's watchdog thread starts its timer itself, shortly after:
        // wait for them, so the first suite's leak baseline has those timers.
        let online = port().online_mask();
        let started = crate::port_api::wait_for(10_000, || kthreadd::watchdog::active_cpus().0 & online.0 == online.0);
        if !started {
            line("# ktest: warning: the soft-lockup watchdog did not start on every CPU within 10 s");
        }
    }
    for w in &args.sysctl {
        if let Some(Err(msg)) = kport::sysctl::apply_boot_word(w) {
            line(&format!("# ktest: warning: {msg}"));
        }
    }
    kport::fault::register_sysctls();
    for w in &args.fault_inject {
        if let Some(Err(msg)) = kport::fault::apply_boot_word(w) {
            line(&format!("# ktest: warning: {msg}"));
        }
    }
}

/// Hung-task and soft-lockup reports so far.
fn detector_reports() -> (u64, u64) {
    (kthreadd::hung_task::reports(), kthreadd::watchdog::reports())
}

/// Apply the command line's tracing keys before the first case.
fn start_tracing(args: &Args) {
    if let Some(b) = args.trace_buf_size
        && kport::trace::set_buf_size(b).is_err()
    {
        line("# WARNING: trace_buf_size: the trace rings exist already; size unchanged");
    }
    if args.trace_event != 0 {
        kport::trace::enable(args.trace_event);
        line(&format!("# trace: enabled {}", kport::trace::event_list(args.trace_event)));
    }
    if args.latency_hist != 0 {
        kport::trace::hist::enable(args.latency_hist);
    }
}

/// Print what `trace_dump=` asks for between the dump markers
/// (`docs/observe.md`), then the one-line summary the runner reads.
pub fn dump_trace(what: crate::args::TraceDump) {
    if !what.any() {
        return;
    }
    use kport::trace;
    line("# trace-dump: begin");
    let b = trace::snapshot();
    if what.text {
        for l in trace::text(&b).lines() {
            line(&format!("# trace-text: {l}"));
        }
    }
    if what.json {
        for r in &b.records {
            line(&format!("# trace-json: {}", r.json()));
        }
    }
    let hs = trace::hist::snapshot();
    if what.hist {
        for h in &hs {
            for l in trace::hist::text_one(h).lines() {
                line(&format!("# hist-text: {l}"));
            }
            line(&format!("# hist-json: {}", trace::hist::json_one(h)));
        }
    }
    line(&format!(
        "# trace-summary: recorded={} in_buffer={} lost={} histograms={} hist_dropped={}",
        trace::recorded(),
        b.records.len(),
        b.lost,
        hs.len(),
        trace::hist::dropped()
    ));
    line("# trace-dump: end");
}
