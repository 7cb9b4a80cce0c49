//! One-shot timers and the tick.
//!
//! Each CPU keeps a min-heap of armed timers and programs its LAPIC timer in
//! one-shot mode for the earlier of its first timer and its next tick, so a
//! timer fires within the interrupt latency of its deadline rather than at the
//! next tick. Callbacks run in interrupt context on the CPU the timer was armed
//! on. Linux: `timer_list` (`add_timer_on`, `mod_timer`, `del_timer[_sync]`).
//!
//! Cancelling or re-arming removes the timer's entry from its CPU's heap at
//! once (as `del_timer` unlinks it), so a cancelled timer holds nothing (its
//! callback may own large state) past the cancel. A generation number guards
//! against an entry that was popped for firing just as it was cancelled.

use alloc::collections::BinaryHeap;
use alloc::sync::Arc;
use core::cmp::Ordering as CmpOrdering;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::arch::{apic, interrupts};
use crate::percpu::{self, MAX_CPUS, PERCPU};
use crate::sync::IrqSpinLock;
use crate::time;

/// The scheduler tick: 4 ms, Linux's HZ=250 (the figures in BENCH.md were
/// taken on an HZ=250 kernel).
pub const TICK_NS: u64 = 4_000_000;
/// Timer-heap slots reserved per CPU at boot.
const HEAP_RESERVE: usize = 128;

struct TimerState {
    pending: bool,
    deadline: u64,
    cpu: usize,
}

struct TimerInner {
    cb: Arc<dyn Fn() + Send + Sync>,
    st: IrqSpinLock<TimerState>,
    /// Generation of the live arming; heap entries of older ones are stale.
    gen_: AtomicU64,
    /// CPU running the callback, or u32::MAX.
    running_on: AtomicU32,
}

struct Entry {
    deadline: u64,
    gen_: u64,
    t: Arc<TimerInner>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        o.deadline.cmp(&self.deadline).then(o.gen_.cmp(&self.gen_))
    }
}

static WHEEL: [IrqSpinLock<BinaryHeap<Entry>>; MAX_CPUS] =
    [const { IrqSpinLock::named("timer heap", BinaryHeap::new()) }; MAX_CPUS];
/// The CPU is hot-unplugged and its heap moved away: arming there goes to
/// the arming CPU instead. Read and written under the CPU's heap lock.
static CLOSED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static PROGRAMMED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
static LAST_TICK: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static TIMER_STARTED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Set when another CPU armed a timer here earlier than the programmed event.
static REPROGRAM: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Reprogram this CPU's timer if another CPU asked for it (reschedule IPI).
pub fn reprogram_if_asked() {
    if REPROGRAM[percpu::cpu_id()].swap(false, Ordering::AcqRel) {
        reprogram();
    }
}

/// A one-shot timer.
pub struct Timer {
    inner: Arc<TimerInner>,
}

impl Timer {
    /// A disarmed timer that calls `cb` in interrupt context when it fires.
    pub fn new(cb: Arc<dyn Fn() + Send + Sync>) -> Self {
        Timer {
            inner: Arc::new(TimerInner {
                cb,
                st: IrqSpinLock::named("timer", TimerState { pending: false, deadline: 0, cpu: 0 }),
                gen_: AtomicU64::new(0),
                running_on: AtomicU32::new(u32::MAX),
            }),
        }
    }

