//! The adaptive poll window of an idle CPU, shared by the kernels the
//! subsystem runs in (the testkernel's idle loop, the Redox glue's
//! `idle_wait`).
//!
//! Waking a halted CPU costs far more than finding a flag set on a polling
//! one (under QEMU, the wake-up of the vCPU's host thread), so an idle CPU
//! polls for a while before it halts, but only while its idle periods turn
//! out short: Linux's cpuidle makes the same trade with its poll state, and
//! its `haltpoll` governor adapts a window the same way.

/// The window a CPU starts polling with once its idle periods turn out
/// short (ns).
pub const POLL_START_NS: u64 = 2_000;
/// The longest window, and the longest idle period still counted as short
/// (ns).
pub const POLL_MAX_NS: u64 = 50_000;

/// The next window after a CPU polled `window` ns in vain and then halted,
/// the whole idle period (poll and halt) lasting `idle_ns`: doubled (from
/// [`POLL_START_NS`] up to [`POLL_MAX_NS`]) if the period was short enough
/// for the longest window, halved otherwise, and 0 (no polling) below the
/// starting window. Judging the poll alone would halve a window just short
/// of the wake-ups and let the next short halt double it back, never
/// reaching them.
pub fn next_window(window: u64, idle_ns: u64) -> u64 {
    if idle_ns <= POLL_MAX_NS {
        window.saturating_mul(2).clamp(POLL_START_NS, POLL_MAX_NS)
    } else if window / 2 < POLL_START_NS {
        0
    } else {
        window / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_idle_periods_grow_the_window_to_the_cap() {
        let mut w = 0;
        let mut seen = alloc::vec::Vec::new();
        for _ in 0..8 {
            w = next_window(w, 30_000);
            seen.push(w);
        }
        assert_eq!(seen, [2_000, 4_000, 8_000, 16_000, 32_000, 50_000, 50_000, 50_000]);
    }

    #[test]
    fn long_idle_periods_shrink_it_to_nothing() {
        let mut w = POLL_MAX_NS;
        let mut seen = alloc::vec::Vec::new();
        for _ in 0..6 {
            w = next_window(w, 1_000_000);
            seen.push(w);
        }
        assert_eq!(seen, [25_000, 12_500, 6_250, 3_125, 0, 0]);
    }

    #[test]
    fn a_window_just_short_of_the_wake_ups_still_grows() {
        // Wake-ups 14 us after idle begins: a 8 us poll fails, the halt
        // after it lasts 6 us; the period (14 us) is short, so it grows.
        assert_eq!(next_window(8_000, 8_000 + 6_000), 16_000);
    }
}
