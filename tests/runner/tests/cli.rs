//! Command-line parsing and guest command-line construction.

use ktest_runner::cli::{Cli, Mode, Options, parse};
use ktest_runner::qemu::Accel;
use ktest_runner::run::build_cmdline;
use std::path::PathBuf;

fn opts(args: &[&str]) -> Result<Options, String> {
    match parse(args.iter().map(|s| s.to_string()))? {
        Cli::Run(o) => Ok(*o),
        Cli::Help => Err("help".into()),
    }
}

#[test]
fn run_defaults() {
    let o = opts(&["run"]).unwrap();
    assert_eq!(o, Options::new(Mode::Run));
    assert_eq!(o.smp, [4]);
    assert_eq!(o.preempt, ["full"]);
    assert_eq!(o.tests, "all");
    assert_eq!(o.timeout_secs, 900);
    assert_eq!(o.mem_mib, 256);
    assert_eq!(o.accel, Accel::Tcg);
    assert_eq!(o.bench_mode(), "skip");
}

#[test]
fn bench_defaults() {
    let o = opts(&["bench"]).unwrap();
    assert_eq!((o.smp.as_slice(), o.mem_mib, o.bench_mode()), (&[2][..], 512, "only"));
}

#[test]
fn all_options() {
    let o = opts(&[
        "run",
        "--smp",
        "1,2,4",
        "--preempt=full,none",
        "--tests",
        "boot,sched",
        "--seed",
        "42",
        "--timeout",
        "20",
        "--mem",
        "128",
        "--kernel",
        "/k",
        "--no-build",
        "--append",
        "fault=page timeout=5",
        "--append",
        "x=y",
        "--kvm",
        "--initrd",
        "/i",
        "--qemu-arg",
        "-s",
        "--qemu-arg=-S",
        "--out",
        "/o",
        "--quiet",
    ])
    .unwrap();
    assert_eq!(o.smp, [1, 2, 4]);
    assert_eq!(o.preempt, ["full", "none"]);
    assert_eq!(o.tests, "boot,sched");
    assert_eq!(o.seed, Some(42));
    assert_eq!(o.timeout_secs, 20);
    assert_eq!(o.mem_mib, 128);
    assert_eq!(o.kernel, Some(PathBuf::from("/k")));
    assert!(o.no_build && o.quiet);
    assert_eq!(o.append, ["fault=page", "timeout=5", "x=y"]);
    assert_eq!(o.accel, Accel::Kvm);
    assert_eq!(o.initrd, Some(PathBuf::from("/i")));
    assert_eq!(o.qemu_args, ["-s", "-S"]);
    assert_eq!(o.out, Some(PathBuf::from("/o")));
}

#[test]
fn bad_values() {
    for (args, msg) in [
        (&["run", "--smp", "1,x"][..], "invalid --smp value '1,x'"),
        (&["run", "--smp", ""][..], "invalid --smp value ''"),
        (&["run", "--preempt", "voluntary"][..], "invalid --preempt value 'voluntary'"),
        (&["run", "--seed", "-1"][..], "invalid --seed value '-1'"),
        (&["run", "--timeout", "0"][..], "--timeout must be at least 1 second"),
        (&["run", "--mem"][..], "--mem needs a value"),
        (&["run", "--kvm=yes"][..], "--kvm takes no value"),
        (&["run", "--bogus"][..], "unknown option '--bogus'"),
        (&[][..], "missing command"),
    ] {
        let err = opts(args).unwrap_err();
        assert!(err.starts_with(msg), "{args:?}: {err}");
    }
}

#[test]
fn help() {
    assert_eq!(parse(["--help".to_string()]), Ok(Cli::Help));
    assert_eq!(parse(["run".to_string(), "-h".to_string()]), Ok(Cli::Help));
}

#[test]
fn guest_command_line() {
    assert_eq!(build_cmdline("all", 9, "none", "skip", &[]), "tests=all seed=9 preempt=none bench=skip");
    let extra = ["fault=hang".to_string(), "seed=3".to_string(), "timeout=5".to_string()];
    assert_eq!(
        build_cmdline("boot", 9, "full", "only", &extra),
        "tests=boot seed=3 preempt=full bench=only fault=hang timeout=5"
    );
}
