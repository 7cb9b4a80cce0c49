//! End-to-end checks of streaming, parsing, exit handling and reports with a shell
//! script standing in for QEMU.

use ktest_runner::ktap::Status;
use ktest_runner::qemu::{Event, Exit, run_emulator};
use ktest_runner::report::judge;
use ktest_runner::run::{BootOutcome, Console, run_boot};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PASS: &str = r"KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: boot\n    1..2\n    ok 1 a\n    ok 2 b # SKIP not here\nok 1 boot\n";

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

fn boot(script: &str, timeout: Duration, quiet: bool) -> (BootOutcome, String) {
    let mut out = Vec::new();
    let outcome = {
        let mut console = Console::new(&mut out, false, quiet);
        run_boot(sh(script), timeout, None, &mut console, "[1/1]").expect("boot")
    };
    (outcome, String::from_utf8(out).expect("utf8"))
}

#[test]
fn passing_guest() {
    let (b, echoed) = boot(&format!("printf '{PASS}'; exit 33"), Duration::from_secs(30), false);
    assert_eq!(b.exit, Exit::Code(33));
    assert_eq!(b.ktap.counts(), (1, 0, 1));
    assert!(judge(b.exit, &b.ktap, 30).is_empty());
    assert!(echoed.contains("    ok 2 b # SKIP not here\n"), "{echoed}");
    assert!(!echoed.contains('\x1b'), "no escape codes without a terminal");
    assert_eq!(b.raw.lines().count(), 8);
}

#[test]
fn failing_guest_exit_35() {
    let script = r"printf 'KTAP version 1\n1..1\nnot ok 1 a # boom\n'; exit 35";
    let (b, _) = boot(script, Duration::from_secs(30), false);
    assert_eq!(b.exit, Exit::Code(35));
    let f = judge(b.exit, &b.ktap, 30);
    assert_eq!(f, ["1 test(s) failed", "guest reported failure (QEMU exit 35)"]);
}

#[test]
fn triple_fault_and_odd_exits() {
    let (b, _) = boot(&format!("printf '{PASS}'; exit 0"), Duration::from_secs(30), false);
    assert_eq!(judge(b.exit, &b.ktap, 30), ["triple fault or reset (QEMU exit 0)"]);
    let (b, _) = boot(&format!("printf '{PASS}'; exit 7"), Duration::from_secs(30), false);
    assert_eq!(judge(b.exit, &b.ktap, 30), ["unexpected QEMU exit 7"]);
    let (b, _) = boot("kill -9 $$", Duration::from_secs(30), false);
    assert_eq!(b.exit, Exit::Signal(9));
    let f = judge(b.exit, &b.ktap, 30);
    assert!(f.contains(&"QEMU killed by signal 9".to_string()), "{f:?}");
}

#[test]
fn pass_exit_with_missing_results_fails() {
    let script = r"printf 'KTAP version 1\n1..3\nok 1 a\nok 2 b\n'; exit 33";
    let (b, _) = boot(script, Duration::from_secs(30), false);
    let f = judge(b.exit, &b.ktap, 30);
    assert!(f[0].starts_with("guest reported pass"), "{f:?}");
    assert!(f.iter().any(|m| m.contains("planned 3 results, got 2")), "{f:?}");
}

#[test]
fn hung_guest_is_killed_at_the_timeout() {
    let start = Instant::now();
    let script = r"printf 'KTAP version 1\n1..1\n'; exec sleep 60";
    let (b, _) = boot(script, Duration::from_secs(1), false);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert_eq!(b.exit, Exit::TimedOut);
    let f = judge(b.exit, &b.ktap, 1);
    assert_eq!(f[0], "TIMEOUT: whole run exceeded 1 s");
}

#[test]
fn chatty_guest_is_killed_at_the_timeout() {
    let start = Instant::now();
    let (b, _) = boot("while :; do echo '# spam'; done", Duration::from_secs(1), true);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert_eq!(b.exit, Exit::TimedOut);
}

#[test]
fn lines_stream_as_they_arrive() {
    let mut seen = Vec::new();
    let start = Instant::now();
    let run = run_emulator(sh("echo first; sleep 1; printf 'partial'"), Duration::from_secs(30), &mut |ev| {
        if let Event::Line(l) = ev {
            seen.push((l.to_string(), start.elapsed()));
        }
    })
    .expect("run");
    assert_eq!(run.exit, Exit::Code(0));
    let lines: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(lines, ["first", "partial"]);
    assert!(seen[1].1 - seen[0].1 >= Duration::from_millis(500), "{seen:?}");
}

