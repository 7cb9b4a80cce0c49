//! Softirq vectors (Linux `kernel/softirq.c`): raising, running at
//! interrupt exit with a restart budget, `ksoftirqd/N`, and bottom-half
//! disabling.
//!
//! * Ten vectors in Linux's order ([`Vector`]); [`open_softirq`] gives one
//!   its handler. [`raise_softirq`] marks it pending on the calling CPU.
//! * Pending softirqs run on that CPU when its outermost interrupt returns
//!   ([`kport::irq::irq_exit`]), when bottom halves are enabled again
//!   ([`local_bh_enable`]), or in `ksoftirqd/N`: a raise outside interrupt
//!   and bottom-half context wakes it (Linux `raise_softirq_irqoff`), and so
//!   does a run that used up its budget.
//! * A run ([`run_pending`], Linux `__do_softirq`) takes the pending mask,
//!   runs the handlers in vector order with interrupts enabled (unless the
//!   port says its interrupts cannot nest), and restarts while new ones were
//!   raised, at most [`MAX_SOFTIRQ_RESTART`] times and for at most
//!   [`MAX_SOFTIRQ_TIME_NS`]; what is left goes to `ksoftirqd`, so a storm
//!   of softirqs cannot starve the CPU's threads.
//! * Context: a softirq handler runs with the bottom-half word raised
//!   (`in_serving_softirq`), preemption disabled, never sleeping
//!   (`might_sleep` reports it).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kport::irq::{self, SOFTIRQ_DISABLE_OFFSET, SOFTIRQ_OFFSET, bh_add, bh_count};
use kport::local;
use kport::percpu;
use kport::trace;
use kport::{MAX_CPUS, port};
use kthreadd::smpboot::{self, PercpuThread, Registration};

/// A softirq vector, in Linux's order (which is also the order they run in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Vector {
    /// High-priority tasklets and BH work (`HI_SOFTIRQ`).
    Hi = 0,
    /// Timers (`TIMER_SOFTIRQ`): softirq timers and, through them, delayed
    /// work.
    Timer = 1,
    /// Network transmit (`NET_TX_SOFTIRQ`), unused here.
    NetTx = 2,
    /// Network receive (`NET_RX_SOFTIRQ`), unused here.
    NetRx = 3,
    /// Block request completion (`BLOCK_SOFTIRQ`).
    Block = 4,
    /// Interrupt polling (`IRQ_POLL_SOFTIRQ`), unused here.
    IrqPoll = 5,
    /// Tasklets and BH work (`TASKLET_SOFTIRQ`).
    Tasklet = 6,
    /// Scheduler load balancing (`SCHED_SOFTIRQ`), unused here.
    Sched = 7,
    /// High-resolution timers (`HRTIMER_SOFTIRQ`), unused here.
    Hrtimer = 8,
    /// RCU callbacks (`RCU_SOFTIRQ`), unused here.
    Rcu = 9,
}

/// Number of vectors (Linux `NR_SOFTIRQS`).
pub const NR_SOFTIRQS: usize = 10;

impl Vector {
    /// Every vector, in order.
    pub const ALL: [Vector; NR_SOFTIRQS] = [
        Vector::Hi,
        Vector::Timer,
        Vector::NetTx,
        Vector::NetRx,
        Vector::Block,
        Vector::IrqPoll,
        Vector::Tasklet,
        Vector::Sched,
        Vector::Hrtimer,
        Vector::Rcu,
    ];

    /// Linux's name (`softirq_to_name`), as `/proc/softirqs` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Vector::Hi => "HI",
            Vector::Timer => "TIMER",
            Vector::NetTx => "NET_TX",
            Vector::NetRx => "NET_RX",
            Vector::Block => "BLOCK",
            Vector::IrqPoll => "IRQ_POLL",
            Vector::Tasklet => "TASKLET",
            Vector::Sched => "SCHED",
            Vector::Hrtimer => "HRTIMER",
            Vector::Rcu => "RCU",
        }
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// What makes a handler run go through [`run_traced`].
const SOFTIRQ_TRACE_BITS: u64 =
    trace::Event::SoftirqEntry.bit() | trace::Event::SoftirqExit.bit() | trace::hist::HIST_SOFTIRQ;

