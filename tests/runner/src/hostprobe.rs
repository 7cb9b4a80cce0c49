//! How fast the host moves a cache line between two of its CPUs, measured
//! right after each boot of `bench-compare` and `bench-scale`.
//!
//! QEMU's TCG runs each guest CPU on a host thread and does the guest's
//! atomic operations with the host's, so every lock, wake-up and work item
//! handed from one guest CPU to the other costs host cache-line transfers.
//! On a shared machine their price is not constant: on the machine these
//! figures were taken on (itself a virtual machine, placed on physical cores
//! by a hypervisor) the round trip between its two CPUs switched between
//! about 55 ns and about 360 ns, and in the slow state the cross-CPU
//! benchmarks (`wq_throughput_unbound` above all) measured half their
//! throughput on every side, while a single-CPU loop ran at the same speed.
//! The placement held while QEMU kept both CPUs busy and often changed within
//! seconds once they idled, so the probe runs the moment a boot ends: in
//! eight boots, one right after matched the boot's state every time, one
//! right before it six times in eight. The table then says which boots were
//! taken in which state (`docs/benchmarks.md`, "The collapsed throughput
//! boots, explained").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Round trips one probe times, after [`WARMUP`] untimed ones (until the
/// partner thread is running, a round trip measures the host's scheduler).
const ROUND_TRIPS: u64 = 50_000;
/// Untimed round trips first.
const WARMUP: u64 = 2_000;
/// Probes per figure.
const PROBES: usize = 5;
/// A probe gives up after this long (two threads sharing one host CPU make
/// each hand-off wait for the host's scheduler).
const LIMIT: Duration = Duration::from_millis(200);

/// The fastest of [`PROBES`] probes: nanoseconds per round trip of a
/// value bounced between two host threads through one atomic word, or `None`
/// when the host has a single CPU (nothing to measure) or no probe could
/// finish. The fastest, because what the figure is for is where the host
/// placed the two CPUs, which holds for seconds; a probe that another task
/// interrupted measures that task instead.
pub fn core_to_core_ns() -> Option<f64> {
    if thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return None;
    }
    (0..PROBES).filter_map(|_| probe_once()).min_by(f64::total_cmp)
}

/// The word the two threads bounce, alone on its cache lines (a neighbour
/// read or written by either thread would add transfers of its own).
#[repr(align(128))]
struct Line(AtomicU64);

/// Written by the measuring thread to tell the partner to return.
const DONE: u64 = u64::MAX;

/// One probe: the two threads take turns incrementing the word (odd values
/// are the partner's turn); the time over the round trips completed.
fn probe_once() -> Option<f64> {
    let word = Arc::new(Line(AtomicU64::new(0)));
    let w = word.clone();
    let partner = thread::spawn(move || {
        let mut next = 1u64;
        loop {
            let mut spins = 0u32;
            loop {
                let v = w.0.load(Ordering::Acquire);
                if v == next {
                    break;
                }
                if v == DONE {
                    return;
                }
                spins += 1;
                if spins.is_multiple_of(4096) {
                    thread::yield_now();
                }
                std::hint::spin_loop();
            }
            // A swap, not a store: a give-up (`DONE`) written since the
            // load must not be overwritten, or this thread would wait for good.
            if w.0.compare_exchange(next, next + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
                return;
            }
            next += 2;
        }
    });
    let begun = Instant::now();
    let mut start = begun;
    let mut done = 0u64;
    let mut failed = false;
    'trips: while done < WARMUP + ROUND_TRIPS {
        if done == WARMUP {
            start = Instant::now();
        }
        let mine = 2 * done;
        word.0.store(mine + 1, Ordering::Release);
        let mut spins = 0u32;
        while word.0.load(Ordering::Acquire) != mine + 2 {
            spins += 1;
            if spins.is_multiple_of(4096) {
                if begun.elapsed() > LIMIT {
                    failed = true;
                    break 'trips;
                }
                thread::yield_now();
            }
            std::hint::spin_loop();
        }
        done += 1;
    }
    let elapsed = start.elapsed();
    word.0.store(DONE, Ordering::Release);
    let _ = partner.join();
    if failed {
        return None;
    }
    Some(elapsed.as_nanos() as f64 / ROUND_TRIPS as f64)
}

/// One probe result: the round, the boot it followed, and the figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Round number, from 1.
    pub round: usize,
    /// The boot just ended (`linux`, `ours`, a `--side` name, or a
    /// `bench-scale` boot such as `ours-smp4`).
    pub side: String,
    /// Nanoseconds per round trip, `None` when it could not be measured.
    pub ns: Option<f64>,
}

