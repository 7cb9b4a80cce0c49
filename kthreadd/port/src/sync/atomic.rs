//! The atomics of the subsystem's lock-free protocols (a work item's pending
//! bit, its instance numbers, a kthread's control word).
//!
//! Normally `core::sync::atomic`. With the `loom` feature they are loom's,
//! so that the model checks (`make loom`) run the crates' own code and
//! explore every interleaving of these operations (tokio's `src/loom/` does
//! the same). Loom's atomics cannot be built in a `const` context: statics
//! and counters that take no part in a protocol (statistics, timestamps)
//! use `core::sync::atomic` directly.

#[cfg(feature = "loom")]
pub use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

#[cfg(not(feature = "loom"))]
pub use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

pub use core::sync::atomic::Ordering;

/// Tell the scheduler (or, under loom, the model checker) that the caller
/// spins waiting for another context.
#[inline(always)]
pub fn spin_loop() {
    #[cfg(feature = "loom")]
    loom::hint::spin_loop();
    #[cfg(not(feature = "loom"))]
    core::hint::spin_loop();
}
