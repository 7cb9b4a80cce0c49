//! The soft-lockup detector (Linux `kernel/watchdog.c`, soft half).
//!
//! Each online CPU has a one-shot timer, re-armed every sample period
//! (`watchdog_thresh` × 2 / 5: 4 s by default), and a high-priority
//! per-CPU thread `watchdog/N`. The timer, in interrupt context on its CPU,
//! asks the thread to run; the thread, when the CPU schedules it, stamps the
//! CPU as alive. When the timer finds the stamp older than the lockup
//! threshold (`watchdog_thresh` × 2: 20 s), the CPU has not scheduled for
//! that long, and the timer prints, as Linux does,
//!
//! ```text
//! BUG: soft lockup - CPU#N stuck for Ks! [NAME:ID]
//! ```
//!
//! with the stack of the interrupted code ([`kport::Port::dump_stack`]
//! from the timer). A lockup that goes on is reported again every
//! threshold. Linux runs the stamp from the CPU's stopper thread
//! (`migration/N`); the dedicated thread here is what Linux had before
//! (`watchdog/N`) and behaves the same: it preempts ordinary threads, so
//! only a CPU that cannot schedule (preemption or interrupts off, or
//! `preempt=none` code that never calls `cond_resched`) is reported.
//!
//! Every third period each timer also looks at the next active CPU's count
//! of timer interrupts: unchanged since the last look, that CPU runs with
//! interrupts off, and the timer prints `Watchdog detected hard LOCKUP on
//! cpu N` with what that CPU runs ([`kport::Port::cpu_current_id`]), once
//! per episode: Linux's buddy hard-lockup detector. Inside Redox, whose
//! kernel code runs with interrupts off between yield points, this is the
//! report a spinning kernel thread gets.
//!
//! Settings ([`kport::sysctl`]): `kernel.watchdog_thresh` (10, 0..=60; 0
//! turns the detector off), `kernel.soft_watchdog` (1), `kernel.nmi_watchdog`
//! (1: the buddy check), `kernel.softlockup_panic` (0).
//! Code that legitimately keeps a CPU busy calls
//! [`touch_softlockup_watchdog`]. A CPU going offline parks its thread and
//! stops its timer; coming back restarts both.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kport::sync::SpinLock;
use kport::sysctl::{Bounded, Kind, Sysctl};
use kport::{PortTimer, Priority, Result, port};

use crate::kthread::Kthread;
use crate::smpboot::{self, PercpuThread, Registration};

/// `kernel.watchdog_thresh`, seconds (Linux default 10, at most 60).
pub static THRESH: Bounded = Bounded::new(10, 0, 60);
/// `kernel.soft_watchdog` (1: the soft-lockup detector runs).
pub static SOFT_WATCHDOG: Bounded = Bounded::new(1, 0, 1);
/// `kernel.softlockup_panic` (1: panic after the report).
pub static PANIC: Bounded = Bounded::new(0, 0, 1);
/// `kernel.nmi_watchdog` (1: the buddy hard-lockup check runs).
pub static HARD_WATCHDOG: Bounded = Bounded::new(1, 0, 1);

static SYSCTLS: [Sysctl; 4] = [
    Sysctl { name: "kernel.nmi_watchdog", kind: Kind::Bounded(&HARD_WATCHDOG, None) },
    Sysctl { name: "kernel.watchdog_thresh", kind: Kind::Bounded(&THRESH, Some(rearm_all)) },
    Sysctl { name: "kernel.soft_watchdog", kind: Kind::Bounded(&SOFT_WATCHDOG, Some(rearm_all)) },
    Sysctl { name: "kernel.softlockup_panic", kind: Kind::Bounded(&PANIC, None) },
];

/// Reports kept for [`reports_since`].
const KEPT: usize = 16;

/// One lockup report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Sequence number (1 for the first since boot).
    pub seq: u64,
    /// A hard lockup (the CPU took no timer interrupt; reported by its
    /// buddy), or a soft one (it took them but did not schedule).
    pub hard: bool,
    /// The CPU that did not schedule.
    pub cpu: usize,
    /// Whole seconds since it last did, as printed.
    pub secs: u64,
    /// The interrupted thread's name.
    pub name: String,
    /// The interrupted thread's id.
    pub id: usize,
}

