//! Threaded interrupt handlers (Linux `request_threaded_irq`, `free_irq`,
//! `kernel/irq/manage.c`) on the port's device interrupt lines
//! ([`kport::irq::IrqChip`]).
//!
//! * An action has a hard handler (hard-IRQ context; it answers
//!   [`IrqReturn`]) and/or a thread function, run by its own kernel thread
//!   `irq/N-name` (high priority) when the hard handler answers
//!   [`IrqReturn::WakeThread`]. Without a hard handler the thread is always
//!   woken (Linux's default primary handler).
//! * [`IrqFlags::ONESHOT`] keeps the line masked from the hard handler's
//!   wake-up until the thread function returns; a thread function without a
//!   hard handler requires it, as in Linux.
//! * [`IrqFlags::SHARED`] lets several actions share a line: each fired
//!   interrupt calls every action's hard handler. All of them must ask for
//!   sharing.
//! * [`free_irq`] removes an action, waits until no hard handler runs on
//!   the line and stops its thread (waiting for a running thread function);
//!   the last action detaches the line.
//! * Counters per line and CPU, printed like Linux's `/proc/interrupts`.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use bitflags::bitflags;
use kport::irq::{IrqChip, IrqHandler};
use kport::sync::{SpinLock, WaitQueue};
use kport::trace;
use kport::{EBUSY, EINVAL, ENODEV, Error, MAX_CPUS, Priority, Result, might_sleep, port};
use kthreadd::kthread::{self, Builder, Kthread};

/// What a hard handler or a thread function answers (Linux `irqreturn_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqReturn {
    /// Not this device's interrupt (`IRQ_NONE`).
    None,
    /// Handled (`IRQ_HANDLED`).
    Handled,
    /// Handled in part: wake the action's thread (`IRQ_WAKE_THREAD`).
    WakeThread,
}

bitflags! {
    /// Flags of an action (Linux `IRQF_*`, same bit values).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct IrqFlags: u32 {
        /// The line may be shared with other actions that say so.
        const SHARED = 0x0000_0080;
        /// Keep the line masked until the thread function has run.
        const ONESHOT = 0x0000_2000;
    }
}

/// A hard handler: hard-IRQ context, must not sleep.
pub type HardHandler = Box<dyn Fn(u32) -> IrqReturn + Send + Sync>;
/// A thread function: runs in the action's kernel thread, may sleep.
pub type ThreadFn = Box<dyn Fn(u32) -> IrqReturn + Send + Sync>;

/// One action on a line (Linux `struct irqaction`).
pub(crate) struct Action {
    /// I: its line.
    irq: u32,
    /// I: its name (in the thread's name and listings).
    name: String,
    /// I: its name, made `'static` for trace records and histograms.
    trace_name: &'static str,
    /// I: its flags.
    flags: IrqFlags,
    /// I: the hard handler.
    hard: Option<HardHandler>,
    /// I: the thread function.
    thread_fn: Option<ThreadFn>,
    /// O: its thread, if it has a thread function.
    thread: spin::Once<Kthread>,
    /// The thread sleeps here.
    wq: WaitQueue,
    /// A: the hard handler asked for a thread run not started yet.
    thread_pending: AtomicBool,
    /// A: a one-shot wake-up of this action keeps the line masked.
    oneshot_held: AtomicBool,
    /// A: thread runs so far.
    thread_runs: AtomicU64,
}

/// A line's state (Linux `struct irq_desc`, reduced).
struct Desc {
    /// I: its number.
    irq: u32,
    /// The line's actions (rank `RANK_IRQ_DESC`; taken in hard-IRQ context).
    actions: SpinLock<Vec<Arc<Action>>>,
    /// A: hard handlers running on the line now (Linux `IRQD_IRQ_INPROGRESS`).
    in_progress: AtomicU32,
    /// A: one-shot actions whose thread has not run yet; the line stays
    /// masked while it is not zero.
    oneshot_holds: AtomicU32,
    /// A: interrupts per CPU.
    counts: [AtomicU64; MAX_CPUS],
    /// A: interrupts no action claimed (every hard handler answered None).
    unhandled: AtomicU64,
}

