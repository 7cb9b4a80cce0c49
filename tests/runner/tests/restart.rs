//! `ktest restart`: the verdict on each of its boots, and the `ktest` binary
//! making both boots on the same images, with a shell script standing in for
//! QEMU and the guest.

use ktest_runner::disks::{FNV_OFFSET_BASIS, ImageCheck, fnv1a64};
use ktest_runner::ktap::{Parser, Summary};
use ktest_runner::restart::{Phase, VERIFY_CASE, WRITE_CASE, failures};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod common;

fn parse(lines: &[&str]) -> Summary {
    let mut p = Parser::new();
    for l in lines {
        p.feed(l);
    }
    p.finish()
}

/// The guest's KTAP for the restart suite with these two result lines.
fn suite(first: &str, second: &str) -> Summary {
    parse(&[
        "KTAP version 1",
        "1..1",
        "    KTAP version 1",
        "    # Subtest: restart",
        "    1..2",
        first,
        second,
        "ok 1 restart",
    ])
}

fn checked(n: usize) -> ImageCheck {
    ImageCheck { checked: n, failures: Vec::new() }
}

#[test]
fn phases_and_their_words() {
    assert_eq!(Phase::ALL, [Phase::Write, Phase::Verify]);
    assert_eq!(Phase::Write.guest_words(42), ["restart=write".to_string(), "restart_seed=42".to_string()]);
    assert_eq!(Phase::Verify.guest_words(7), ["restart=verify".to_string(), "restart_seed=7".to_string()]);
    assert_eq!(Phase::Verify.to_string(), "restart=verify");
    assert_eq!((Phase::Write.case(), Phase::Verify.case()), (WRITE_CASE, VERIFY_CASE));
}

#[test]
fn a_boot_passes_only_when_its_case_passed_and_the_image_was_checked() {
    let write_ok = suite(&format!("    ok 1 {VERIFY_CASE} # SKIP not this boot"), &format!("    ok 2 {WRITE_CASE}"));
    assert_eq!(failures(Phase::Write, &write_ok, &checked(1)), Vec::<String>::new());
    // The other phase's case skipped: that boot is not the verify boot.
    let f = failures(Phase::Verify, &write_ok, &checked(1));
    assert_eq!(f, [format!("restart::{VERIFY_CASE} (restart=verify) was skipped, not run: not this boot")]);
    // Passing without a block-image line leaves the image unchecked.
    let f = failures(Phase::Write, &write_ok, &checked(0));
    assert_eq!(
        f,
        [format!("restart::{WRITE_CASE} (restart=write) passed without a block-image line: the image was not checked")]
    );
    let lost = suite(
        &format!("    not ok 1 {VERIFY_CASE} # first mismatch at disk offset 13697024"),
        &format!("    ok 2 {WRITE_CASE} # SKIP not this boot"),
    );
    let f = failures(Phase::Verify, &lost, &checked(0));
    assert_eq!(f, [format!("restart::{VERIFY_CASE} (restart=verify) failed: first mismatch at disk offset 13697024")]);
    let hung = suite(&format!("    not ok 1 {VERIFY_CASE} # TIMEOUT after 120 s"), &format!("    ok 2 {WRITE_CASE}"));
    let f = failures(Phase::Verify, &hung, &checked(1));
    assert_eq!(f, [format!("restart::{VERIFY_CASE} (restart=verify) timed out: TIMEOUT after 120 s")]);
}

#[test]
fn a_case_without_a_result_fails_its_boot() {
    // The boot ended before the case (a panic, a time-out).
    let cut = parse(&["KTAP version 1", "1..1", "    KTAP version 1", "    # Subtest: restart", "    1..2"]);
    let f = failures(Phase::Write, &cut, &checked(0));
    assert_eq!(f.len(), 1);
    assert!(f[0].starts_with(&format!("restart::{WRITE_CASE} (restart=write) reported no result")), "{f:?}");
    // A case of that name in another suite is not the restart suite's.
    let elsewhere = parse(&[
        "KTAP version 1",
        "1..1",
        "    KTAP version 1",
        "    # Subtest: block",
        "    1..1",
        &format!("    ok 1 {WRITE_CASE}"),
        "ok 1 block",
    ]);
    assert_eq!(failures(Phase::Write, &elsewhere, &checked(1)).len(), 1);
}

