//! `ktest restart`: the guest's `restart` suite across two boots on the same
//! disk images (orchestrated by [`crate::run::restart`]).
//!
//! The first boot gets `restart=write restart_seed=S`: its case writes a
//! pattern seeded with `S` through the page cache onto `kblk-main`, syncs,
//! and prints a `block-image` line for it. The second boot, on the very same
//! image files, gets `restart=verify restart_seed=S`: its case reads the area
//! back through a cold cache and compares every byte. Each boot passes only
//! if, besides the usual verdict ([`crate::report::judge`]) and image check,
//! the case of its phase reported `ok` (not skipped, not missing) and the
//! image was checked at least once ([`failures`]): a guest that never ran
//! the phase cannot pass by skipping it.

use crate::cli::RESTART_SUITE;
use crate::disks::ImageCheck;
use crate::ktap::{Status, Summary};
use std::fmt;

/// The guest case of the first boot.
pub const WRITE_CASE: &str = "write_phase_writes_the_pattern_and_syncs_it";

/// The guest case of the second boot.
pub const VERIFY_CASE: &str = "verify_phase_reads_the_pattern_back_from_the_disk";

/// One of the two boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The first boot: write and sync.
    Write,
    /// The second boot: read back and compare.
    Verify,
}

impl Phase {
    /// The boots in the order they run.
    pub const ALL: [Phase; 2] = [Phase::Write, Phase::Verify];

    /// The value of `restart=` for this boot.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Write => "write",
            Phase::Verify => "verify",
        }
    }

    /// The guest case that must pass in this boot.
    pub fn case(self) -> &'static str {
        match self {
            Phase::Write => WRITE_CASE,
            Phase::Verify => VERIFY_CASE,
        }
    }

    /// The guest command-line words of this boot with the pattern's seed.
    pub fn guest_words(self, seed: u64) -> [String; 2] {
        [format!("restart={}", self.name()), format!("restart_seed={seed}")]
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "restart={}", self.name())
    }
}

/// What fails a boot of `phase` beyond the usual verdict: its case did not
/// report `ok` (each way named, with the guest's reason), or it passed
/// without a `block-image` line to check.
pub fn failures(phase: Phase, ktap: &Summary, images: &ImageCheck) -> Vec<String> {
    let case = phase.case();
    let result = ktap.leaves().find(|r| r.suite == RESTART_SUITE && r.name == case);
    let reason = |r: &Option<String>| r.as_deref().unwrap_or("no reason given").to_string();
    let why = match result {
        None => format!("reported no result (the boot ended before it, or the guest lacks the {RESTART_SUITE} suite)"),
        Some(r) => match r.status {
            Status::Ok if images.checked == 0 => "passed without a block-image line: the image was not checked".into(),
            Status::Ok => return Vec::new(),
            Status::Skip => format!("was skipped, not run: {}", reason(&r.reason)),
            Status::NotOk => format!("failed: {}", reason(&r.reason)),
            Status::Timeout => format!("timed out: {}", reason(&r.reason)),
        },
    };
    vec![format!("{RESTART_SUITE}::{case} ({phase}) {why}")]
}