impl IrqHandler for Desc {
    fn handle(&self, irq: u32) {
        let p = port();
        self.counts[p.cpu_id() % MAX_CPUS].fetch_add(1, Ordering::Relaxed);
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        let mut handled = false;
        {
            let actions = self.actions.lock();
            for a in actions.iter() {
                let r = match &a.hard {
                    Some(h) if trace::any(IRQ_TRACE_BITS) => run_traced(irq, a, h),
                    Some(h) => h(irq),
                    None => IrqReturn::WakeThread,
                };
                match r {
                    IrqReturn::None => {}
                    IrqReturn::Handled => handled = true,
                    IrqReturn::WakeThread => {
                        handled = true;
                        if a.thread.get().is_some() {
                            if a.flags.contains(IrqFlags::ONESHOT) && !a.oneshot_held.swap(true, Ordering::AcqRel) {
                                // Masked before the thread can run: a thread on
                                // another CPU that finished first would unmask
                                // and this mask would then stick for good (as
                                // Linux masks a one-shot line in the flow
                                // handler, before the actions). Under the
                                // actions lock, as the release's unmask.
                                if self.oneshot_holds.fetch_add(1, Ordering::AcqRel) == 0
                                    && let Some(chip) = p.irq_chip()
                                {
                                    chip.mask(irq);
                                }
                            }
                            a.thread_pending.store(true, Ordering::Release);
                            a.wq.wake_all();
                        }
                    }
                }
            }
        }
        if !handled {
            self.unhandled.fetch_add(1, Ordering::Relaxed);
        }
        self.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What makes a hard handler run go through [`run_traced`].
const IRQ_TRACE_BITS: u64 =
    trace::Event::IrqHandlerEntry.bit() | trace::Event::IrqHandlerExit.bit() | trace::hist::HIST_IRQ;

/// Run action `a`'s hard handler `h` with its tracepoints and histogram.
#[cold]
#[inline(never)]
fn run_traced(irq: u32, a: &Action, h: &HardHandler) -> IrqReturn {
    if trace::on(trace::Event::IrqHandlerEntry) {
        trace::emit(trace::Event::IrqHandlerEntry, [irq as u64, 0, 0, 0, 0], a.trace_name, "");
    }
    let hist = trace::any(trace::hist::HIST_IRQ);
    let t0 = if hist { port().now_ns() } else { 0 };
    let r = h(irq);
    if hist {
        trace::hist::record(trace::hist::Kind::IrqHandlerTime, irq, a.trace_name, port().now_ns().saturating_sub(t0));
    }
    if trace::on(trace::Event::IrqHandlerExit) {
        let handled = !matches!(r, IrqReturn::None) as u64;
        trace::emit(trace::Event::IrqHandlerExit, [irq as u64, handled, 0, 0, 0], "", "");
    }
    r
}

static DESCS: spin::Once<Vec<&'static Desc>> = spin::Once::new();
/// Serializes requests and frees (they sleep: thread creation, waits).
static SETUP: kport::sync::Mutex<()> = kport::sync::Mutex::new(());

fn chip() -> Result<&'static dyn IrqChip> {
    port().irq_chip().ok_or(Error::new(ENODEV))
}

fn descs() -> Result<&'static [&'static Desc]> {
    let chip = chip()?;
    Ok(DESCS.call_once(|| {
        (0..chip.nr_irqs())
            .map(|irq| {
                let d: &'static Desc = Box::leak(Box::new(Desc {
                    irq,
                    actions: SpinLock::ranked("irq desc", crate::RANK_IRQ_DESC, Vec::new()),
                    in_progress: AtomicU32::new(0),
                    oneshot_holds: AtomicU32::new(0),
                    counts: [const { AtomicU64::new(0) }; MAX_CPUS],
                    unhandled: AtomicU64::new(0),
                }));
                d
            })
            .collect()
    }))
}

/// Make every line's descriptor now (Linux `early_irq_init`, at boot)
/// rather than at the first request: they live for the rest of the boot,
/// and the first user should not be charged with them (inside Redox, 224
/// lines of per-CPU counts, about 135 KiB). Nothing without an IRQ chip.
pub(crate) fn alloc_descs() {
    let _ = descs();
}