#[test]
fn stderr_is_collected() {
    let run = run_emulator(sh("echo oops >&2; exit 1"), Duration::from_secs(30), &mut |_| {}).expect("run");
    assert_eq!(run.stderr, "oops\n");
    assert_eq!(run.exit, Exit::Code(1));
}

#[test]
fn quiet_echoes_only_failures() {
    let script = r"printf 'KTAP version 1\n1..3\n# noise before a\nok 1 a\n# why b failed\nnot ok 2 b\n# PANIC at x.rs:1:1: boom\n# backtrace:\n#  0: 0xffffffff80000010\nnot ok 3 c\n'; exit 35";
    let (b, echoed) = boot(script, Duration::from_secs(30), true);
    assert_eq!(b.ktap.counts(), (1, 2, 0));
    assert_eq!(
        echoed,
        "# why b failed\nnot ok 2 b\n# PANIC at x.rs:1:1: boom\n# backtrace:\n#  0: 0xffffffff80000010\nnot ok 3 c\n"
    );
}

#[test]
fn missing_emulator_is_an_io_error() {
    let err = run_emulator(Command::new("/nonexistent/qemu"), Duration::from_secs(5), &mut |_| {}).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

// ---- the `ktest` binary with a fake emulator ----

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fake-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A fake `qemu-system-x86_64` script in `dir`; `body` sees QEMU's arguments in "$@".
fn fake_qemu(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-qemu");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'QEMU emulator version 9.8.7 (fake)'; exit 0; fi\n{body}\n"
    );
    std::fs::write(&path, script).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn ktest(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ktest")).args(args).output().expect("run ktest");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn own_exe() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

#[test]
fn binary_runs_the_cross_product_and_writes_reports() {
    let dir = scratch("cross");
    // Prints its own arguments as a diagnostic, fails the smp=2 preempt=none boot.
    let qemu = fake_qemu(
        &dir,
        &format!(
            "printf '# args: %s\\n' \"$*\"\ncase \"$*\" in *preempt=none*'-smp 2'*) printf 'KTAP version 1\\n1..1\\nnot ok 1 x # bad\\n'; exit 35;; esac\nprintf '{PASS}'\nexit 33"
        ),
    );
    let out = dir.join("out");
    let (code, stdout, stderr) = ktest(&[
        "run",
        "--qemu",
        qemu.to_str().unwrap(),
        "--kernel",
        &own_exe(),
        "--out",
        out.to_str().unwrap(),
        "--smp",
        "1,2",
        "--preempt",
        "full,none",
        "--seed",
        "7",
        "--append",
        "timeout=5 tests=boot",
        "--qemu-arg",
        "-foo",
    ]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("seed=7"), "{stdout}");
    assert!(
        stdout.contains("-append tests=boot seed=7 preempt=full bench=skip expect_cpus=1 timeout=5 -display none -serial stdio -no-reboot -m 256M -smp 1 -device isa-debug-exit,iobase=0xf4,iosize=0x04 -accel tcg,thread=multi -foo"),
        "{stdout}"
    );
    for log in ["ktap-smp1-full.txt", "ktap-smp1-none.txt", "ktap-smp2-full.txt", "ktap-smp2-none.txt"] {
        assert!(out.join(log).is_file(), "{log} missing");
    }
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[lines.len() - 2], "3 skipped", "{stdout}");
    // 3 passing boots of (1 ok, 1 skip); the failing one has 1 not ok from its second KTAP.
    assert_eq!(lines[lines.len() - 1], "3 passed, 1 failed", "{stdout}");
    assert!(stdout.contains("smp=2 preempt=none: FAIL (exit 35"), "{stdout}");

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["seed"], 7);
    assert_eq!(results["qemu_version"], "9.8.7");
    let configs = results["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 4);
    assert_eq!(configs[0]["smp"], 1);
    assert_eq!(configs[0]["preempt"], "full");
    assert_eq!(configs[0]["passed"], true);
    assert_eq!(configs[0]["tests"][1]["status"], "skip");
    assert_eq!(configs[0]["tests"][1]["suite"], "boot");
    assert_eq!(configs[0]["tests"][1]["reason"], "not here");
    assert_eq!(configs[3]["passed"], false);
}

#[test]
fn binary_symbolizes_backtraces_and_rip() {
    let dir = scratch("symbols");
    let exe = own_exe();
    let bytes = std::fs::read(&exe).unwrap();
    let sym = ktest_runner::symbolize::Symbolizer::from_bytes(&bytes).unwrap();
    // Any sized function of this binary will do as the "kernel" function that faulted.
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let f = elf.syms.iter().find(|s| s.st_type() == goblin::elf::sym::STT_FUNC && s.st_size > 16).expect("a function");
    let addr = f.st_value + 5;
    let expected = sym.describe(addr).unwrap();
    assert!(expected.ends_with("+0x5"), "{expected}");
    let qemu = fake_qemu(
        &dir,
        &format!(
            "printf 'KTAP version 1\\n1..1\\n# EXCEPTION: page fault (vector 14) on cpu 0, error code 0x2\\n# rip=0x{addr:016x} rsp=0x1\\n# backtrace:\\n#  0: 0x{addr:016x}\\n'; exit 35"
        ),
    );
    let (code, stdout, _) = ktest(&[
        "run",
        "--quiet",
        "--qemu",
        qemu.to_str().unwrap(),
        "--kernel",
        &exe,
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(&format!("#  0: 0x{addr:016x} {expected}\n")), "{stdout}");
    assert!(stdout.contains(&format!("(rip: {expected})")), "{stdout}");
    assert!(stdout.contains("FAIL: EXCEPTION: page fault"), "{stdout}");
    // A rip= on the EXCEPTION line itself is symbolized too.
    let line = format!("# EXCEPTION: #GP rip=0x{addr:x}");
    let kind = ktest_runner::ktap::Parser::new().feed(&line);
    assert_eq!(ktest_runner::run::annotate(&line, &kind, Some(&sym)), format!("{line} (rip: {expected})"));
    assert!(stdout.ends_with("\n0 passed, 1 failed\n"), "{stdout}");
}

#[test]
fn binary_times_out_a_silent_guest() {
    let dir = scratch("timeout");
    let qemu = fake_qemu(&dir, "exec sleep 60");
    let start = Instant::now();
    let (code, stdout, _) = ktest(&[
        "run",
        "--qemu",
        qemu.to_str().unwrap(),
        "--kernel",
        &own_exe(),
        "--out",
        dir.join("out").to_str().unwrap(),
        "--timeout",
        "1",
    ]);
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(code, 1);
    assert!(stdout.contains("TIMEOUT: whole run exceeded 1 s"), "{stdout}");
    assert!(stdout.ends_with("\n0 passed, 1 failed\n"), "{stdout}");
}

#[test]
fn binary_bench_writes_bench_json() {
    let dir = scratch("bench");
    let qemu = fake_qemu(
        &dir,
        r"case $* in *bench=only*'-m 512M -smp 2'*) ;; *) exit 99;; esac
printf 'KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: bench\n    1..2\n    # bench: wq_flush_idle median_ns=410 p99_ns=590 n=10000\n    ok 1 bench_wq_flush_idle\n    # bench: wq_throughput_bound items_per_s=967000 n=100000\n    ok 2 bench_wq_throughput\nok 1 bench\n'
exit 33",
    );
    let out = dir.join("out");
    let (code, stdout, stderr) =
        ktest(&["bench", "--qemu", qemu.to_str().unwrap(), "--kernel", &own_exe(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("\n    bench wq_flush_idle median_ns=410 p99_ns=590 n=10000\n"), "{stdout}");
    let bench: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    assert_eq!(
        bench,
        serde_json::json!([
            {"name": "wq_flush_idle", "median_ns": 410, "p99_ns": 590, "n": 10000,
             "smp": 2, "preempt": "full", "accel": "tcg", "qemu_version": "9.8.7"},
            {"name": "wq_throughput_bound", "items_per_s": 967000, "n": 100000,
             "smp": 2, "preempt": "full", "accel": "tcg", "qemu_version": "9.8.7"},
        ])
    );
}

#[test]
fn binary_reports_missing_qemu() {
    let out = Command::new(env!("CARGO_BIN_EXE_ktest"))
        .args(["run", "--kernel", &own_exe()])
        .env("PATH", "/nonexistent")
        .output()
        .expect("run ktest");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "qemu-system-x86_64 not found: install it with 'apt-get install qemu-system-x86' (Debian/Ubuntu)\n"
    );
}

#[test]
fn binary_usage_errors() {
    let (code, _, stderr) = ktest(&["run", "--smp", "0"]);
    assert_eq!(code, 2);
    assert!(stderr.starts_with("ktest: invalid --smp value '0'"), "{stderr}");
    let (code, _, stderr) = ktest(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown command 'frobnicate'"), "{stderr}");
    let (code, stdout, _) = ktest(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("ktest run [options]"));
}

#[test]
fn skip_status_serializes_like_ktap() {
    assert_eq!(serde_json::to_string(&Status::NotOk).unwrap(), "\"not ok\"");
    assert_eq!(serde_json::to_string(&Status::Timeout).unwrap(), "\"timeout\"");
}