// ---- the `ktest` binary, with a script standing in for QEMU ----

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("restart-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The sector the stand-in guest writes, where the real one starts (13 MiB + 64 KiB).
const SECTOR: u64 = 26752;

/// A fake QEMU in `dir` that counts its boots in `dir/boots`, echoes its
/// arguments as a diagnostic and runs `write` or `verify` by the
/// `restart=` word of its command line (any other boot exits 99).
fn fake_qemu(dir: &Path, write: &str, verify: &str) -> PathBuf {
    let path = dir.join("fake-qemu");
    let boots = dir.join("boots");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'QEMU emulator version 7.2.0 (fake)'; exit 0; fi\n\
         echo boot >> '{}'\nprintf '# args: %s\\n' \"$*\"\n\
         case \"$*\" in\n*restart=write*) {write} ;;\n*restart=verify*) {verify} ;;\n*) exit 99 ;;\nesac\n",
        boots.display()
    );
    common::write_executable(&path, &script);
    path
}

/// `ktest restart` with the fake QEMU, output in `dir/out`.
fn ktest(dir: &Path, qemu: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["--smp", "1"];
    all.extend_from_slice(args);
    common::ktest_with_fake_qemu("restart", dir, qemu, &all)
}

fn image(dir: &Path) -> PathBuf {
    dir.join("out/disk-kblk-main-smp1-full.img")
}

fn hash(bytes: &[u8]) -> u64 {
    fnv1a64(FNV_OFFSET_BASIS, bytes)
}

/// KTAP of a boot whose `ran` case passed (printing `diag` before its
/// result) and whose other case skipped; then the pass exit.
fn passing_boot(phase: Phase, diag: &str) -> String {
    let skipped = if phase == Phase::Write { VERIFY_CASE } else { WRITE_CASE };
    format!(
        "printf 'KTAP version 1\\n1..1\\n    KTAP version 1\\n    # Subtest: restart\\n    1..2\\n    ok 1 {skipped} # SKIP not this boot\\n{diag}    ok 2 {}\\nok 1 restart\\n'; exit 33",
        phase.case()
    )
}

/// The stand-in guest's write: sector [`SECTOR`] of kblk-main becomes 0xab bytes.
fn write_sector(dir: &Path) -> String {
    format!(
        "head -c 512 /dev/zero | tr '\\000' '\\253' | dd of='{}' bs=512 seek={SECTOR} conv=notrunc 2>/dev/null || exit 98; ",
        image(dir).display()
    )
}

/// The stand-in guest's verify: fail unless the sector holds what the write boot wrote.
fn verify_sector(dir: &Path) -> String {
    let want = dir.join("want.bin");
    std::fs::write(&want, [0xab; 512]).unwrap();
    let lost = format!(
        "printf 'KTAP version 1\\n1..1\\n    KTAP version 1\\n    # Subtest: restart\\n    1..2\\n    not ok 1 {VERIFY_CASE} # sector {SECTOR} lost\\n    ok 2 {WRITE_CASE} # SKIP not this boot\\nnot ok 1 restart\\n'; exit 35"
    );
    format!(
        "if ! dd if='{}' bs=512 skip={SECTOR} count=1 2>/dev/null | cmp -s - '{}'; then {lost}; fi; ",
        image(dir).display(),
        want.display()
    )
}

fn image_line(bytes: &[u8]) -> String {
    format!("    # block-image: serial=kblk-main sector={SECTOR} count=1 fnv1a64={:016x}\\n", hash(bytes))
}

fn boots(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("boots")).map(|s| s.lines().count()).unwrap_or(0)
}

