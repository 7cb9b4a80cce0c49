//! One-shot timers of the kernel-thread port (Linux `timer_list`).
//!
//! Each CPU keeps its armed timers in a map ordered by deadline, in its [`PercpuBlock`]. They
//! fire from Redox's `tick()` on that CPU (the PIT interrupt on the boot CPU, the PIT IPI on the
//! others) and from the port's yield points on that CPU (`schedule`, `yield_now`,
//! `cond_resched`), in interrupt context. The tick is Redox's PIT period (about 4 ms), which is
//! also the resolution of a timer on an idle CPU.
//!
//! Lock order: a timer's own state, then one CPU's map. A callback runs with no lock held.

use alloc::{collections::BTreeMap, sync::Arc, vec::Vec};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

// The subsystem's API (the only lines to adapt when its crates change).
use kport::{Port as _, SleepState, TaskRef};
use spin::Mutex;

use super::{clock, percpu_of, port::PORT, token, IrqGuard};
use crate::percpu::PercpuBlock;

/// No CPU is running the callback.
const NOT_RUNNING: u32 = u32::MAX;

static NEXT_TIMER_ID: AtomicU64 = AtomicU64::new(1);

/// The armed timers of one CPU: `(deadline, timer id)` to the timer and the generation it was
/// armed with.
pub type TimerMap = BTreeMap<(u64, u64), (Arc<TimerInner>, u64)>;

struct TimerState {
    pending: bool,
    deadline: u64,
    cpu: usize,
    /// Bumped by every arm and cancel; map entries of older generations are stale.
    generation: u64,
}

/// The shared part of a timer (the map entries point at it).
pub struct TimerInner {
    id: u64,
    callback: Arc<dyn Fn() + Send + Sync>,
    state: Mutex<TimerState>,
    running_on: AtomicU32,
    /// Contexts sleeping in [`Timer::cancel_sync`] until the running callback returns.
    sync_waiters: Mutex<Vec<TaskRef>>,
}

/// A one-shot timer whose callback runs in interrupt context.
pub struct Timer {
    inner: Arc<TimerInner>,
}

fn map_of(cpu: usize) -> &'static Mutex<TimerMap> {
    &percpu_of(cpu).kthread.timers
}

impl Timer {
    /// A disarmed timer calling `callback` when it fires.
    pub fn new(callback: Arc<dyn Fn() + Send + Sync>) -> Self {
        Timer {
            inner: Arc::new(TimerInner {
                id: NEXT_TIMER_ID.fetch_add(1, Ordering::Relaxed),
                callback,
                state: Mutex::new(TimerState {
                    pending: false,
                    deadline: 0,
                    cpu: 0,
                    generation: 0,
                }),
                running_on: AtomicU32::new(NOT_RUNNING),
                sync_waiters: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Arm (or move) it to fire at `deadline` ns of the port clock on `cpu` (default: here).
    pub fn arm(&self, deadline: u64, cpu: Option<usize>) {
        let here = crate::cpu_id().get() as usize;
        let target = match cpu {
            Some(c) if c < crate::cpu_count() as usize => c,
            _ => here,
        };
        let mut st = self.inner.state.lock();
        if st.pending {
            map_of(st.cpu).lock().remove(&(st.deadline, self.inner.id));
        }
        st.pending = true;
        st.deadline = deadline;
        st.cpu = target;
        st.generation = st.generation.wrapping_add(1);
        let generation = st.generation;
        let mut map = map_of(target).lock();
        map.insert(
            (deadline, self.inner.id),
            (Arc::clone(&self.inner), generation),
        );
        percpu_of(target)
            .kthread
            .timer_next
            .fetch_min(deadline, Ordering::Release);
    }

    /// Disarm it; true if it was pending.
    pub fn cancel(&self) -> bool {
        let mut st = self.inner.state.lock();
        let was = st.pending;
        st.generation = st.generation.wrapping_add(1);
        if was {
            st.pending = false;
            map_of(st.cpu).lock().remove(&(st.deadline, self.inner.id));
        }
        was
    }

    /// Disarm it and wait until its callback is not running (unless called from that callback).
    ///
    /// A callback runs in interrupt context on another CPU and cannot sleep, so the wait is as
    /// long as one callback, but that CPU may be slow to run it (a TCG vCPU the host has
    /// descheduled). A caller that may sleep therefore sleeps until the callback's end wakes it;
    /// an atomic caller (a spinlock held, or itself in a callback or an IPI call) spins, which
    /// is bounded by that one callback.
    pub fn cancel_sync(&self) -> bool {
        let was = self.cancel();
        let me = crate::cpu_id().get();
        let inner = &self.inner;
        let done = || {
            let on = inner.running_on.load(Ordering::SeqCst);
            on == NOT_RUNNING || (on == me && super::in_irq())
        };
        if PORT.in_atomic() || token::lent_here() {
            while !done() {
                core::hint::spin_loop();
            }
            return was;
        }
        let mut queued = false;
        while !done() {
            if !queued {
                inner.sync_waiters.lock().push(PORT.current());
                queued = true;
            }
            // Announce the sleep, then test again: the callback's end (in `run_expired`) clears
            // `running_on` before it wakes the waiters, so either the test sees it cleared or
            // the wake-up finds this context queued and its state set.
            PORT.set_current_state(SleepState::Uninterruptible, "del_timer_sync");
            if done() {
                PORT.set_current_running();
                break;
            }
            PORT.schedule();
        }
        if queued {
            let me_id = PORT.current_id();
            inner.sync_waiters.lock().retain(|t| t.id() != me_id);
        }
        was
    }

    /// Is it armed?
    pub fn is_pending(&self) -> bool {
        self.inner.state.lock().pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // A dropped timer must not keep its callback (and what it owns) in a map.
        self.cancel();
    }
}

/// Is a timer armed on this CPU due (possibly: a cancelled one may still be counted until
/// [`run_expired`] looks)? One load and a clock read, no lock.
pub fn maybe_due() -> bool {
    PercpuBlock::current()
        .kthread
        .timer_next
        .load(Ordering::Acquire)
        <= clock::now_ns()
}

/// Run the expired timers of the calling CPU, in interrupt context.
pub fn run_expired() {
    let percpu = PercpuBlock::current();
    let me = percpu.cpu_id.get();
    let now = clock::now_ns();
    loop {
        let entry = {
            let mut map = percpu.kthread.timers.lock();
            match map.first_key_value() {
                Some((&(deadline, _), _)) if deadline <= now => map.pop_first(),
                first => {
                    // Nothing due: what the yield points compare the clock with until the next
                    // arm.
                    let next = first.map_or(u64::MAX, |(&(deadline, _), _)| deadline);
                    percpu.kthread.timer_next.store(next, Ordering::Release);
                    None
                }
            }
        };
        let Some((_, (timer, generation))) = entry else {
            break;
        };
        let fire = {
            let mut st = timer.state.lock();
            if st.pending && st.generation == generation {
                st.pending = false;
                timer.running_on.store(me, Ordering::Release);
                true
            } else {
                false
            }
        };
        if fire {
            let irq = IrqGuard::enter();
            (timer.callback)();
            drop(irq);
            timer.running_on.store(NOT_RUNNING, Ordering::SeqCst);
            let waiters = core::mem::take(&mut *timer.sync_waiters.lock());
            for t in waiters {
                t.wake();
            }
        }
    }
}
