//! The control word of a kernel thread: the lock-free part of the stop /
//! park / start protocol, kept apart so it can be model-checked (the `loom`
//! tests drive exactly these transitions from racing threads).
//!
//! Linux keeps the same facts in `struct kthread::flags`
//! (`KTHREAD_SHOULD_STOP`, `KTHREAD_SHOULD_PARK`, `KTHREAD_IS_PER_CPU`) plus
//! the `exited` / `parked` completions; here every fact is a bit of one word so
//! each transition is a single atomic read-modify-write.

// Loom's atomics under the `loom` feature (the model checks drive these
// very transitions), core's otherwise.
use kport::sync::atomic::{AtomicU32, Ordering};

/// `kthread_stop` was called (Linux `KTHREAD_SHOULD_STOP`).
pub const SHOULD_STOP: u32 = 1 << 0;
/// `kthread_park` was called and no unpark since (`KTHREAD_SHOULD_PARK`).
pub const SHOULD_PARK: u32 = 1 << 1;
/// The thread function was entered (it will return a value).
pub const STARTED: u32 = 1 << 2;
/// The thread has exited; its exit value is stored.
pub const EXITED: u32 = 1 << 3;
/// The first wake-up was issued (binding is no longer allowed).
pub const WOKEN: u32 = 1 << 4;
/// The thread is a per-CPU thread of its recorded CPU (`KTHREAD_IS_PER_CPU`):
/// set by `create_on_cpu`, set or cleared by `Kthread::set_per_cpu`.
pub const PER_CPU: u32 = 1 << 5;
/// The thread is parked at a `parkme` point.
pub const PARKED: u32 = 1 << 6;
/// The thread called `freezer::set_freezable` (Linux clears `PF_NOFREEZE`).
pub const FREEZABLE: u32 = 1 << 7;
/// The thread sits in the refrigerator (Linux `frozen(p)`). Set by the
/// thread before it checks whether a freeze is still on, so a thaw that
/// clears the freeze afterwards sees the bit and wakes it.
pub const FROZEN: u32 = 1 << 8;

/// The control word.
#[derive(Debug)]
pub struct Control(AtomicU32);

/// What the thread's entry does on its first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstRun {
    /// Run the thread function.
    RunFn,
    /// Stopped before it ever ran: exit with `EINTR` without running it.
    StoppedBeforeRun,
}

impl Control {
    /// A fresh thread's word (`extra`: e.g. [`PER_CPU`]).
    pub fn new(extra: u32) -> Self {
        Control(AtomicU32::new(extra))
    }

    /// All bits now.
    pub fn load(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    /// Is `bit` set?
    pub fn has(&self, bit: u32) -> bool {
        self.load() & bit != 0
    }

    /// Set `bit`; returns the word before.
    pub fn set(&self, bit: u32) -> u32 {
        self.0.fetch_or(bit, Ordering::AcqRel)
    }

    /// Clear `bit`; returns the word before.
    pub fn clear(&self, bit: u32) -> u32 {
        self.0.fetch_and(!bit, Ordering::AcqRel)
    }

    /// The entry decides, atomically with respect to a stop, whether the
    /// function runs: if no stop was requested it claims [`STARTED`], after
    /// which a stop waits for the function to return.
    pub fn first_run(&self) -> FirstRun {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if cur & SHOULD_STOP != 0 {
                return FirstRun::StoppedBeforeRun;
            }
            match self.0.compare_exchange_weak(cur, cur | STARTED, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return FirstRun::RunFn,
                Err(now) => cur = now,
            }
        }
    }

    /// Claim the first wake-up; false if the thread was already woken.
    pub fn claim_first_wake(&self) -> bool {
        self.set(WOKEN) & WOKEN == 0
    }

    /// Request a park. `Err(bits)` if the thread has exited or a park is
    /// already pending (Linux answers `-ENOSYS` / `-EBUSY`).
    pub fn request_park(&self) -> Result<(), u32> {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if cur & (EXITED | SHOULD_PARK) != 0 {
                return Err(cur);
            }
            match self.0.compare_exchange_weak(cur, cur | SHOULD_PARK, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Should the thread (still) sit in `parkme`? A stop always wins: a
    /// thread asked to stop leaves the park point.
    pub fn should_stay_parked(&self) -> bool {
        let w = self.load();
        w & SHOULD_PARK != 0 && w & SHOULD_STOP == 0
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;

    #[test]
    fn first_run_claims_started_unless_stopped() {
        let c = Control::new(0);
        assert_eq!(c.first_run(), FirstRun::RunFn);
        assert!(c.has(STARTED));
        let c = Control::new(0);
        c.set(SHOULD_STOP);
        assert_eq!(c.first_run(), FirstRun::StoppedBeforeRun);
        assert!(!c.has(STARTED), "a stopped thread must not be marked started");
    }

    #[test]
    fn only_the_first_wake_is_claimed() {
        let c = Control::new(0);
        assert!(c.claim_first_wake());
        assert!(!c.claim_first_wake());
        assert!(c.has(WOKEN));
    }

    #[test]
    fn park_requests_refuse_exited_and_pending() {
        let c = Control::new(0);
        assert_eq!(c.request_park(), Ok(()));
        assert!(c.has(SHOULD_PARK));
        assert!(c.request_park().is_err_and(|w| w & SHOULD_PARK != 0), "a second park while one is pending");
        c.clear(SHOULD_PARK);
        c.set(EXITED);
        assert!(c.request_park().is_err_and(|w| w & EXITED != 0), "park of an exited thread");
    }

    #[test]
    fn stop_wins_over_park() {
        let c = Control::new(PER_CPU);
        c.request_park().unwrap();
        assert!(c.should_stay_parked());
        c.set(SHOULD_STOP);
        assert!(!c.should_stay_parked(), "a thread asked to stop must leave its park point");
        assert!(c.has(PER_CPU), "flags given at creation are kept");
    }
}