    /// Arm (or move) the timer to `deadline` ns on `cpu` (default: here).
    pub fn arm(&self, deadline: u64, cpu: Option<usize>) {
        // On this CPU throughout, so that `here` stays true.
        let was = crate::sync::irq_save();
        let here = percpu::cpu_id();
        let mut c = match cpu {
            Some(c) if c < percpu::cpus_up() => c,
            _ => here,
        };
        // An offline CPU's timers go to the arming CPU (Linux `mod_timer`
        // takes the local base; `add_timer_on` an offline CPU is a bug).
        if c != here && !super::cpu_online(c) {
            c = here;
        }
        let (g, old) = {
            let mut st = self.inner.st.lock();
            let old = st.pending.then_some(st.cpu);
            st.pending = true;
            st.deadline = deadline;
            st.cpu = c;
            (self.inner.gen_.fetch_add(1, Ordering::AcqRel) + 1, old)
        };
        if let Some(oc) = old {
            unlink(oc, &self.inner);
        }
        let e = Entry { deadline, gen_: g, t: self.inner.clone() };
        let e = {
            let mut w = WHEEL[c].lock();
            if CLOSED[c].load(Ordering::Relaxed) {
                Some(e)
            } else {
                w.push(e);
                None
            }
        };
        if let Some(e) = e {
            // The CPU died between the check and here: arm locally.
            c = here;
            {
                let mut st = e.t.st.lock();
                if e.t.gen_.load(Ordering::Acquire) == g {
                    st.cpu = here;
                }
            }
            WHEEL[here].lock().push(e);
        }
        crate::sync::irq_restore(was);
        if deadline < PROGRAMMED[c].load(Ordering::Relaxed) {
            if c == here {
                reprogram();
            } else {
                REPROGRAM[c].store(true, Ordering::Release);
                apic::send_ipi(PERCPU[c].apic_id.load(Ordering::Relaxed), interrupts::VEC_RESCHED);
            }
        }
    }

    /// Disarm; true if it was pending.
    pub fn cancel(&self) -> bool {
        let (was, cpu) = {
            let mut st = self.inner.st.lock();
            let was = st.pending;
            st.pending = false;
            self.inner.gen_.fetch_add(1, Ordering::AcqRel);
            (was, st.cpu)
        };
        if was {
            unlink(cpu, &self.inner);
        }
        was
    }

    /// Disarm and wait for a running callback to finish (unless called from
    /// that callback); true if it was pending.
    pub fn cancel_sync(&self) -> bool {
        let was = self.cancel();
        let me = percpu::cpu_id() as u32;
        loop {
            let r = self.inner.running_on.load(Ordering::Acquire);
            if r == u32::MAX || (r == me && percpu::in_irq()) {
                break;
            }
            crate::arch::cpu::pause();
        }
        was
    }

    /// Is it armed?
    pub fn is_pending(&self) -> bool {
        self.inner.st.lock().pending
    }
}

/// Drop `t`'s entries from `cpu`'s heap.
fn unlink(cpu: usize, t: &Arc<TimerInner>) {
    WHEEL[cpu].lock().retain(|e| !Arc::ptr_eq(&e.t, t));
}

/// This CPU stops (hot-unplug): no more ticks or timer interrupts.
/// Interrupts are off.
pub fn stop_here() {
    let me = percpu::cpu_id();
    TIMER_STARTED[me].store(false, Ordering::Release);
    PROGRAMMED[me].store(u64::MAX, Ordering::Relaxed);
    apic::timer_stop();
}

/// Hand this CPU's pending timers to CPU `to`, keeping their deadlines
/// (Linux `timers_dead_cpu`, done here by the dying CPU itself, so that a
/// context that armed a timer here just before, such as the one waiting
/// for this CPU to stop, is still woken); arming on this CPU goes to the
/// arming CPU until it runs again. Interrupts are off.
pub fn migrate_to(to: usize) {
    let me = percpu::cpu_id();
    if to == me || to >= MAX_CPUS {
        return;
    }
    let moved = {
        let mut w = WHEEL[me].lock();
        CLOSED[me].store(true, Ordering::Relaxed);
        core::mem::take(&mut *w)
    };
    let mut first = u64::MAX;
    for e in moved.into_vec() {
        {
            let mut st = e.t.st.lock();
            if st.cpu == me {
                st.cpu = to;
            }
        }
        first = first.min(e.deadline);
        WHEEL[to].lock().push(e);
    }
    if first < PROGRAMMED[to].load(Ordering::Relaxed) {
        REPROGRAM[to].store(true, Ordering::Release);
        apic::send_ipi(PERCPU[to].apic_id.load(Ordering::Relaxed), interrupts::VEC_RESCHED);
    }
}