/// Per-CPU state.
struct Cpu {
    /// When the CPU's thread last ran (ns; 0: not yet).
    touch_ts: AtomicU64,
    /// Start of the current reporting period: the last touch or report.
    report_ts: AtomicU64,
    /// The thread was asked to run and has not yet.
    kicked: AtomicBool,
    /// The timer runs (the CPU is online and its thread set up).
    active: AtomicBool,
    timer: spin::Once<Box<dyn PortTimer>>,
    /// `watchdog/N`, set by the thread itself on its first run.
    thread: spin::Once<Kthread>,
    /// Timer interrupts taken (Linux `hrtimer_interrupts`).
    interrupts: AtomicU64,
    /// The buddy's last look at `interrupts` (Linux `hrtimer_interrupts_saved`).
    interrupts_saved: AtomicU64,
    /// A hard lockup of this CPU was reported and it has not recovered.
    hard_warned: AtomicBool,
    /// When the timer last ran (ns).
    last_timer_ns: AtomicU64,
}

struct State {
    cpus: Vec<Cpu>,
    reg: spin::Once<Registration>,
}

static STATE: spin::Once<State> = spin::Once::new();
static STARTED: AtomicBool = AtomicBool::new(false);
static REPORTS: AtomicU64 = AtomicU64::new(0);
static LOG: SpinLock<Vec<Report>> = SpinLock::ranked("soft lockup reports", crate::RANK_LEAF, Vec::new());

/// Soft-lockup reports printed since boot.
pub fn reports() -> u64 {
    REPORTS.load(Ordering::Relaxed)
}

/// The kept reports whose sequence number is above `seq` (at most 16).
pub fn reports_since(seq: u64) -> Vec<Report> {
    LOG.lock().iter().filter(|r| r.seq > seq).cloned().collect()
}

/// CPUs whose `watchdog/N` thread has set itself up and watches them
/// (started by [`init`], each by its own thread shortly after: a caller
/// that needs the detector running everywhere waits for this to cover the
/// online CPUs). Empty before [`init`].
///
/// Context: any.
pub fn active_cpus() -> kport::CpuMask {
    let mut m = kport::CpuMask::NONE;
    if let Some(st) = STATE.get() {
        for (cpu, c) in st.cpus.iter().enumerate().take(kport::MAX_CPUS) {
            if c.active.load(Ordering::Acquire) {
                m.0 |= 1 << cpu;
            }
        }
    }
    m
}

fn enabled() -> bool {
    THRESH.get() > 0 && SOFT_WATCHDOG.get() == 1
}

/// The lockup threshold, ns (`watchdog_thresh` × 2).
pub fn softlockup_thresh_ns() -> u64 {
    THRESH.get() as u64 * 2_000_000_000
}

fn sample_period_ns() -> u64 {
    softlockup_thresh_ns() / 5
}

/// Tell the detector this CPU is busy on purpose (Linux
/// `touch_softlockup_watchdog`): its current period starts again.
///
/// Context: any; acts on the calling CPU.
pub fn touch_softlockup_watchdog() {
    if let Some(st) = STATE.get() {
        let p = port();
        if let Some(c) = st.cpus.get(p.cpu_id()) {
            c.report_ts.store(p.now_ns(), Ordering::Relaxed);
        }
    }
}

struct Desc;

impl PercpuThread for Desc {
    fn name(&self, cpu: usize) -> String {
        format!("watchdog/{cpu}")
    }
    fn should_run(&self, cpu: usize) -> bool {
        STATE.get().is_some_and(|s| s.cpus[cpu].kicked.load(Ordering::Acquire))
    }
    fn run(&self, cpu: usize) {
        let c = &STATE.get().expect("watchdog state").cpus[cpu];
        c.kicked.store(false, Ordering::Release);
        let now = port().now_ns();
        c.touch_ts.store(now, Ordering::Relaxed);
        c.report_ts.store(now, Ordering::Relaxed);
    }
    fn setup(&self, cpu: usize) {
        if let Some(me) = crate::kthread::current() {
            STATE.get().expect("watchdog state").cpus[cpu].thread.call_once(|| me);
        }
        start_cpu(cpu);
    }
    fn unpark(&self, cpu: usize) {
        start_cpu(cpu);
    }
    fn park(&self, cpu: usize) {
        let st = STATE.get().expect("watchdog state");
        let c = &st.cpus[cpu];
        c.active.store(false, Ordering::Release);
        if let Some(t) = c.timer.get() {
            t.cancel();
        }
        // The CPU before this one now checks the one after it, whose count
        // this CPU may have saved less than a period ago (Linux
        // `watchdog_hardlockup_disable` touches the next CPU).
        if let Some(next) = next_active(st, cpu) {
            fresh_look(&st.cpus[next]);
        }
    }
    fn priority(&self) -> Priority {
        Priority::High
    }
}