#[test]
fn binary_boots_twice_on_the_same_images() {
    let dir = scratch("pass");
    let line = image_line(&[0xab; 512]);
    let write = write_sector(&dir) + &passing_boot(Phase::Write, &line);
    let verify = verify_sector(&dir) + &passing_boot(Phase::Verify, &line);
    let qemu = fake_qemu(&dir, &write, &verify);
    let (code, stdout) = ktest(&dir, &qemu, &["--seed", "3", "--append", "expect_pci=ports"]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(boots(&dir), 2);
    assert!(stdout.contains("\nsmp=1 preempt=full restart=write: PASS (exit 33"), "{stdout}");
    assert!(stdout.contains("\nsmp=1 preempt=full restart=verify: PASS (exit 33"), "{stdout}");
    assert_eq!(stdout.matches("ktest: block-image: 1 ranges checked\n").count(), 2, "{stdout}");
    assert!(stdout.ends_with("\n2 skipped\n2 passed, 0 failed\n"), "{stdout}");
    // Each boot its own log, its phase and the run's seed on its command line,
    // the same image file behind kblk-main.
    let img = format!("\"filename\":\"{}\"", image(&dir).display());
    for (phase, log) in [("write", "ktap-smp1-full-write.txt"), ("verify", "ktap-smp1-full-verify.txt")] {
        let log = std::fs::read_to_string(dir.join("out").join(log)).unwrap();
        let words = format!(
            "tests=restart seed=3 preempt=full bench=skip expect_cpus=1 expect_pci=ports restart={phase} restart_seed=3 expect_disks=1"
        );
        assert!(log.contains(&words), "{log}");
        assert!(log.contains(&img), "{log}");
    }
    assert!(!image(&dir).exists(), "a passing run leaves no images");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/results.json")).unwrap()).unwrap();
    assert_eq!((results["passed"].as_u64(), results["failed"].as_u64()), (Some(2), Some(0)));
    assert_eq!(results["configs"][0]["phase"], "write");
    assert_eq!(results["configs"][1]["phase"], "verify");
    assert_eq!(results["seed"], 3);
}

#[test]
fn binary_fails_a_verify_boot_that_finds_the_write_lost() {
    let dir = scratch("lost");
    // The write boot claims a sector it did not touch (so its own check passes).
    let fresh: Vec<u8> = (0..512).map(|i| ktest_runner::disks::pattern_byte(SECTOR, i)).collect();
    let write = passing_boot(Phase::Write, &image_line(&fresh));
    let verify = verify_sector(&dir) + &passing_boot(Phase::Verify, &image_line(&[0xab; 512]));
    let qemu = fake_qemu(&dir, &write, &verify);
    let (code, stdout) = ktest(&dir, &qemu, &["--seed", "4", "--quiet"]);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(boots(&dir), 2);
    let reason = format!("restart::{VERIFY_CASE} (restart=verify) failed: sector {SECTOR} lost");
    assert!(
        stdout.contains(&format!("ktest: [1/1] smp=1 preempt=full boot 2/2 (restart=verify): {reason}\n")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("    FAIL: {reason}\n")), "{stdout}");
    assert!(stdout.contains("\nsmp=1 preempt=full restart=write: PASS"), "{stdout}");
    assert!(stdout.ends_with("\n1 passed, 1 failed\n"), "{stdout}");
    assert!(image(&dir).is_file(), "the images stay after a failure");
}

#[test]
fn binary_does_not_verify_after_a_write_boot_that_skipped_its_case() {
    let dir = scratch("skipped");
    let skipped = format!(
        "printf 'KTAP version 1\\n1..1\\n    KTAP version 1\\n    # Subtest: restart\\n    1..2\\n    ok 1 {VERIFY_CASE} # SKIP no restart= on the command line\\n    ok 2 {WRITE_CASE} # SKIP no restart= on the command line\\nok 1 restart\\n'; exit 33"
    );
    let qemu = fake_qemu(&dir, &skipped, &skipped);
    let (code, stdout) = ktest(&dir, &qemu, &["--quiet"]);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(boots(&dir), 1, "the verify boot was made");
    let reason = format!("restart::{WRITE_CASE} (restart=write) was skipped, not run: no restart= on the command line");
    assert!(
        stdout.contains(&format!("ktest: [1/1] smp=1 preempt=full boot 1/2 (restart=write): {reason}\n")),
        "{stdout}"
    );
    assert!(stdout.contains("ktest: [1/1] smp=1 preempt=full boot 2/2 (restart=verify): not booted"), "{stdout}");
    assert!(stdout.ends_with("\n0 passed, 1 failed\n"), "{stdout}");
}

#[test]
fn binary_stops_a_hung_boot_at_the_time_out_and_varies_the_seed() {
    let dir = scratch("hung");
    let qemu = fake_qemu(&dir, "printf 'KTAP version 1\\n1..1\\n'; exec sleep 60", "exit 99");
    let mut seeds = Vec::new();
    for _ in 0..2 {
        let start = Instant::now();
        let (code, stdout) = ktest(&dir, &qemu, &["--timeout", "1", "--quiet"]);
        assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
        assert_eq!(code, 1, "{stdout}");
        assert!(stdout.contains("boot 1/2 (restart=write): TIMEOUT: whole run exceeded 1 s\n"), "{stdout}");
        assert!(stdout.contains(&format!("restart::{WRITE_CASE} (restart=write) reported no result")), "{stdout}");
        // The seed is printed, and is the one the guest got.
        let seed = stdout.split("==== ktest summary (seed ").nth(1).and_then(|s| s.split(')').next()).unwrap();
        let log = std::fs::read_to_string(dir.join("out/ktap-smp1-full-write.txt")).unwrap();
        assert!(log.contains(&format!(" restart_seed={seed} ")), "{log}");
        seeds.push(seed.to_string());
    }
    assert_eq!(boots(&dir), 2, "one boot a run: no verify boot after the hung one");
    assert_ne!(seeds[0], seeds[1], "two runs without --seed got the same seed");
}
