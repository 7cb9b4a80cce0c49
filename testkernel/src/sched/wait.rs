//! Wait queues for the scheduler's own use (exit waits, tests of the
//! scheduler). The subsystem has its own, built on the port.

use alloc::collections::VecDeque;
use alloc::sync::Arc;

use super::{State, Task, wake_mask};
use crate::sync::IrqSpinLock;

/// A queue of sleeping contexts (Linux `wait_queue_head_t`).
pub struct WaitQueue {
    q: IrqSpinLock<VecDeque<Arc<Task>>>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        WaitQueue { q: IrqSpinLock::named("waitqueue", VecDeque::new()) }
    }

    /// Sleep until `cond` holds (Linux `wait_event`). `cond` is checked after
    /// the context is queued and marked sleeping, so a wake-up that follows a
    /// change of the condition is never lost.
    pub fn wait_until(&self, wchan: &'static str, cond: impl Fn() -> bool) {
        super::assert_may_sleep(wchan);
        let me = super::current();
        loop {
            {
                let mut q = self.q.lock();
                if !q.iter().any(|t| Arc::ptr_eq(t, &me)) {
                    q.push_back(me.clone());
                }
                super::set_current_state(State::Uninterruptible, wchan);
            }
            if cond() {
                break;
            }
            super::schedule();
        }
        super::set_current_state(State::Running, "");
        self.q.lock().retain(|t| !Arc::ptr_eq(t, &me));
    }

    /// Wake the longest waiter; true if there was one.
    pub fn wake_one(&self) -> bool {
        let t = self.q.lock().pop_front();
        match t {
            Some(t) => {
                super::wake(&t, wake_mask::NORMAL);
                true
            }
            None => false,
        }
    }

    /// Wake every waiter; returns how many there were.
    pub fn wake_all(&self) -> usize {
        let all: VecDeque<Arc<Task>> = core::mem::take(&mut *self.q.lock());
        let n = all.len();
        for t in all {
            super::wake(&t, wake_mask::NORMAL);
        }
        n
    }

    /// Number of queued waiters.
    pub fn len(&self) -> usize {
        self.q.lock().len()
    }
}