fn desc(irq: u32) -> Result<&'static Desc> {
    descs()?.get(irq as usize).copied().ok_or(Error::new(EINVAL))
}

/// A requested action; give it to [`free_irq`] to release the line.
pub struct IrqAction(Arc<Action>);

impl IrqAction {
    /// Its line.
    pub fn irq(&self) -> u32 {
        self.0.irq
    }

    /// Its thread (`irq/N-name`), if it has a thread function.
    pub fn thread(&self) -> Option<&Kthread> {
        self.0.thread.get()
    }

    /// Runs of its thread function so far.
    pub fn thread_runs(&self) -> u64 {
        self.0.thread_runs.load(Ordering::Acquire)
    }
}

fn irq_thread(a: Arc<Action>, desc: &'static Desc) -> i32 {
    loop {
        kthread::wait_event_or_stop(&a.wq, "irq_thread", || a.thread_pending.load(Ordering::Acquire));
        if !a.thread_pending.swap(false, Ordering::AcqRel) {
            if kthread::should_stop() {
                release_oneshot(&a, desc);
                return 0;
            }
            continue;
        }
        if let Some(f) = &a.thread_fn {
            f(a.irq);
        }
        a.thread_runs.fetch_add(1, Ordering::AcqRel);
        release_oneshot(&a, desc);
    }
}

/// The action's thread ran (or will not): if it held the line masked, let
/// go, and unmask the line when no action holds it any more (Linux
/// `irq_finalize_oneshot`).
fn release_oneshot(a: &Action, desc: &Desc) {
    if !a.oneshot_held.swap(false, Ordering::AcqRel) {
        return;
    }
    // Under the actions lock, so a hard handler's mask for a new hold and
    // this unmask for the last release cannot cross.
    let _serial = desc.actions.lock();
    if desc.oneshot_holds.fetch_sub(1, Ordering::AcqRel) == 1
        && let Some(chip) = port().irq_chip()
    {
        chip.unmask(desc.irq);
    }
}

/// Request line `irq` (Linux `request_threaded_irq`): `handler` runs in
/// hard-IRQ context, `thread_fn` in a new kernel thread `irq/N-name` when
/// the handler answers [`IrqReturn::WakeThread`] (always, without a
/// handler).
///
/// Context: may sleep. Return: the action; `EINVAL` for a line that does not
/// exist, no handler and no thread function, or a thread function without
/// a handler and without `ONESHOT`; `EBUSY` when the line has an action and
/// either does not share; `ENODEV` on a port without device lines;
/// `ENOMEM` when the thread cannot be made.
#[track_caller]
pub fn request_threaded_irq(
    irq: u32,
    handler: Option<HardHandler>,
    thread_fn: Option<ThreadFn>,
    flags: IrqFlags,
    name: &str,
) -> Result<IrqAction> {
    might_sleep();
    let d = desc(irq)?;
    if handler.is_none() && thread_fn.is_none() {
        return Err(Error::new(EINVAL));
    }
    if handler.is_none() && !flags.contains(IrqFlags::ONESHOT) {
        kport::warn::warn(&format!(
            "irq {irq} ({name}): a threaded handler without a hard handler needs ONESHOT (the line would fire again before the thread runs): refused"
        ));
        return Err(Error::new(EINVAL));
    }
    let _serial = SETUP.lock();
    {
        let actions = d.actions.lock();
        if let Some(first) = actions.first()
            && !(first.flags.contains(IrqFlags::SHARED) && flags.contains(IrqFlags::SHARED))
        {
            return Err(Error::new(EBUSY));
        }
    }
    let has_thread = thread_fn.is_some();
    let a = Arc::new(Action {
        irq,
        name: String::from(name),
        trace_name: kport::trace::intern(name),
        flags,
        hard: handler,
        thread_fn,
        thread: spin::Once::new(),
        wq: WaitQueue::new(),
        thread_pending: AtomicBool::new(false),
        oneshot_held: AtomicBool::new(false),
        thread_runs: AtomicU64::new(0),
    });
    if has_thread {
        let ac = a.clone();
        let t =
            Builder::new(format_args!("irq/{irq}-{name}"), move || irq_thread(ac, d)).priority(Priority::High).run()?;
        a.thread.call_once(|| t);
    }
    let first = {
        let mut actions = d.actions.lock();
        actions.push(a.clone());
        actions.len() == 1
    };
    if first && let Err(e) = chip()?.attach(irq, d) {
        d.actions.lock().retain(|x| !Arc::ptr_eq(x, &a));
        if let Some(t) = a.thread.get() {
            let _ = t.stop();
        }
        return Err(e);
    }
    Ok(IrqAction(a))
}