/// On the CPU's own thread: stamp it alive and start its timer.
fn start_cpu(cpu: usize) {
    let st = STATE.get().expect("watchdog state");
    let c = &st.cpus[cpu];
    let now = port().now_ns();
    c.hard_warned.store(false, Ordering::Relaxed);
    // The buddy's last look is from before the CPU went offline (or never
    // happened): its next look only records (Linux's detector starts a
    // CPU's count afresh when the CPU comes online).
    fresh_look(c);
    c.last_timer_ns.store(now, Ordering::Relaxed);
    c.touch_ts.store(now, Ordering::Relaxed);
    c.report_ts.store(now, Ordering::Relaxed);
    c.active.store(true, Ordering::Release);
    // This CPU now checks the next one, whose count the CPU before this one
    // may have saved less than a period ago (Linux
    // `watchdog_hardlockup_enable` touches the next CPU too).
    if let Some(next) = next_active(st, cpu) {
        fresh_look(&st.cpus[next]);
    }
    arm(cpu, now);
}

/// The next active CPU after `cpu`, the one `cpu`'s timer checks.
fn next_active(st: &State, cpu: usize) -> Option<usize> {
    let n = st.cpus.len();
    (1..n).map(|d| (cpu + d) % n).find(|&c| st.cpus[c].active.load(Ordering::Acquire))
}

/// The next look at `c`'s count only records it: the look before was by
/// another buddy, at another phase, and comparing with it could find no
/// timer interrupt in between on a CPU that is fine.
fn fresh_look(c: &Cpu) {
    c.interrupts_saved.store(u64::MAX, Ordering::Relaxed);
}

fn arm(cpu: usize, now: u64) {
    let c = &STATE.get().expect("watchdog state").cpus[cpu];
    if !c.active.load(Ordering::Acquire) || !enabled() {
        return;
    }
    let t = c.timer.call_once(|| kport::timers::new(Arc::new(move || timer_fn(cpu))));
    t.arm(now + sample_period_ns(), Some(cpu));
}

/// A setting changed: every active CPU starts a fresh period on the new
/// timing (or stops, when turned off).
fn rearm_all() {
    let Some(st) = STATE.get() else {
        return;
    };
    let now = port().now_ns();
    for (cpu, c) in st.cpus.iter().enumerate() {
        c.report_ts.store(now, Ordering::Relaxed);
        c.last_timer_ns.store(now, Ordering::Relaxed);
        if let Some(t) = c.timer.get() {
            t.cancel();
        }
        arm(cpu, now);
    }
}

