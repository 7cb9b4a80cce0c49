//! Tasklets (Linux `struct tasklet_struct`, `tasklet_schedule`,
//! `tasklet_hi_schedule`, `tasklet_disable`, `tasklet_enable`,
//! `tasklet_kill`), run from the `TASKLET` and `HI` softirqs.
//!
//! * Scheduling a tasklet that is not scheduled yet appends it to the
//!   calling CPU's list and raises the vector: it runs on the CPU that
//!   scheduled it. Scheduling it again before it runs does nothing.
//! * A tasklet never runs on two CPUs at once: a runner that finds it
//!   running elsewhere puts it back on its own list and raises again.
//! * Its scheduled bit is cleared just before its function runs, so a
//!   tasklet scheduled while it runs runs once more afterwards.
//! * A disabled tasklet stays scheduled and is passed over until enabled;
//!   `disable` also waits until it is not running; `kill` waits until it is
//!   neither scheduled nor running and leaves it unscheduled.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use kport::local;
use kport::sync::{IrqSection, SpinLock};
use kport::{MAX_CPUS, might_sleep, port};

use crate::softirq::{Vector, in_interrupt, in_serving_softirq, open_softirq, raise_irqoff_on};

/// Scheduled and not yet run (Linux `TASKLET_STATE_SCHED`).
const SCHED: u32 = 1 << 0;
/// Running on some CPU (Linux `TASKLET_STATE_RUN`): the run lock.
const RUN: u32 = 1 << 1;

/// A tasklet's shared state.
pub(crate) struct Inner {
    /// I: the function.
    func: Box<dyn Fn() + Send + Sync>,
    /// I: its name in warnings.
    name: &'static str,
    /// A: `SCHED` and `RUN` bits.
    state: AtomicU32,
    /// A: disable count (runs only at zero).
    count: AtomicU32,
}

/// A tasklet. Clones refer to the same one.
#[derive(Clone)]
pub struct Tasklet(Arc<Inner>);

impl fmt::Debug for Tasklet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tasklet({})", self.0.name)
    }
}

type List = SpinLock<VecDeque<Arc<Inner>>>;

/// Each CPU's scheduled tasklets, normal and high priority. IRQ-safe
/// leaves: taken from interrupt context, never with another lock.
static NORMAL: [List; MAX_CPUS] = [const { SpinLock::ranked("tasklets", crate::RANK_LEAF, VecDeque::new()) }; MAX_CPUS];
static HIGH: [List; MAX_CPUS] =
    [const { SpinLock::ranked("hi tasklets", crate::RANK_LEAF, VecDeque::new()) }; MAX_CPUS];