/// Restarts of one run while softirqs keep being raised (Linux
/// `MAX_SOFTIRQ_RESTART`, 10): enough to finish a burst raised by the
/// handlers themselves, few enough that a storm goes to `ksoftirqd`.
/// Settable with [`set_budget`].
pub const MAX_SOFTIRQ_RESTART: u32 = 10;
/// Longest one run keeps restarting (Linux `MAX_SOFTIRQ_TIME`, 2 ms): the
/// interrupted context waits at most about this long. Settable with
/// [`set_budget`].
pub const MAX_SOFTIRQ_TIME_NS: u64 = 2_000_000;

static RESTARTS: AtomicU32 = AtomicU32::new(MAX_SOFTIRQ_RESTART);
static TIME_NS: AtomicU64 = AtomicU64::new(MAX_SOFTIRQ_TIME_NS);

/// Change the restart budget (tests make it small to see `ksoftirqd` take
/// over).
pub fn set_budget(restarts: u32, time_ns: u64) {
    RESTARTS.store(restarts, Ordering::Relaxed);
    TIME_NS.store(time_ns, Ordering::Relaxed);
}

/// The restart budget: (restarts, time in ns).
pub fn budget() -> (u32, u64) {
    (RESTARTS.load(Ordering::Relaxed), TIME_NS.load(Ordering::Relaxed))
}

/// Pending vectors, per CPU (Linux `local_softirq_pending`): kport's word,
/// which its `irq_exit` reads before it calls the hook.
use kport::irq::SOFTIRQ_PENDING as PENDING;
/// Handler runs, per CPU and vector (`/proc/softirqs`).
static COUNTS: [[AtomicU64; NR_SOFTIRQS]; MAX_CPUS] = [const { [const { AtomicU64::new(0) }; NR_SOFTIRQS] }; MAX_CPUS];
/// Passes over the pending vectors (one per `irq_exit`, `local_bh_enable`
/// or `ksoftirqd` round that found work), per CPU.
static PASSES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Runs that handed the rest to `ksoftirqd`, per CPU.
static DEFERRED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Handlers of the vectors.
static HANDLERS: [spin::Once<fn()>; NR_SOFTIRQS] = [const { spin::Once::new() }; NR_SOFTIRQS];
/// The `ksoftirqd/N` threads.
static KSOFTIRQD: spin::Once<Registration> = spin::Once::new();
/// Their contexts by CPU, to wake them from any context without a lock
/// (a raise can come under any lock; smpboot's own list takes one).
static KSOFTIRQD_TASKS: spin::Once<Vec<kport::TaskRef>> = spin::Once::new();

/// Give vector `v` its handler (Linux `open_softirq`). A vector is opened
/// once; a second open is refused with a warning.
///
/// Context: boot (any).
pub fn open_softirq(v: Vector, handler: fn()) {
    let mut first = false;
    HANDLERS[v as usize].call_once(|| {
        first = true;
        handler
    });
    if !first && *HANDLERS[v as usize].get().expect("set above") as usize != handler as usize {
        kport::warn::warn(&format!("softirq: {} opened twice; keeping the first handler", v.name()));
    }
}

/// Mark `v` pending on the calling CPU (Linux `raise_softirq`): it runs at
/// the CPU's next interrupt exit or bottom-half enable, or in `ksoftirqd`,
/// which is woken when the caller is not in interrupt or bottom-half
/// context.
///
/// Context: any.
pub fn raise_softirq(v: Vector) {
    let was = local::irq_save();
    raise_softirq_irqoff(v);
    local::irq_restore(was);
}

/// [`raise_softirq`] with interrupts already disabled (Linux
/// `raise_softirq_irqoff`).
///
/// Context: interrupts disabled.
pub fn raise_softirq_irqoff(v: Vector) {
    raise_irqoff_on(local::cpu_id(), v);
}

/// [`raise_softirq_irqoff`] for a caller that has read its CPU already.
/// Always inlined: with its tracepoint test it grew past the inlining
/// threshold, and the call cost the raise more than the test (the
/// `notrace` build, where it is inlined, was 30-odd instructions faster).
#[inline(always)]
pub(crate) fn raise_irqoff_on(cpu: usize, v: Vector) {
    let was = percpu::or(&PENDING[cpu], v.bit());
    if trace::any(trace::Event::SoftirqRaise.bit() | trace::hist::HIST_SOFTIRQ) {
        trace_raise(cpu, v, was);
    }
    // In an interrupt or with bottom halves disabled, the run comes at the
    // interrupt's exit or the enable; otherwise nothing would run it soon.
    // The bottom-half word first: raises with bottom halves disabled (a
    // tasklet scheduled from a softirq or under `local_bh_disable`) are the
    // common case, and it answers them in one look.
    if local::bh_word().load(Ordering::Relaxed) == 0 && !local::in_irq() {
        wakeup_ksoftirqd(cpu);
    }
}

