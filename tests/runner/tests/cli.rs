//! Command-line parsing and guest command-line construction.

use ktest_runner::cli::{Cli, Mode, Options, parse};
use ktest_runner::qemu::{Accel, QemuConfig, Topology, numa_args, qemu_command};
use ktest_runner::run::build_cmdline;
use std::path::{Path, PathBuf};

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

#[test]
fn topology_and_numa_options() {
    let o = opts(&["run", "--smp", "2,4", "--topology", "sockets=1,cores=2,threads=2", "--numa", "2"]).unwrap();
    let t = o.topology.unwrap();
    assert_eq!(t, Topology { sockets: 1, dies: 1, cores: 2, threads: 2 });
    assert_eq!(t.max_cpus(), 4);
    assert_eq!(t.smp_arg(2), "2,sockets=1,cores=2,threads=2");
    assert_eq!(t.guest_word(), "expect_topology=sockets=1,dies=1,cores=2,threads=2");
    assert_eq!(o.numa_nodes, Some(2));
    let t = opts(&["run", "--topology=threads=2,dies=2,cores=1,sockets=2", "--smp", "8"]).unwrap().topology.unwrap();
    assert_eq!((t.sockets, t.dies, t.cores, t.threads), (2, 2, 1, 2));
    assert_eq!(t.smp_arg(8), "8,sockets=2,dies=2,cores=1,threads=2");
    assert_eq!(opts(&["run"]).unwrap().topology, None);
    for (args, msg) in [
        (
            &["run", "--topology", "sockets=1,cores=2"][..],
            "invalid --topology value 'sockets=1,cores=2': sockets, cores",
        ),
        (&["run", "--topology", "sockets=1,cores=2,threads=0"][..], "invalid --topology value"),
        (&["run", "--topology", "sockets=1,cores=2,threads=2,sockets=2"][..], "invalid --topology value"),
        (&["run", "--topology", "sockets=1,cores=2,threads=2,books=2"][..], "invalid --topology value"),
        (&["run", "--topology", "sockets=16,cores=16,threads=2"][..], "invalid --topology value"),
        (&["run", "--smp", "1,8", "--topology", "sockets=1,cores=2,threads=2"][..], "--topology sockets=1,dies=1"),
        (&["run", "--numa", "0"][..], "invalid --numa value '0'"),
        (&["run", "--numa", "9"][..], "invalid --numa value '9'"),
        (&["run", "--numa", "4", "--mem", "64"][..], "--numa 4 needs --mem of at least 128 MiB"),
    ] {
        let err = opts(args).unwrap_err();
        assert!(err.starts_with(msg), "{args:?}: {err}");
    }
}

#[test]
fn qemu_command_with_topology_and_numa() {
    let args = |topology, numa_nodes, smp| -> Vec<String> {
        let cmd = qemu_command(&QemuConfig {
            qemu: Path::new("qemu"),
            kernel: Path::new("k"),
            cmdline: "tests=port",
            smp,
            topology,
            numa_nodes,
            mem_mib: 256,
            accel: Accel::Tcg,
            initrd: None,
            extra: &[],
            serial_monitor: false,
        });
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    };
    let plain = args(None, None, 4);
    let at = plain.iter().position(|a| a == "-smp").unwrap();
    assert_eq!(plain[at + 1], "4");
    assert!(!plain.iter().any(|a| a == "-numa"));
    let smt = Topology { sockets: 1, dies: 1, cores: 2, threads: 2 };
    let with = args(Some(smt), Some(2), 2);
    let at = with.iter().position(|a| a == "-smp").unwrap();
    assert_eq!(with[at + 1], "2,sockets=1,cores=2,threads=2");
    // The nodes split the topology's 4 CPUs, not the 2 started.
    let numa: Vec<&str> = with.iter().skip_while(|a| *a != "-object").take(8).map(String::as_str).collect();
    assert_eq!(
        numa,
        [
            "-object",
            "memory-backend-ram,id=ktest-node0,size=128M",
            "-numa",
            "node,nodeid=0,cpus=0-1,memdev=ktest-node0",
            "-object",
            "memory-backend-ram,id=ktest-node1,size=128M",
            "-numa",
            "node,nodeid=1,cpus=2-3,memdev=ktest-node1",
        ]
    );
    // Uneven splits: the memory adds up, a node may have no CPU.
    assert_eq!(
        numa_args(3, 2, 100),
        [
            "-object",
            "memory-backend-ram,id=ktest-node0,size=34M",
            "-numa",
            "node,nodeid=0,memdev=ktest-node0",
            "-object",
            "memory-backend-ram,id=ktest-node1,size=33M",
            "-numa",
            "node,nodeid=1,cpus=0-0,memdev=ktest-node1",
            "-object",
            "memory-backend-ram,id=ktest-node2,size=33M",
            "-numa",
            "node,nodeid=2,cpus=1-1,memdev=ktest-node2",
        ]
    );
}