impl Tasklet {
    /// A tasklet running `f` (Linux `tasklet_setup`), named after `f`'s type.
    pub fn new<F: Fn() + Send + Sync + 'static>(f: F) -> Tasklet {
        Tasklet::named(core::any::type_name::<F>(), f)
    }

    /// A tasklet named `name`.
    pub fn named(name: &'static str, f: impl Fn() + Send + Sync + 'static) -> Tasklet {
        Tasklet(Arc::new(Inner { func: Box::new(f), name, state: AtomicU32::new(0), count: AtomicU32::new(0) }))
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// Schedule it on the calling CPU's `TASKLET` list (Linux
    /// `tasklet_schedule`).
    ///
    /// Context: any. Return: true if it was not scheduled before.
    pub fn schedule(&self) -> bool {
        self.schedule_on(&NORMAL, Vector::Tasklet)
    }

    /// Schedule it on the calling CPU's `HI` list (Linux
    /// `tasklet_hi_schedule`): it runs before normal tasklets and softirqs.
    ///
    /// Context: any. Return: true if it was not scheduled before.
    pub fn hi_schedule(&self) -> bool {
        self.schedule_on(&HIGH, Vector::Hi)
    }

    fn schedule_on(&self, lists: &'static [List; MAX_CPUS], v: Vector) -> bool {
        if self.0.state.fetch_or(SCHED, Ordering::AcqRel) & SCHED != 0 {
            return false;
        }
        // One interrupts-off section for the list and the raise: the list's
        // lock is taken inside it, not as a second nested section.
        let section = IrqSection::enter();
        let cpu = local::cpu_id();
        lists[cpu].lock_in(&section).push_back(self.0.clone());
        raise_irqoff_on(cpu, v);
        drop(section);
        true
    }

    /// Is it scheduled (and not yet running)?
    pub fn is_scheduled(&self) -> bool {
        self.0.state.load(Ordering::Acquire) & SCHED != 0
    }

    /// Is it running on some CPU?
    pub fn is_running(&self) -> bool {
        self.0.state.load(Ordering::Acquire) & RUN != 0
    }

    /// Disable it without waiting (Linux `tasklet_disable_nosync`):
    /// disables nest.
    ///
    /// Context: any.
    pub fn disable_nosync(&self) {
        self.0.count.fetch_add(1, Ordering::AcqRel);
    }

    /// Disable it and wait until it is not running (Linux
    /// `tasklet_disable`, which spins: a tasklet's run is short). From the
    /// tasklet itself it would wait for itself (Linux hangs): it is
    /// disabled without waiting, with a warning.
    ///
    /// Context: any.
    pub fn disable(&self) {
        self.disable_nosync();
        let me = RUNNING[local::cpu_id() % MAX_CPUS].load(Ordering::Relaxed);
        if me == Arc::as_ptr(&self.0) as usize && in_serving_softirq() {
            kport::warn::warn(&format!(
                "tasklet_disable of {} from the tasklet itself: it would wait for itself; disabled without waiting",
                self.0.name
            ));
            return;
        }
        self.unlock_wait();
    }

    /// Undo one disable (Linux `tasklet_enable`); a scheduled tasklet runs
    /// at its CPU's next softirq run.
    ///
    /// Context: any.
    pub fn enable(&self) {
        let before = self.0.count.fetch_sub(1, Ordering::AcqRel);
        if before == 0 {
            self.0.count.store(0, Ordering::Release);
            kport::warn::warn(&format!("tasklet {}: enable without disable; ignored", self.0.name));
        }
    }

    /// Is it disabled?
    pub fn is_disabled(&self) -> bool {
        self.0.count.load(Ordering::Acquire) > 0
    }

    fn unlock_wait(&self) {
        let p = port();
        while self.0.state.load(Ordering::Acquire) & RUN != 0 {
            if p.in_atomic() || in_interrupt() {
                core::hint::spin_loop();
            } else {
                p.yield_now();
            }
        }
    }

    /// Wait until it is neither scheduled nor running, and leave it
    /// unscheduled (Linux `tasklet_kill`): a scheduled run still happens
    /// first. From the tasklet itself, or from interrupt context, it would
    /// wait for ever: refused with a warning.
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn kill(&self) -> kport::Result<()> {
        might_sleep();
        if in_interrupt() {
            kport::warn::warn(&format!(
                "tasklet_kill of {} from interrupt context (it may be the tasklet itself): refused",
                self.0.name
            ));
            return Err(kport::Error::new(kport::EINVAL));
        }
        let p = port();
        // Claim the scheduled bit once it is free: a scheduled run happens
        // before (the runner clears the bit as it starts).
        while self.0.state.fetch_or(SCHED, Ordering::AcqRel) & SCHED != 0 {
            if self.is_disabled() {
                // A disabled tasklet would never run: take it off here.
                if take_off_lists(&self.0) {
                    break;
                }
            }
            p.yield_now();
        }
        self.unlock_wait();
        self.0.state.fetch_and(!SCHED, Ordering::AcqRel);
        Ok(())
    }
}

/// Remove `t` from whichever CPU list holds it; true if found.
fn take_off_lists(t: &Arc<Inner>) -> bool {
    for lists in [&NORMAL, &HIGH] {
        for l in lists.iter() {
            let mut g = l.lock();
            if let Some(i) = g.iter().position(|x| Arc::ptr_eq(x, t)) {
                g.remove(i);
                return true;
            }
        }
    }
    false
}

