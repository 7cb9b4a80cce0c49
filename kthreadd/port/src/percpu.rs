//! Read-modify-writes of per-CPU words (pending masks, counters) that
//! cost no locked instruction where the port allows it.
//!
//! A word of CPU N written only by the context running on CPU N, with
//! interrupts disabled (so nothing else on that CPU writes it between the
//! load and the store), needs no atomic read-modify-write: Linux updates
//! `local_softirq_pending` and its per-CPU statistics with plain
//! instructions for that reason. Under QEMU's TCG a locked instruction is
//! a call into the emulator, several times a plain one. Where
//! [`Port::one_context_per_cpu`](crate::Port::one_context_per_cpu) is false
//! (the host port runs several threads on one virtual CPU) the functions
//! here are the atomic operations.
//!
//! Readers on other CPUs see each store whole (the words stay atomics);
//! a reader may see an update late, as with a relaxed atomic.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::port;

/// What the port answered: 0 not asked yet, 1 no, 2 yes.
static ONE_CONTEXT: AtomicU8 = AtomicU8::new(0);

/// Does the installed port run one context at a time on each CPU? Asked
/// once, then one load.
///
/// Context: any, after the port is installed.
#[inline]
pub fn one_context_per_cpu() -> bool {
    match ONE_CONTEXT.load(Ordering::Relaxed) {
        0 => ask(),
        v => v == 2,
    }
}

#[cold]
fn ask() -> bool {
    let yes = port().one_context_per_cpu();
    ONE_CONTEXT.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
    yes
}

/// Set `bits` in the calling CPU's word `w`, returning its value before.
///
/// Context: interrupts disabled (or no interrupt handler writes `w`), on
/// the CPU that owns `w`, or any context on a CPU that is down.
#[inline]
pub fn or(w: &AtomicU32, bits: u32) -> u32 {
    if one_context_per_cpu() {
        let was = w.load(Ordering::Relaxed);
        w.store(was | bits, Ordering::Relaxed);
        was
    } else {
        w.fetch_or(bits, Ordering::Relaxed)
    }
}

/// Take the calling CPU's word `w`, leaving 0.
///
/// Context: as [`or`].
#[inline]
pub fn take(w: &AtomicU32) -> u32 {
    if one_context_per_cpu() {
        let v = w.load(Ordering::Relaxed);
        if v != 0 {
            w.store(0, Ordering::Relaxed);
        }
        v
    } else {
        w.swap(0, Ordering::Relaxed)
    }
}

/// Add `n` to the calling CPU's counter `w`.
///
/// Context: as [`or`].
#[inline]
pub fn add(w: &AtomicU64, n: u64) {
    if one_context_per_cpu() {
        w.store(w.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    } else {
        w.fetch_add(n, Ordering::Relaxed);
    }
}