/// Probe now, print the figure on `out` after `label` (`bench-compare: ` or
/// `bench-scale: ` and what was just booted), and return it as a [`Sample`].
pub fn sample(round: usize, side: String, label: &str, out: &mut dyn std::io::Write) -> Sample {
    let ns = core_to_core_ns();
    let shown = ns.map_or(String::from("not measured"), |ns| format!("{ns:.0} ns"));
    let _ = writeln!(out, "{label}: host core-to-core round trip after {side}: {shown}");
    Sample { round, side, ns }
}

/// The samples as the `host_core_to_core_ns` array of a report's JSON.
pub fn json(samples: &[Sample]) -> serde_json::Value {
    serde_json::Value::from(
        samples.iter().map(|p| serde_json::json!({ "round": p.round, "side": p.side, "ns": p.ns })).collect::<Vec<_>>(),
    )
}

/// A boot whose probe is more than this factor away from the sitting's
/// median probe (either way) was taken in another host state than most.
pub const STATE_CHANGE: f64 = 2.0;

/// The Markdown paragraph `bench-compare` and `bench-scale` add under their
/// tables: the probes per round, and a warning naming the boots whose probe
/// is more than [`STATE_CHANGE`] times slower or faster than the sitting's
/// median (the host offers more than two placements: besides the usual 55-65
/// and the slow 330-380 ns, a 29 ns one was seen once).
pub fn markdown(samples: &[Sample]) -> String {
    let mut known: Vec<f64> = samples.iter().filter_map(|s| s.ns).collect();
    if known.is_empty() {
        return String::from("Host core-to-core round trip: not measured (one host CPU, or a probe timed out).\n");
    }
    let mut rounds: Vec<usize> = samples.iter().map(|s| s.round).collect();
    rounds.dedup();
    let per_round: Vec<String> = rounds
        .iter()
        .map(|r| {
            let figs: Vec<String> = samples
                .iter()
                .filter(|s| s.round == *r)
                .map(|s| format!("{} {}", s.side, s.ns.map_or(String::from("?"), |ns| format!("{ns:.0}"))))
                .collect();
            format!("round {r}: {}", figs.join(", "))
        })
        .collect();
    let mut md = format!(
        "Host core-to-core round trip in ns, probed on the host right after each boot named (`docs/benchmarks.md`, \"The collapsed throughput boots, explained\"): {}.\n",
        per_round.join("; ")
    );
    known.sort_by(f64::total_cmp);
    let median = known[known.len() / 2];
    let off = |ns: f64| ns > median * STATE_CHANGE || ns * STATE_CHANGE < median;
    let odd: Vec<String> = samples
        .iter()
        .filter_map(|s| s.ns.filter(|&ns| off(ns)).map(|ns| format!("round {} {} ({ns:.0} ns)", s.round, s.side)))
        .collect();
    if !odd.is_empty() {
        md.push_str(&format!(
            "\n**Warning: the host changed state during this sitting** (median {median:.0} ns): the cross-CPU \
             rows of {} were measured with cache-line transfers at another speed than the rest and are not \
             comparable with them; run again.\n",
            odd.join(", ")
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(round: usize, side: &str, ns: Option<f64>) -> Sample {
        Sample { round, side: side.to_string(), ns }
    }

    #[test]
    fn steady_host_gives_no_warning() {
        let md = markdown(&[s(1, "linux", Some(55.0)), s(1, "ours", Some(61.0)), s(2, "linux", Some(58.0))]);
        assert!(md.contains("round 1: linux 55, ours 61; round 2: linux 58"), "{md}");
        assert!(!md.contains("Warning"), "{md}");
    }

    #[test]
    fn a_state_change_names_the_boots_out_of_step() {
        let md = markdown(&[
            s(1, "linux", Some(55.0)),
            s(1, "ours", Some(360.0)),
            s(2, "linux", Some(58.0)),
            s(2, "ours", Some(57.0)),
            s(3, "linux", Some(25.0)),
            s(3, "ours", Some(61.0)),
        ]);
        assert!(md.contains("changed state"), "{md}");
        assert!(md.contains("(median 58 ns)"), "{md}");
        assert!(md.contains("rows of round 1 ours (360 ns), round 3 linux (25 ns) were"), "{md}");
    }

    #[test]
    fn unmeasured_probes_are_said_so() {
        assert!(markdown(&[s(1, "linux", None)]).contains("not measured"));
        let md = markdown(&[s(1, "linux", None), s(1, "ours", Some(60.0))]);
        assert!(md.contains("linux ?, ours 60"), "{md}");
    }

    #[test]
    fn the_probe_measures_a_round_trip_on_this_host() {
        if thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            assert_eq!(core_to_core_ns(), None);
            return;
        }
        // Any host moves a line between two CPUs in well under a
        // millisecond and not in under a nanosecond; a probe that timed
        // out on a loaded host says None, which is not a figure.
        if let Some(ns) = core_to_core_ns() {
            assert!(ns > 1.0 && ns < 1_000_000.0, "{ns}");
        }
    }
}