/// The timer of `cpu`, in interrupt context on it (Linux `watchdog_timer_fn`).
fn timer_fn(cpu: usize) {
    let Some(st) = STATE.get() else {
        return;
    };
    let c = &st.cpus[cpu];
    if !c.active.load(Ordering::Acquire) || !enabled() {
        return;
    }
    let p = port();
    let now = p.now_ns();
    let count = c.interrupts.fetch_add(1, Ordering::Relaxed) + 1;
    // Every third interrupt, look at the next CPU (Linux's buddy detector).
    if count % 3 == 0 {
        buddy_check(st, cpu);
    }
    // Ask the thread to stamp the CPU (unless it still has not run since
    // the last request: Linux queues the stopper work only once).
    if let Some(k) = c.thread.get()
        && !c.kicked.swap(true, Ordering::AcqRel)
    {
        k.wake();
    }
    let thresh = softlockup_thresh_ns();
    // A timer that fires a whole threshold late found interrupts off on
    // this CPU until now (a hard lockup, which the buddy reports): the
    // thread could not be asked to run, so its stamp says nothing. Start
    // a fresh period instead of blaming whatever runs now.
    let last = c.last_timer_ns.swap(now, Ordering::Relaxed);
    if now.saturating_sub(last) >= thresh {
        c.report_ts.store(now, Ordering::Relaxed);
    }
    let period = c.report_ts.load(Ordering::Relaxed);
    if now >= period.saturating_add(thresh) {
        c.report_ts.store(now, Ordering::Relaxed);
        let secs = now.saturating_sub(c.touch_ts.load(Ordering::Relaxed)) / 1_000_000_000;
        let cur = p.current();
        let (name, id) = (cur.name(), cur.id());
        p.console_line(&format!("BUG: soft lockup - CPU#{cpu} stuck for {secs}s! [{name}:{id}]"));
        p.dump_stack();
        log(Report { seq: 0, hard: false, cpu, secs, name, id });
        if PANIC.get() == 1 {
            panic!("softlockup: hung tasks");
        }
    }
    arm(cpu, now);
}

fn log(mut r: Report) {
    r.seq = REPORTS.fetch_add(1, Ordering::Relaxed) + 1;
    // Interrupt context: keep the report if the log's lock is free, as a
    // report must never wait.
    if let Some(mut log) = LOG.try_lock() {
        if log.len() == KEPT {
            log.remove(0);
        }
        log.push(r);
    }
}

/// The next active CPU after `cpu` took no timer interrupt since this CPU
/// last looked (three of this CPU's periods ago): it runs with interrupts
/// off. Linux's buddy hard-lockup detector; reported once per episode.
/// This is how a lockup is seen on a host kernel whose kernel code runs
/// with interrupts off between its yield points (Redox).
fn buddy_check(st: &State, cpu: usize) {
    if HARD_WATCHDOG.get() != 1 {
        return;
    }
    let Some(next) = next_active(st, cpu) else {
        return;
    };
    let b = &st.cpus[next];
    let now_count = b.interrupts.load(Ordering::Relaxed);
    let saved = b.interrupts_saved.swap(now_count, Ordering::Relaxed);
    if now_count != saved {
        b.hard_warned.store(false, Ordering::Relaxed);
        return;
    }
    if b.hard_warned.swap(true, Ordering::Relaxed) {
        return;
    }
    let p = port();
    let secs = p.now_ns().saturating_sub(b.touch_ts.load(Ordering::Relaxed)) / 1_000_000_000;
    let id = p.cpu_current_id(next).unwrap_or(0);
    let name = crate::registry::find(id).map_or_else(|| String::from("?"), |k| String::from(k.comm()));
    p.console_line(&format!("Watchdog detected hard LOCKUP on cpu {next} [{name}:{id}] (seen from cpu {cpu})"));
    log(Report { seq: 0, hard: true, cpu: next, secs, name, id });
    if PANIC.get() == 1 {
        panic!("hardlockup: cpu {next}");
    }
}

/// Register the settings and start `watchdog/N` on every CPU (once).
///
/// Context: may sleep.
pub fn init() -> Result<()> {
    kport::might_sleep();
    kport::sysctl::register(&SYSCTLS);
    if STARTED.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    let n = port().cpu_count();
    let st = STATE.call_once(|| State {
        cpus: (0..n)
            .map(|_| Cpu {
                touch_ts: AtomicU64::new(0),
                report_ts: AtomicU64::new(0),
                kicked: AtomicBool::new(false),
                active: AtomicBool::new(false),
                timer: spin::Once::new(),
                thread: spin::Once::new(),
                interrupts: AtomicU64::new(0),
                interrupts_saved: AtomicU64::new(0),
                hard_warned: AtomicBool::new(false),
                last_timer_ns: AtomicU64::new(0),
            })
            .collect(),
        reg: spin::Once::new(),
    });
    match smpboot::register(Arc::new(Desc)) {
        Ok(reg) => {
            st.reg.call_once(|| reg);
            Ok(())
        }
        Err(e) => {
            STARTED.store(false, Ordering::Release);
            Err(e)
        }
    }
}