/// Mark `v` pending on the calling CPU without waking anyone (Linux
/// `__raise_softirq_irqoff`): for callers about to run softirqs anyway.
///
/// Context: interrupts disabled.
pub fn raise_softirq_nowake(v: Vector) {
    let cpu = local::cpu_id();
    let was = percpu::or(&PENDING[cpu], v.bit());
    if trace::any(trace::Event::SoftirqRaise.bit() | trace::hist::HIST_SOFTIRQ) {
        trace_raise(cpu, v, was);
    }
}

/// When each vector was last raised while not pending, per CPU (ns; 0
/// none), for the raise→entry histogram. Written only while softirq
/// histograms are on.
static RAISED_NS: [[AtomicU64; NR_SOFTIRQS]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; NR_SOFTIRQS] }; MAX_CPUS];

/// The `softirq_raise` tracepoint and the raise time of a vector that was
/// not pending (`was`: the pending mask before).
#[cold]
#[inline(never)]
fn trace_raise(cpu: usize, v: Vector, was: u32) {
    if trace::on(trace::Event::SoftirqRaise) {
        trace::emit(trace::Event::SoftirqRaise, [v as u64, 0, 0, 0, 0], "", "");
    }
    if was & v.bit() == 0 && trace::any(trace::hist::HIST_SOFTIRQ) {
        RAISED_NS[cpu % MAX_CPUS][v as usize].store(port().now_ns().max(1), Ordering::Relaxed);
    }
}

/// Run vector `v`'s handler `h` with its tracepoints and histograms
/// (reached only while one of them is on).
#[cold]
#[inline(never)]
fn run_traced(cpu: usize, v: Vector, h: fn()) {
    let hist = trace::any(trace::hist::HIST_SOFTIRQ);
    let t0 = if hist { port().now_ns() } else { 0 };
    if hist {
        let raised = RAISED_NS[cpu % MAX_CPUS][v as usize].swap(0, Ordering::Relaxed);
        if raised != 0 {
            trace::hist::record(trace::hist::Kind::SoftirqLatency, v as u32, v.name(), t0.saturating_sub(raised));
        }
    }
    if trace::on(trace::Event::SoftirqEntry) {
        trace::emit(trace::Event::SoftirqEntry, [v as u64, 0, 0, 0, 0], "", "");
    }
    h();
    if hist {
        trace::hist::record(trace::hist::Kind::SoftirqRunTime, v as u32, v.name(), port().now_ns().saturating_sub(t0));
    }
    if trace::on(trace::Event::SoftirqExit) {
        trace::emit(trace::Event::SoftirqExit, [v as u64, 0, 0, 0, 0], "", "");
    }
}

/// Take `cpu`'s pending vectors (a dead CPU's, for the CPU taking over).
pub(crate) fn take_pending(cpu: usize) -> u32 {
    PENDING[cpu % MAX_CPUS].swap(0, Ordering::AcqRel)
}

/// Vectors pending on `cpu`.
pub fn pending_on(cpu: usize) -> u32 {
    PENDING[cpu].load(Ordering::Relaxed)
}

fn wakeup_ksoftirqd(cpu: usize) {
    if let Some(t) = KSOFTIRQD_TASKS.get().and_then(|v| v.get(cpu)) {
        t.wake();
    }
}

/// Is the caller in a hard interrupt handler (Linux `in_hardirq`)?
pub fn in_hardirq() -> bool {
    local::in_irq()
}

/// Is the caller serving a softirq or running with bottom halves disabled
/// (Linux `in_softirq`)?
pub fn in_softirq() -> bool {
    bh_count() != 0
}

/// Is the caller running a softirq handler (Linux `in_serving_softirq`)?
pub fn in_serving_softirq() -> bool {
    bh_count() & SOFTIRQ_OFFSET != 0
}

/// Is the caller in interrupt context, hard or soft, or with bottom halves
/// disabled (Linux `in_interrupt`)?
pub fn in_interrupt() -> bool {
    in_hardirq() || in_softirq()
}

/// Run the calling CPU's pending softirqs (Linux `__do_softirq`); the
/// caller has interrupts disabled and is not in interrupt context. Returns
/// with interrupts disabled.
fn run_pending() {
    let p = port();
    run_pending_on(p, local::cpu_id(), local::bh_word(), false);
}

