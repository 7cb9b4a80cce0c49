//! Counted one-line warnings (Linux `WARN()` and its `warn_count`).
//!
//! Misuse of an API that can be survived (a bind after the first wake-up, a
//! flush of an item from itself, a queue destroyed under its user) gets an
//! error and one console line `# WARNING: <what>, with its context`. Every
//! such line goes through [`warn`], which prints it, counts it (Linux counts
//! warnings in `/sys/kernel/warn_count`) and keeps the latest
//! [`WARNINGS_KEPT`] in a ring, so a test can check that a misuse warned,
//! and with which words, rather than only that it returned an error.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::sync::SpinLock;

/// Warnings kept for [`since`] (enough for the warnings of one test case
/// plus a few from background threads made meanwhile).
pub const WARNINGS_KEPT: usize = 32;

static COUNT: AtomicU64 = AtomicU64::new(0);

/// The latest warnings, by number.
struct Ring {
    lines: [Option<(u64, String)>; WARNINGS_KEPT],
}

static RING: SpinLock<Ring> =
    SpinLock::ranked("warnings", crate::sync::rank::WARNINGS, Ring { lines: [const { None }; WARNINGS_KEPT] });

/// Print `# WARNING: {msg}` on the console, count it and keep it.
///
/// Context: any (interrupt context included; it allocates).
pub fn warn(msg: &str) {
    let line = alloc::format!("# WARNING: {msg}");
    let mut kept = Some(line.clone());
    {
        // Numbered under the ring's lock, so the ring holds the latest ones.
        let mut ring = RING.lock();
        let n = COUNT.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = &mut ring.lines[(n % WARNINGS_KEPT as u64) as usize];
        // The line it replaces is freed after the lock is let go.
        kept = core::mem::replace(slot, kept.map(|l| (n, l))).map(|(_, l)| l);
    }
    drop(kept);
    if crate::installed() {
        crate::port().console_line(&line);
    }
}

/// Warnings made since boot (Linux `warn_count`).
///
/// Context: any.
pub fn count() -> u64 {
    COUNT.load(Ordering::Acquire)
}

/// The warning lines (with their `# WARNING: ` prefix) made after the first
/// `count` (as [`count`] returned it), oldest first, as far as the ring
/// still holds them.
///
/// Context: any.
pub fn since(count: u64) -> Vec<String> {
    let ring = RING.lock();
    let mut v: Vec<(u64, String)> = ring.lines.iter().flatten().filter(|(n, _)| *n > count).cloned().collect();
    drop(ring);
    v.sort_by_key(|(n, _)| *n);
    v.into_iter().map(|(_, l)| l).collect()
}
