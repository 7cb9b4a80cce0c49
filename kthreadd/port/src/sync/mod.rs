//! Synchronization on the port (Linux `spinlock_t`, `wait_queue_head_t`,
//! `struct completion`, `struct mutex`), the same on every port: the
//! testkernel, the host and Redox.
//!
//! * [`SpinLock<T, G>`](SpinLock): one spinlock type for the whole
//!   subsystem and the testkernel, whose guard policy `G` says what it turns
//!   off while held ([`IrqSave`]: interrupts and preemption, the default;
//!   [`PreemptOff`]: preemption only; ports add their own). A lock that
//!   stays taken too long is reported with its owner's call site.
//! * [`LockedBy`]: data protected by another object's lock, reachable only
//!   with a proof ([`Held`]) that the right lock is held (Rust-for-Linux's
//!   `LockedBy`), so "taken only under the pool lock" is checked, not
//!   commented.
//! * [`WaitQueue`], [`Completion`], [`Mutex`]: sleeping primitives; each
//!   waiting entry point calls [`crate::might_sleep`] first.
//! * [`atomic`]: the atomics the subsystem's lock-free protocols use, which
//!   the `loom` feature swaps for loom's so the crates' own code runs under
//!   the model checker.

pub mod atomic;
mod locked_by;
mod mutex;
pub mod rank;
mod spin;
mod wait;

pub use locked_by::{LockedBy, LockedRef};
pub use mutex::{Mutex, MutexGuard};
pub use spin::{
    GuardPolicy, Held, IrqSave, IrqSaved, IrqSection, LockEnv, PreemptOff, SPIN_WARN_NS, SpinLock, SpinLockGuard,
    set_lock_env,
};
pub use wait::{Completion, WaitQueue};
