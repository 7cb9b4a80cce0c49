//! The host-checkable parts of suite `restart`: its command-line words
//! (`restart=`, `restart_seed=`), parsed as the guest parses them, and its
//! pattern.

use ktests::Args;
use ktests::args::RestartPhase;
use ktests::block::pattern_byte as fresh_byte;
use ktests::restart::{AREA, AREA_LEN, DEFAULT_SEED, pattern_byte};

#[test]
fn restart_phase_and_seed() {
    let a = Args::parse("tests=restart restart=write restart_seed=18446744073709551615", &[]).unwrap();
    assert_eq!((a.restart, a.restart_seed), (Some(RestartPhase::Write), Some(u64::MAX)));
    assert_eq!(a.tests, ["restart"]);
    let a = Args::parse("restart=verify", &[]).unwrap();
    assert_eq!((a.restart, a.restart_seed), (Some(RestartPhase::Verify), None));
    assert_eq!(RestartPhase::Verify.name(), "verify");
    assert_eq!(RestartPhase::Write.name(), "write");
    // Absent, both cases skip.
    let a = Args::parse("tests=restart seed=4", &[]).unwrap();
    assert_eq!((a.restart, a.restart_seed), (None, None));
    // The last word counts, as for every key.
    assert_eq!(Args::parse("restart=write restart=verify", &[]).unwrap().restart, Some(RestartPhase::Verify));
}

#[test]
fn bad_restart_words_are_errors() {
    assert_eq!(Args::parse("restart=read", &[]).unwrap_err(), "bad value for restart: 'read' (write or verify)");
    assert_eq!(Args::parse("restart=", &[]).unwrap_err(), "bad value for restart: '' (write or verify)");
    assert_eq!(Args::parse("restart_seed=-1", &[]).unwrap_err(), "bad number for restart_seed: '-1'");
    assert_eq!(Args::parse("restart_seed=0x10", &[]).unwrap_err(), "bad number for restart_seed: '0x10'");
}

#[test]
fn the_pattern_is_not_the_fresh_images_and_follows_its_seed() {
    let sectors = AREA / 512..(AREA + AREA_LEN as u64) / 512;
    for seed in [DEFAULT_SEED, 0, 1, u64::MAX] {
        // Every sector of the area differs from the fresh image in most of
        // its bytes, so a write that never reached the disk cannot pass.
        for s in sectors.clone() {
            let same = (0..512).filter(|&i| pattern_byte(seed, s * 512 + i as u64) == fresh_byte(s, i)).count();
            assert!(same < 32, "seed {seed}: sector {s} matches the fresh image in {same} bytes");
        }
    }
    let bytes = |seed: u64| (AREA..AREA + 4096).map(|p| pattern_byte(seed, p)).collect::<Vec<u8>>();
    assert_eq!(bytes(7), bytes(7));
    assert_ne!(bytes(7), bytes(8), "the seed does not change the pattern");
    // Neighbouring 8-byte words differ (not one word repeated).
    assert_ne!(bytes(7)[..8], bytes(7)[8..16]);
}