#[test]
fn restart_defaults_and_options() {
    let o = opts(&["restart"]).unwrap();
    assert_eq!(o.mode, Mode::Restart);
    assert_eq!((o.tests.as_str(), o.bench_mode(), o.mem_mib, o.seed), ("restart", "skip", 256, None));
    assert_eq!(o.smp, [4]);
    let o = opts(&[
        "restart",
        "--smp",
        "2",
        "--preempt",
        "full,none",
        "--seed=77",
        "--quiet",
        "--no-build",
        "--out",
        "/o/restart",
        "--kvm",
        "--timeout",
        "60",
        "--append",
        "expect_pci=ports",
    ])
    .unwrap();
    assert_eq!((o.smp.as_slice(), o.preempt.as_slice()), (&[2][..], &["full".to_string(), "none".to_string()][..]));
    assert_eq!(o.seed, Some(77));
    assert!(o.quiet && o.no_build);
    assert_eq!(o.out, Some(PathBuf::from("/o/restart")));
    assert_eq!((o.accel, o.timeout_secs), (Accel::Kvm, 60));
    assert_eq!(o.append, ["expect_pci=ports"]);
    assert_eq!(o.tests, "restart", "--append does not change the suite");
}

#[test]
fn restart_refuses_what_would_change_its_boots() {
    for (args, msg) in [
        (&["restart", "--tests", "block"][..], "restart runs the restart suite only: drop --tests"),
        (&["restart", "--tests=restart"][..], "restart runs the restart suite only: drop --tests"),
        (
            &["restart", "--append", "x=1 restart=verify"][..],
            "--append restart=verify: restart sets tests=, bench=, restart=, restart_seed= itself",
        ),
        (&["restart", "--append", "restart_seed=5"][..], "--append restart_seed=5: restart sets"),
        (&["restart", "--append", "tests=all"][..], "--append tests=all: restart sets"),
        (&["restart", "--append", "bench=only"][..], "--append bench=only: restart sets"),
        (&["restart", "--rounds", "2"][..], "--rounds applies to bench-linux"),
        (&["restart", "--seed", "x"][..], "invalid --seed value 'x'"),
    ] {
        let err = opts(args).unwrap_err();
        assert!(err.starts_with(msg), "{args:?}: {err}");
    }
    // The words are the guest's keys, not prefixes of them.
    assert!(opts(&["restart", "--append", "restarts=1 testsx=2"]).is_ok());
    // `run` keeps its --tests and takes the words as any others.
    let o = opts(&["run", "--tests", "restart", "--append", "restart=write restart_seed=5"]).unwrap();
    assert_eq!((o.tests.as_str(), o.append.len()), ("restart", 2));
    let err = opts(&["bogus"]).unwrap_err();
    assert!(err.contains("'restart'"), "{err}");
}

#[test]
fn icount_runs_one_tcg_thread_with_instruction_time() {
    let o = opts(&["bench", "--icount"]).unwrap();
    assert_eq!(o.accel, Accel::Icount);
    assert_eq!(opts(&["bench"]).unwrap().accel, Accel::Tcg);
    let args = |accel| -> Vec<String> {
        let cmd = qemu_command(&QemuConfig {
            qemu: Path::new("qemu"),
            kernel: Path::new("k"),
            cmdline: "tests=port",
            smp: 2,
            topology: None,
            numa_nodes: None,
            mem_mib: 256,
            accel,
            initrd: None,
            extra: &[],
            serial_monitor: false,
        });
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    };
    let ic = args(Accel::Icount);
    let at = ic.iter().position(|a| a == "-accel").unwrap();
    assert_eq!(ic[at + 1], "tcg,thread=single");
    let at = ic.iter().position(|a| a == "-icount").unwrap();
    assert_eq!(ic[at + 1], "shift=0,align=off,sleep=off");
    assert!(!args(Accel::Tcg).iter().any(|a| a == "-icount"));
    assert_eq!(Accel::Icount.name(), "tcg-icount");
}
