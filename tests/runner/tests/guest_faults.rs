//! Boots the real testkernel in QEMU through the `ktest` binary: a passing boot,
//! faults on purpose (`fault=` on the guest command line, see
//! docs/guest-protocol.md) and a guest that never exits.
//!
//! Faults are injected by the kernel's explicit `fault` suite, so those boots pass
//! `tests=fault`.
//!
//! The kernel is built once (`cargo build --release` in testkernel/) and the boots
//! run one at a time: TCG on two host cores is slow enough without competition.

use ktest_runner::run::{build_kernel, default_kernel_path, repo_root};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[allow(dead_code)]
mod common;
use common::Run;

fn kernel() -> &'static Path {
    static KERNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = KERNEL.get_or_init(|| {
        let repo = repo_root().map_err(|e| e.message)?;
        build_kernel(&repo).map_err(|e| e.message)?;
        Ok(default_kernel_path(&repo))
    });
    match built {
        Ok(path) => path,
        Err(e) => panic!("cannot build the testkernel: {e}"),
    }
}

/// Boot with `ktest run` and the given extra arguments, one boot at a time.
fn ktest(name: &str, args: &[&str]) -> Run {
    common::ktest(&format!("guest-{name}"), kernel(), None, args)
}

/// A backtrace frame line `#  N: 0x<hex> function+0xoff`.
fn has_symbolized_frame(stdout: &str) -> bool {
    stdout.lines().any(|l| {
        let Some(rest) = l.trim_start().strip_prefix('#') else {
            return false;
        };
        let Some((index, after)) = rest.trim_start().split_once(": 0x") else {
            return false;
        };
        let mut words = after.split_whitespace();
        let addr_ok = words.next().is_some_and(|a| u64::from_str_radix(a, 16).is_ok());
        index.bytes().all(|b| b.is_ascii_digit()) && addr_ok && words.next().is_some_and(|s| s.contains("+0x"))
    })
}

fn final_counts(stdout: &str) -> (usize, usize) {
    let last = stdout.lines().last().expect("output");
    let (p, f) = last.split_once(" passed, ").unwrap_or_else(|| panic!("bad final line {last:?}"));
    let f = f.strip_suffix(" failed").unwrap_or_else(|| panic!("bad final line {last:?}"));
    (p.parse().unwrap(), f.parse().unwrap())
}

fn assert_fault_reported(name: &str, fault: &str) -> Run {
    let run = ktest(name, &["--smp", "2", "--tests", "fault", "--timeout", "300", "--append", fault]);
    assert_eq!(run.code, 1, "{fault}: the run must fail");
    assert!(has_symbolized_frame(&run.stdout), "{fault}: no symbolized backtrace frame");
    assert!(final_counts(&run.stdout).1 > 0, "{fault}: no failure counted");
    run
}

#[test]
fn boot_suite_passes_on_two_cpus() {
    let run = ktest("boot", &["--smp", "2", "--tests", "boot", "--timeout", "300"]);
    assert_eq!(run.code, 0, "tests=boot must pass");
    let (passed, failed) = final_counts(&run.stdout);
    assert!(passed > 0 && failed == 0, "{passed} passed, {failed} failed");
    assert!(run.stdout.contains("smp=2 preempt=full: PASS (exit 33"));
    assert!(run.out_dir.join("ktap-smp2-full.txt").is_file());
    assert!(run.out_dir.join("results.json").is_file());
}

#[test]
fn page_fault_is_reported_with_backtrace() {
    let run = assert_fault_reported("page", "fault=page");
    assert!(run.stdout.contains("# EXCEPTION"), "no EXCEPTION line");
}

#[test]
fn stack_overflow_is_reported_with_backtrace() {
    let run = assert_fault_reported("stack", "fault=stack");
    assert!(run.stdout.contains("# EXCEPTION"), "no EXCEPTION line");
}

#[test]
fn panic_is_reported_with_backtrace() {
    let run = assert_fault_reported("panic", "fault=panic");
    assert!(run.stdout.contains("# PANIC"), "no PANIC line");
}

#[test]
fn hanging_test_is_reported_by_the_guest_watchdog() {
    let run =
        ktest("hang", &["--smp", "2", "--tests", "fault", "--timeout", "300", "--append", "fault=hang timeout=5"]);
    assert_eq!(run.code, 1, "the run must fail");
    let timeout_line = run.stdout.lines().any(|l| l.trim_start().starts_with("not ok ") && l.contains("# TIMEOUT"));
    assert!(timeout_line, "no 'not ok ... # TIMEOUT' result");
    assert!(!run.stdout.contains("TIMEOUT: whole run exceeded"), "the guest's watchdog should have fired first");
    let results = std::fs::read_to_string(run.out_dir.join("results.json")).expect("results.json");
    assert!(results.contains("\"status\": \"timeout\""), "{results}");
}

#[test]
fn locked_up_guest_is_killed_by_the_runner() {
    let start = std::time::Instant::now();
    let run = ktest("lockup", &["--smp", "2", "--tests", "fault", "--timeout", "20", "--append", "fault=lockup"]);
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
    assert_eq!(run.code, 1, "the run must fail");
    assert!(run.stdout.contains("TIMEOUT: whole run exceeded 20 s"), "no runner time-out reported");
    assert!(run.stdout.contains("(timed out,"), "exit not reported as a time-out");
}

#[test]
fn sysrq_key_typed_on_the_serial_console_reaches_the_guest() {
    // A BREAK (QEMU's monitor escape Ctrl-A b) and then `w`, a second after the harness starts;
    // the explicit case waits for the key and checks it.
    let run = ktest("sysrq", &["--smp", "2", "--tests", "sysrq_console", "--timeout", "300", "--sysrq", "w@1"]);
    assert_eq!(run.code, 0, "the run must pass:\n{}", run.stdout);
    assert!(run.stdout.contains("sysrq: key 'w' from the console"), "{}", run.stdout);
    assert!(run.stdout.contains("sysrq: Show Blocked State"), "{}", run.stdout);
}