/// Does the port let softirq handlers run with interrupts enabled? Asked
/// once ([`kport::Port::softirqs_with_irqs_enabled`] is a property of the
/// port): 0 not asked yet, 1 no, 2 yes.
static IRQS_ON_IN_SOFTIRQ: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

fn softirqs_with_irqs_enabled(p: &dyn kport::Port) -> bool {
    match IRQS_ON_IN_SOFTIRQ.load(Ordering::Relaxed) {
        0 => {
            let on = p.softirqs_with_irqs_enabled();
            IRQS_ON_IN_SOFTIRQ.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        v => v == 2,
    }
}

/// [`run_pending`] for a caller that has `cpu` and its bottom-half word
/// (`word`) at hand: the same CPU and word for the whole run, as preemption
/// stays disabled throughout (`preempt_held`: the caller disabled it
/// already, as a bottom-half enable has, which saves two port calls).
fn run_pending_on(p: &dyn kport::Port, cpu: usize, word: &core::sync::atomic::AtomicU32, preempt_held: bool) {
    let (max_restart, max_ns) = budget();
    // The time budget runs from the first restart: the clock is read only
    // when a pass finds more raised, not on every run (under TCG the read
    // was 7 % of a raise-to-run's samples). Linux reads `jiffies`
    // at the start, a counter that moves every 4 ms at HZ=250, so its own
    // limit is no finer than a pass.
    let mut end = None;
    let irqs_on = softirqs_with_irqs_enabled(p);
    if !preempt_held {
        local::preempt_disable();
    }
    // This CPU's words, with interrupts off (and, while handlers run with
    // them on, no second pass can start here): plain updates, see
    // `kport::percpu`.
    irq::word_add(word, SOFTIRQ_OFFSET);
    percpu::add(&PASSES[cpu], 1);
    let mut restarts = max_restart;
    let mut pending = percpu::take(&PENDING[cpu]);
    loop {
        if irqs_on {
            local::irq_restore(true);
        }
        // The raised vectors in Linux's order (lowest number first), one
        // step per raised bit rather than a look at all ten: under TCG the
        // ten looks were an eighth of a raise-to-run's instructions.
        let mut bits = pending & ((1 << NR_SOFTIRQS) - 1);
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            percpu::add(&COUNTS[cpu][i], 1);
            if let Some(h) = HANDLERS[i].get() {
                if trace::any(SOFTIRQ_TRACE_BITS) {
                    run_traced(cpu, Vector::ALL[i], *h);
                } else {
                    h();
                }
            }
        }
        if irqs_on {
            let _ = local::irq_save();
        }
        pending = percpu::take(&PENDING[cpu]);
        if pending == 0 {
            break;
        }
        restarts = restarts.saturating_sub(1);
        let now = p.now_ns();
        if restarts == 0 || now >= *end.get_or_insert(now.saturating_add(max_ns)) {
            // Out of budget: give them back and let ksoftirqd run them as
            // a thread, so the interrupted context is not starved.
            percpu::or(&PENDING[cpu], pending);
            percpu::add(&DEFERRED[cpu], 1);
            wakeup_ksoftirqd(cpu);
            break;
        }
    }
    irq::word_sub(word, SOFTIRQ_OFFSET);
    // Interrupts are off: the enable cannot switch here; the caller's
    // return path does.
    if !preempt_held {
        local::preempt_enable();
    }
}

/// Run pending softirqs now if the caller may (Linux `do_softirq`): not in
/// interrupt context, bottom halves enabled.
///
/// Context: any task context.
pub fn do_softirq() {
    if in_interrupt() {
        return;
    }
    let was = local::irq_save();
    if PENDING[local::cpu_id()].load(Ordering::Relaxed) != 0 {
        run_pending();
    }
    local::irq_restore(was);
}

/// Bottom halves stay disabled on this CPU while it lives (Linux
/// `local_bh_disable` / `local_bh_enable`): softirqs raised meanwhile wait
/// and run when the last guard drops. Preemption is disabled too, so the
/// holder stays on its CPU; it must not sleep.
#[must_use = "bottom halves are enabled again when the guard drops"]
pub struct BhGuard {
    _private: (),
}

/// Disable bottom halves on this CPU (Linux `local_bh_disable`).
///
/// Context: task or softirq context (not a hard interrupt).
pub fn local_bh_disable() -> BhGuard {
    local::preempt_disable();
    bh_add(SOFTIRQ_DISABLE_OFFSET);
    BhGuard { _private: () }
}