/// [`request_threaded_irq`] with a hard handler only (Linux `request_irq`).
///
/// Context: may sleep. Return: as [`request_threaded_irq`].
#[track_caller]
pub fn request_irq(irq: u32, handler: HardHandler, flags: IrqFlags, name: &str) -> Result<IrqAction> {
    request_threaded_irq(irq, Some(handler), None, flags, name)
}

/// Release an action (Linux `free_irq`): no hard handler runs on the line
/// and its thread has stopped when this returns; the last action of a line
/// detaches it. From the action's own handler or thread it would wait for
/// itself: refused with a warning, and the action stays.
///
/// Context: may sleep. Return: `EINVAL` when called from the action's own
/// handler or thread (or any hard interrupt).
#[track_caller]
pub fn free_irq(action: IrqAction) -> core::result::Result<(), (Error, IrqAction)> {
    might_sleep();
    let a = &action.0;
    let p = port();
    let own_thread = a.thread.get().is_some_and(|t| t.id() == p.current_id());
    if p.in_irq() || own_thread {
        kport::warn::warn(&format!(
            "free_irq of irq {} ({}) from {}: it would wait for itself; refused",
            a.irq,
            a.name,
            if own_thread { "its own thread" } else { "interrupt context" }
        ));
        return Err((Error::new(EINVAL), action));
    }
    let Ok(d) = desc(a.irq) else { return Err((Error::new(EINVAL), action)) };
    let _serial = SETUP.lock();
    let last = {
        let mut actions = d.actions.lock();
        actions.retain(|x| !Arc::ptr_eq(x, a));
        actions.is_empty()
    };
    // No hard handler of the line may still be running this action
    // (Linux `synchronize_hardirq`).
    while d.in_progress.load(Ordering::Acquire) != 0 {
        p.yield_now();
    }
    if let Some(t) = a.thread.get() {
        let _ = t.stop();
    }
    // A one-shot hold the thread did not get to release.
    release_oneshot(a, d);
    if last && let Ok(chip) = chip() {
        chip.detach(a.irq);
    }
    Ok(())
}

/// Interrupts of line `irq` handled on `cpu`.
pub fn irq_count(irq: u32, cpu: usize) -> u64 {
    desc(irq).map_or(0, |d| d.counts[cpu % MAX_CPUS].load(Ordering::Relaxed))
}

/// Interrupts of line `irq` that no action claimed.
pub fn unhandled(irq: u32) -> u64 {
    desc(irq).map_or(0, |d| d.unhandled.load(Ordering::Relaxed))
}

/// The lines with actions, as Linux's `/proc/interrupts` prints them: a
/// header of CPUs, then per line its number, the count per CPU, the chip's
/// description and the actions' names.
pub fn interrupts_text() -> String {
    let n = port().cpu_count();
    let mut s = String::from("    ");
    for c in 0..n {
        let _ = write!(s, "{:>11}", format!("CPU{c}"));
    }
    s.push('\n');
    let (Ok(descs), Ok(chip)) = (descs(), chip()) else { return s };
    for d in descs.iter() {
        let names: Vec<String> = d.actions.lock().iter().map(|a| a.name.clone()).collect();
        let total: u64 = d.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        if names.is_empty() && total == 0 {
            continue;
        }
        let _ = write!(s, "{:>3}:", d.irq);
        for c in 0..n {
            let _ = write!(s, " {:>10}", d.counts[c].load(Ordering::Relaxed));
        }
        let _ = writeln!(s, "  {:<20} {}", chip.describe(d.irq), names.join(", "));
    }
    s
}