/// Move a dead CPU's tasklets to the end of `to`'s lists (Linux
/// `takeover_tasklets`); returns the vector bits to raise on `to`.
///
/// Context: interrupts off, on `to`.
pub(crate) fn take_over(dead: usize, to: usize) -> u32 {
    let mut raise = 0;
    for (lists, v) in [(&NORMAL, Vector::Tasklet), (&HIGH, Vector::Hi)] {
        let moved = core::mem::take(&mut *lists[dead % MAX_CPUS].lock());
        if !moved.is_empty() {
            lists[to % MAX_CPUS].lock().extend(moved);
            raise |= 1 << v as u32;
        }
    }
    raise
}

/// The tasklet each CPU runs now (its address; 0: none), so that a
/// tasklet disabling itself is caught instead of waiting for itself.
static RUNNING: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// A list's buffer is kept across runs up to this many entries (a burst's
/// larger buffer is given back once the list is empty).
const LIST_KEEP: usize = 32;

/// Run the calling CPU's list (Linux `tasklet_action_common`): the
/// tasklets on it when the run starts, not those scheduled while it runs
/// (they wait for the next pass, as Linux's detached list makes them).
/// They are taken off one at a time, so the list keeps its buffer and a
/// run allocates nothing; a tasklet put back (running elsewhere, or
/// disabled) goes behind the ones counted.
fn run_list(lists: &'static [List; MAX_CPUS], v: Vector, cpu: usize) {
    // Counted at the first look, which also takes the first one.
    let mut left = None;
    loop {
        // The last one counted is taken: no look at the list to learn it.
        if left == Some(0) {
            break;
        }
        let t = {
            let mut g = lists[cpu].lock();
            let n = left.get_or_insert(g.len());
            if *n == 0 {
                break;
            }
            *n -= 1;
            let t = g.pop_front();
            if g.is_empty() && g.capacity() > LIST_KEEP {
                g.shrink_to(LIST_KEEP);
            }
            t
        };
        // A kill may have taken one off meanwhile.
        let Some(t) = t else { break };
        let st = t.state.fetch_or(RUN, Ordering::AcqRel);
        if st & RUN == 0 {
            if t.count.load(Ordering::Acquire) == 0 {
                if t.state.fetch_and(!SCHED, Ordering::AcqRel) & SCHED == 0 {
                    kport::warn::warn(&format!("tasklet {} on a list but not scheduled", t.name));
                }
                RUNNING[cpu % MAX_CPUS].store(Arc::as_ptr(&t) as usize, Ordering::Relaxed);
                (t.func)();
                RUNNING[cpu % MAX_CPUS].store(0, Ordering::Relaxed);
                t.state.fetch_and(!RUN, Ordering::AcqRel);
                continue;
            }
            t.state.fetch_and(!RUN, Ordering::AcqRel);
        }
        // Running elsewhere, or disabled: back on this CPU's list, and
        // another look at the next run.
        let section = IrqSection::enter();
        lists[cpu].lock_in(&section).push_back(t);
        crate::softirq::raise_softirq_nowake(v);
        drop(section);
    }
}

/// What the BH workqueues run first in each tasklet softirq (Linux's
/// `tasklet_action` calls `workqueue_softirq_action`): set by the workqueue
/// layer, which stands above this one.
static BH_RUNNER: spin::Once<fn(usize, bool)> = spin::Once::new();

/// Let the layer above run its BH work from the `TASKLET` (`false`) and
/// `HI` (`true`) softirqs, before the tasklets (once; later calls are
/// ignored). `run` gets the calling CPU and which of the two it is.
///
/// Context: boot.
pub fn set_bh_runner(run: fn(usize, bool)) {
    BH_RUNNER.call_once(|| run);
}

fn tasklet_action() {
    let cpu = local::cpu_id();
    if let Some(run) = BH_RUNNER.get() {
        run(cpu, false);
    }
    run_list(&NORMAL, Vector::Tasklet, cpu);
}

fn tasklet_hi_action() {
    let cpu = local::cpu_id();
    if let Some(run) = BH_RUNNER.get() {
        run(cpu, true);
    }
    run_list(&HIGH, Vector::Hi, cpu);
}

/// Open the two tasklet vectors.
pub(crate) fn init() {
    open_softirq(Vector::Tasklet, tasklet_action);
    open_softirq(Vector::Hi, tasklet_hi_action);
}