impl Drop for BhGuard {
    /// Linux `local_bh_enable`: at the last enable, run what is pending.
    /// The word's new value says whether this was the last disable (and no
    /// softirq is being served); a hard interrupt cannot hold a guard.
    fn drop(&mut self) {
        let word = local::bh_word();
        let left = irq::word_sub(word, SOFTIRQ_DISABLE_OFFSET);
        if left == 0 {
            let cpu = local::cpu_id();
            if PENDING[cpu].load(Ordering::Relaxed) != 0 && !local::in_irq() {
                let was = local::irq_save();
                if PENDING[cpu].load(Ordering::Relaxed) != 0 {
                    run_pending_on(port(), cpu, word, true);
                }
                local::irq_restore(was);
            }
        }
        local::preempt_enable();
    }
}

/// The interrupt-exit hook (Linux `invoke_softirq` from `irq_exit`).
struct Hooks;

impl kport::irq::IrqHooks for Hooks {
    fn irq_exit(&self, cpu: usize) {
        // Nothing pending is the common case: one load of this CPU's mask.
        if PENDING[cpu % MAX_CPUS].load(Ordering::Relaxed) == 0 || in_interrupt() {
            return;
        }
        run_pending();
    }
}

static HOOKS: Hooks = Hooks;

/// `ksoftirqd/N` (Linux `run_ksoftirqd`).
struct Ksoftirqd;

impl PercpuThread for Ksoftirqd {
    fn name(&self, cpu: usize) -> String {
        format!("ksoftirqd/{cpu}")
    }
    fn should_run(&self, cpu: usize) -> bool {
        PENDING[cpu].load(Ordering::Relaxed) != 0
    }
    fn run(&self, cpu: usize) {
        let was = local::irq_save();
        if PENDING[cpu].load(Ordering::Relaxed) != 0 {
            run_pending();
        }
        local::irq_restore(was);
        local::cond_resched();
    }
}

/// Register the interrupt-exit hook and start `ksoftirqd/N`.
///
/// Context: may sleep; boot, after kthreadd.
pub(crate) fn init() -> kport::Result<()> {
    kport::irq::set_hooks(&HOOKS);
    if KSOFTIRQD.get().is_none() {
        let r = smpboot::register(Arc::new(Ksoftirqd))?;
        let tasks = (0..port().cpu_count()).filter_map(|c| r.thread(c).map(|k| k.task().clone())).collect();
        KSOFTIRQD_TASKS.call_once(|| tasks);
        KSOFTIRQD.call_once(|| r);
    }
    Ok(())
}

/// Are the `ksoftirqd` threads up (so a raise is sure to run)? One load: for
/// callers in hard-IRQ context.
///
/// Context: any.
pub fn started() -> bool {
    KSOFTIRQD_TASKS.get().is_some()
}

/// The `ksoftirqd` thread of `cpu`.
pub fn ksoftirqd(cpu: usize) -> Option<kthreadd::Kthread> {
    KSOFTIRQD.get()?.thread(cpu)
}

/// How often vector `v` ran on `cpu`.
pub fn count(cpu: usize, v: Vector) -> u64 {
    COUNTS[cpu][v as usize].load(Ordering::Relaxed)
}

/// Passes over the pending vectors on `cpu` so far; a handler reading it
/// gets the number of the pass it runs in (passes do not nest on a CPU).
pub fn passes(cpu: usize) -> u64 {
    PASSES[cpu % MAX_CPUS].load(Ordering::Relaxed)
}

/// Passes that ran out of budget and handed the rest to `ksoftirqd`, on
/// `cpu`.
pub fn deferred(cpu: usize) -> u64 {
    DEFERRED[cpu].load(Ordering::Relaxed)
}

/// The counters as Linux's `/proc/softirqs` prints them: a header of CPUs,
/// then one line per vector.
pub fn softirqs_text() -> String {
    let n = port().cpu_count();
    let mut s = String::from("                ");
    for c in 0..n {
        let _ = write!(s, "{:>11}", format!("CPU{c}"));
    }
    s.push('\n');
    for v in Vector::ALL {
        let _ = write!(s, "{:>12}:", v.name());
        for c in 0..n {
            let _ = write!(s, " {:>10}", count(c, v));
        }
        s.push('\n');
    }
    s
}