/// This CPU runs again after a hot-unplug: take timers and start the tick.
pub fn restart_here() {
    let me = percpu::cpu_id();
    {
        let _w = WHEEL[me].lock();
        CLOSED[me].store(false, Ordering::Relaxed);
    }
    start_tick();
}

/// Reserve room in `cpu`'s timer heap (boot), so arming rarely allocates.
pub fn reserve(cpu: usize) {
    WHEEL[cpu].lock().reserve(HEAP_RESERVE);
}

/// Run this CPU's expired timers.
fn run_expired(me: usize) {
    loop {
        let now = time::now_ns();
        let e = {
            let mut w = WHEEL[me].lock();
            match w.peek() {
                Some(e) if e.deadline <= now => w.pop(),
                _ => None,
            }
        };
        let Some(e) = e else { break };
        let run = {
            let mut st = e.t.st.lock();
            if st.pending && e.t.gen_.load(Ordering::Acquire) == e.gen_ {
                st.pending = false;
                e.t.running_on.store(me as u32, Ordering::Release);
                true
            } else {
                false
            }
        };
        if run {
            (e.t.cb)();
            e.t.running_on.store(u32::MAX, Ordering::Release);
        }
    }
}

/// Program this CPU's LAPIC timer for its next event (first timer or next
/// tick). Interrupts must be off or the caller must tolerate a spurious
/// early interrupt (it only causes a re-evaluation).
pub fn reprogram() {
    let was = crate::sync::irq_save();
    let me = percpu::cpu_id();
    if TIMER_STARTED[me].load(Ordering::Relaxed) {
        let next_tick = LAST_TICK[me].load(Ordering::Relaxed) + TICK_NS;
        let next_timer = WHEEL[me].lock().peek().map_or(u64::MAX, |e| e.deadline);
        let next = next_tick.min(next_timer);
        PROGRAMMED[me].store(next, Ordering::Relaxed);
        let now = time::now_ns();
        apic::timer_oneshot(time::ns_to_lapic(next.saturating_sub(now).max(1_000)));
    }
    crate::sync::irq_restore(was);
}

/// Start this CPU's tick.
pub fn start_tick() {
    let me = percpu::cpu_id();
    LAST_TICK[me].store(time::now_ns(), Ordering::Relaxed);
    TIMER_STARTED[me].store(true, Ordering::Release);
    reprogram();
}

/// The LAPIC timer interrupt.
pub fn timer_interrupt(_f: &mut interrupts::InterruptFrame) {
    apic::eoi();
    let pc = percpu::this_cpu();
    let me = pc.cpu.load(Ordering::Relaxed) as usize;
    pc.ticks.fetch_add(1, Ordering::Relaxed);
    crate::mem::stack::tlb_catch_up();
    run_expired(me);
    // An allocation that fell below the low watermark left a flag: wake
    // kswapd from here, never from inside the allocator.
    kport::mm::tick();
    let now = time::now_ns();
    let last = LAST_TICK[me].load(Ordering::Relaxed);
    if now >= last + TICK_NS {
        LAST_TICK[me].store(now, Ordering::Relaxed);
        super::tick(now - last);
    }
    reprogram();
}

/// Sleep until `deadline` (never returns early). Linux `msleep` /
/// `schedule_timeout_uninterruptible` in a loop.
pub fn sleep_until(deadline: u64) {
    while time::now_ns() < deadline {
        super::set_current_state(super::State::Uninterruptible, "sleep");
        schedule_until(deadline);
    }
}

/// Block in the announced state until woken or `deadline`; true if the
/// deadline passed. Linux `schedule_timeout`.
pub fn schedule_until(deadline: u64) -> bool {
    if time::now_ns() >= deadline {
        super::with_current(|t| {
            let _g = t.sched_lock.lock();
            t.state.store(super::State::Running as u8, Ordering::Release);
        });
        return true;
    }
    let me = super::current();
    let t = Timer::new(Arc::new(move || {
        super::wake(&me, super::wake_mask::NORMAL | super::wake_mask::PARKED);
    }));
    t.arm(deadline, None);
    super::schedule();
    t.cancel_sync();
    time::now_ns() >= deadline
}
