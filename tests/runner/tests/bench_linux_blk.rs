//! The block benchmarks on the Linux side, without Linux: what the initramfs
//! carries (blkbench, Linux's virtio-blk modules), that the init script and
//! `scripts/bench-linux.sh` agree with the runner on the modules' order, that
//! Linux's `main` boots get `ktest bench`'s disks (a script standing in for
//! QEMU records its arguments), that a real log of blkbench followed by
//! kbench parses as one KTAP document, and blkbench's selection (compiled
//! with the host's gcc; skipped with a printed reason without one).

use ktest_runner::disks::{BootDisks, DISKS};
use ktest_runner::initramfs::{self, MODULES_DIR};
use ktest_runner::ktap::{Parser, Status};
use ktest_runner::linux::{self, MODULES_SUBDIR, VIRTIO_MODULES};
use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(dead_code)]
mod common;

const SERIAL: &str = include_str!("fixtures/blkbench-serial.txt");

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("blk-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn repo_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The names of a newc archive's entries with their mode bits, in order.
fn entries(a: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
    let mut out = Vec::new();
    let mut off = 0;
    loop {
        let field = |i: usize| hex(&a[off + 6 + 8 * i..off + 14 + 8 * i]);
        let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
        let name = String::from_utf8(a[off + 110..off + 109 + namesize].to_vec()).unwrap();
        let data_at = (off + 110 + namesize).div_ceil(4) * 4;
        if name == "TRAILER!!!" {
            return out;
        }
        out.push((name, mode, a[data_at..data_at + size].to_vec()));
        off = (data_at + size).div_ceil(4) * 4;
    }
}

/// A kbench module directory as scripts/bench-linux.sh leaves it, with
/// stand-in files: (dir, kbench.ko).
fn prepared(d: &Path) -> PathBuf {
    std::fs::write(d.join("kbench.ko"), b"KO").unwrap();
    std::fs::write(d.join("blkbench"), b"BLK").unwrap();
    std::fs::write(d.join("mmbench"), b"MM").unwrap();
    std::fs::create_dir_all(d.join(MODULES_SUBDIR)).unwrap();
    for m in VIRTIO_MODULES {
        std::fs::write(d.join(MODULES_SUBDIR).join(format!("{m}.ko")), m.as_bytes()).unwrap();
    }
    d.join("kbench.ko")
}

// ------------------------------------------------------------------ initramfs

#[test]
fn blkbench_and_the_modules_are_found_beside_the_kbench_module() {
    let (blk, mods) = linux::beside_module(Path::new("/x/y/kbench.ko"));
    assert_eq!(blk, Path::new("/x/y/blkbench"));
    assert_eq!(linux::mmbench_beside_module(Path::new("/x/y/kbench.ko")), Path::new("/x/y/mmbench"));
    let want: Vec<PathBuf> =
        VIRTIO_MODULES.iter().map(|m| PathBuf::from(format!("/x/y/{MODULES_SUBDIR}/{m}.ko"))).collect();
    assert_eq!(mods, want);
}

#[test]
fn the_initramfs_carries_blkbench_mmbench_and_the_virtio_modules_in_order() {
    let d = scratch("initramfs");
    let module = prepared(&d);
    std::fs::write(d.join("busybox"), b"BB").unwrap();
    let (blk, mods) = linux::beside_module(&module);
    let mm = linux::mmbench_beside_module(&module);
    let programs = [blk.as_path(), mm.as_path()];
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-linux/init");
    let e = entries(&initramfs::bench_linux(&d.join("busybox"), &init, &module, &programs, &mods).unwrap());
    let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap_or_else(|| panic!("{n} missing: {names:?}"));
    let (mode, data) = (e[at("bin/blkbench")].1, &e[at("bin/blkbench")].2);
    assert_eq!((mode, data.as_slice()), (0o100_755, &b"BLK"[..]));
    let (mode, data) = (e[at("bin/mmbench")].1, &e[at("bin/mmbench")].2);
    assert_eq!((mode, data.as_slice()), (0o100_755, &b"MM"[..]));
    assert!(at("lib") < at(MODULES_DIR), "lib before lib/modules");
    let mut last = at(MODULES_DIR);
    for m in VIRTIO_MODULES {
        let i = at(&format!("{MODULES_DIR}/{m}.ko"));
        assert!(i > last, "{m}.ko out of order: {names:?}");
        assert_eq!((e[i].1, e[i].2.as_slice()), (0o100_644, m.as_bytes()));
        last = i;
    }
    // A missing module is an error that names it.
    let gone = d.join(MODULES_SUBDIR).join("virtio_blk.ko");
    std::fs::remove_file(&gone).unwrap();
    let err = initramfs::bench_linux(&d.join("busybox"), &init, &module, &programs, &mods).unwrap_err();
    assert!(err.to_string().contains("virtio_blk.ko"), "{err}");
}

#[test]
fn init_and_the_script_load_the_modules_in_the_runners_order() {
    let want = VIRTIO_MODULES.join(" ");
    let init = repo_file("tests/bench-linux/init");
    let line = init.lines().find(|l| l.trim_start().starts_with("for m in virtio")).expect("the init's module loop");
    assert_eq!(line.trim().trim_start_matches("for m in ").trim_end_matches("; do"), want);
    assert!(init.contains("insmod /lib/modules/$m.ko"), "init loads from {MODULES_DIR}");
    assert!(init.contains("/bin/blkbench --select"));
    assert!(init.contains("/bin/mmbench --select"));
    assert!(init.contains("ktap_num=$((blk + mm + 1))"));
    let script = repo_file("scripts/bench-linux.sh");
    assert!(script.contains(&format!("order=\"{want}\"")), "bench-linux.sh copies the modules in another order");
    assert!(script.contains("gcc -static -O2 -pthread"));
}

// ------------------------------------------------------------------ disks

#[test]
fn only_the_main_set_gets_the_disks_and_they_come_before_qemu_args() {
    assert!(linux::wants_disks("main"));
    assert!(!linux::wants_disks("scale"));
    assert!(!linux::wants_disks("tput"));
    assert_eq!(linux::disk_tag(2, "main"), "linux-smp2-main");
    let d = scratch("extra");
    let disks = BootDisks::create(&d, "t").unwrap();
    let user = vec!["-cpu".to_string(), "max".to_string()];
    let extra = linux::extra_args(Some(&disks), &user);
    let mut want = disks.qemu_args();
    want.extend(user.iter().cloned());
    assert_eq!(extra, want);
    assert_eq!(linux::extra_args(None, &user), user);
    disks.remove().unwrap();
}

/// A stand-in for QEMU that records its arguments and the directory's files
/// while it "runs", then prints `serial` and ends as isa-debug-exit 0x10 does.
fn fake_qemu(dir: &Path, out: &Path, serial: &Path) -> PathBuf {
    let script = dir.join("fake-qemu");
    let text = format!(
        r#"#!/bin/sh
case "$*" in *--version*) echo "QEMU emulator version 7.2.0"; exit 0 ;; esac
for a in "$@"; do printf '%s\n' "$a"; done > '{dir}/args'
ls '{out}' > '{dir}/files'
cat '{serial}'
exit 33
"#,
        dir = dir.display(),
        out = out.display(),
        serial = serial.display()
    );
    common::write_executable(&script, &text);
    script
}

fn ktest(args: &[&str]) -> (i32, String) {
    common::ktest_text(args)
}

#[test]
fn a_linux_main_boot_gets_the_benchmark_disks_and_removes_them() {
    let d = scratch("boot");
    let module = prepared(&d);
    std::fs::write(d.join("vmlinuz"), b"x").unwrap();
    std::fs::write(d.join("busybox"), b"x").unwrap();
    std::fs::write(d.join("serial.txt"), SERIAL).unwrap();
    let out = d.join("out");
    let qemu = fake_qemu(&d, &out, &d.join("serial.txt"));
    let p = |p: &Path| p.display().to_string();
    let (qemu, kernel, module, bb, out_s) =
        (p(&qemu), p(&d.join("vmlinuz")), p(&module), p(&d.join("busybox")), p(&out));
    let common = ["--qemu", &qemu, "--linux-kernel", &kernel, "--module", &module, "--busybox", &bb, "--out", &out_s];

    let mut args = vec!["bench-linux", "--quiet"];
    args.extend(common);
    let (code, text) = ktest(&args);
    assert_eq!(code, 0, "{text}");
    let qargs = std::fs::read_to_string(d.join("args")).unwrap();
    let qargs: Vec<&str> = qargs.lines().collect();
    for disk in DISKS {
        let dev = qargs
            .iter()
            .find(|a| a.starts_with("virtio-blk-pci,") && a.contains(&format!("serial={}", disk.serial)))
            .unwrap_or_else(|| panic!("no device for {}: {qargs:?}", disk.serial));
        if let Some(n) = disk.queues {
            assert!(dev.contains(&format!("num-queues={n}")), "{dev}");
        }
        let image = format!("disk-{}-linux-smp2-main.img", disk.serial);
        assert!(qargs.iter().any(|a| a.starts_with("{") && a.contains(&image)), "no -blockdev for {image}");
    }
    assert_eq!(qargs.iter().filter(|a| **a == "-blockdev").count(), DISKS.len());
    let files = std::fs::read_to_string(d.join("files")).unwrap();
    assert_eq!(files.lines().filter(|f| f.starts_with("disk-") && f.ends_with("-linux-smp2-main.img")).count(), 4);
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("disk-"))
        .collect();
    assert!(left.is_empty(), "images left behind: {left:?}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench-linux.json")).unwrap()).unwrap();
    let names: Vec<&str> = v.as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names[..4], ["blk_read_4k_qd1", "blk_write_4k_qd1", "blk_read_4k_qd32", "blk_read_seq_mib_s"]);
    assert_eq!(names.len(), 29);

    // The throughput set stands beside bench-scale's boots, which have no disks.
    let mut args = vec!["bench-linux", "--quiet", "--set", "tput"];
    args.extend(common);
    let (code, text) = ktest(&args);
    assert_eq!(code, 0, "{text}");
    let qargs = std::fs::read_to_string(d.join("args")).unwrap();
    assert!(!qargs.contains("virtio-blk-pci") && !qargs.contains("-blockdev"), "{qargs}");
}

#[test]
fn a_missing_blkbench_or_module_is_named() {
    let d = scratch("missing");
    let module = prepared(&d);
    std::fs::write(d.join("vmlinuz"), b"x").unwrap();
    std::fs::write(d.join("busybox"), b"x").unwrap();
    let p = |p: &Path| p.display().to_string();
    let (kernel, module_s, bb) = (p(&d.join("vmlinuz")), p(&module), p(&d.join("busybox")));
    let args =
        ["bench-linux", "--linux-kernel", &kernel, "--module", &module_s, "--busybox", &bb, "--qemu", "/bin/false"];
    std::fs::remove_file(d.join(MODULES_SUBDIR).join("virtio_pci.ko")).unwrap();
    let (code, text) = ktest(&args);
    assert_ne!(code, 0);
    assert!(text.contains("virtio_pci.ko") && text.contains("scripts/bench-linux.sh"), "{text}");
    std::fs::remove_file(d.join("blkbench")).unwrap();
    let (code, text) = ktest(&args);
    assert_ne!(code, 0);
    assert!(text.contains("blkbench program not found"), "{text}");
    std::fs::write(d.join("blkbench"), b"BLK").unwrap();
    std::fs::write(d.join(MODULES_SUBDIR).join("virtio_pci.ko"), b"x").unwrap();
    std::fs::remove_file(d.join("mmbench")).unwrap();
    let (code, text) = ktest(&args);
    assert_ne!(code, 0);
    assert!(text.contains("mmbench program not found"), "{text}");
}

// ------------------------------------------------------------------ output

#[test]
fn blkbench_then_kbench_parse_as_one_ktap_document() {
    let s = parse(SERIAL);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.top_plan, Some(2));
    assert_eq!(s.counts(), (29, 0, 1));
    let suites: Vec<(&str, Status)> =
        s.results.iter().filter(|r| !r.leaf).map(|r| (r.name.as_str(), r.status)).collect();
    assert_eq!(suites, [("block", Status::Ok), ("linux", Status::Ok)]);
    let skipped = s.leaves().find(|r| r.status == Status::Skip).unwrap();
    assert_eq!((skipped.suite.as_str(), skipped.name.as_str()), ("block", "bench_blk_complete_cross_cpu"));
    assert!(skipped.reason.as_deref().unwrap().contains("isolcpus=managed_irq,1"));
    let blk: Vec<&str> = s.benches.iter().map(|b| b.name.as_str()).filter(|n| n.starts_with("blk_")).collect();
    assert_eq!(blk, ["blk_read_4k_qd1", "blk_write_4k_qd1", "blk_read_4k_qd32", "blk_read_seq_mib_s"]);
    assert_eq!(s.benches.len(), 29);
    assert!(SERIAL.contains("# kbench: blk_complete_cross_cpu irq=28 effective_cpus=1"));
    assert_eq!(linux::kernel_facts(SERIAL), (Some("voluntary".into()), Some("6.1.0-57-amd64".into())));
}

// ------------------------------------------------------------------ blkbench

/// `tests/bench-linux/<name>.c` built for the host (dynamically: only its
/// selection runs here); `None` (the test skips) where the host has no gcc.
fn host_build(name: &str) -> Option<PathBuf> {
    let d = scratch(&format!("gcc-{name}"));
    let exe = d.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../bench-linux/{name}.c"));
    match Command::new("gcc")
        .args(["-O2", "-pthread", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
    {
        Ok(s) if s.success() => Some(exe),
        Ok(s) => panic!("gcc failed on {name}.c: {s}"),
        Err(e) => {
            eprintln!("skipped: no gcc on this host ({e})");
            None
        }
    }
}

/// Run a host-built program: its exit code and its output without the
/// final newline.
fn run_exe(exe: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(exe).args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).trim_end_matches('\n').to_string())
}

/// `text` through the runner's KTAP parser.
fn parse(text: &str) -> ktest_runner::ktap::Summary {
    let mut p = Parser::new();
    for l in text.lines() {
        p.feed(l);
    }
    p.finish()
}

#[test]
fn blkbench_selects_by_set_and_only_as_kbench_does() {
    let Some(exe) = host_build("blkbench") else { return };
    let run = |args: &[&str]| run_exe(&exe, args);
    for (args, want) in [
        (&["--select"][..], "1 1"),
        (&["--select", "--set", "main", "--only", "blk_read_4k_qd1"][..], "1 0"),
        (&["--select", "--only", "bench_blk_read_4k_qd1,blk_complete_cross_cpu"][..], "1 0"),
        (&["--select", "--only", "blk_read_4k_qd1,ipi_roundtrip"][..], "1 1"),
        (&["--select", "--only", "ipi_roundtrip"][..], "0 1"),
        (&["--select", "--set", "scale"][..], "0 1"),
        (&["--select", "--set", "tput", "--only", "blk_read_4k_qd1"][..], "0 0"),
    ] {
        assert_eq!(run(args), (0, want.to_string()), "{args:?}");
    }
    assert_eq!(run(&["--frobnicate"]).0, 2);
    // Nothing of its own selected: a valid KTAP block that fails.
    let (code, text) = run(&["--only", "nothing_here", "--plan", "1"]);
    assert_eq!(code, 1);
    let s = parse(&text);
    assert!(s.problems.is_empty(), "{:?}\n{text}", s.problems);
    assert_eq!(s.results.last().map(|r| (r.name.as_str(), r.status)), Some(("block", Status::NotOk)));
}

// ------------------------------------------------------------------ mmbench

#[test]
fn mmbench_selects_its_names_and_passes_the_rest_on() {
    let Some(exe) = host_build("mmbench") else { return };
    let run = |args: &[&str]| run_exe(&exe, args);
    for (args, want) in [
        (&["--select"][..], "1 "),
        (&["--select", "--only", "cache_read_hit_4k"][..], "1 "),
        (&["--select", "--only", "bench_direct_reclaim_latency,blk_read_4k_qd1"][..], "1 blk_read_4k_qd1"),
        (
            &["--select", "--only", "ipi_roundtrip,kswapd_reclaim_mib_s,blk_read_4k_qd1"][..],
            "1 ipi_roundtrip,blk_read_4k_qd1",
        ),
        (&["--select", "--only", "ipi_roundtrip"][..], "0 ipi_roundtrip"),
        (&["--select", "--set", "scale"][..], "0 "),
        (&["--select", "--set", "tput", "--only", "cache_read_hit_4k"][..], "0 "),
    ] {
        assert_eq!(run(args), (0, want.to_string()), "{args:?}");
    }
    assert_eq!(run(&["--frobnicate"]).0, 2);
    assert_eq!(run(&["--plan", "1", "--num", "2"]).0, 2, "a result number past the plan");
    // Nothing of its own selected: a valid KTAP document that fails.
    let (code, text) = run(&["--only", "nothing_here", "--plan", "1"]);
    assert_eq!(code, 1);
    let s = parse(&text);
    assert!(s.problems.is_empty(), "{:?}\n{text}", s.problems);
    assert_eq!(s.top_plan, Some(1));
    assert_eq!(s.results.last().map(|r| (r.name.as_str(), r.status)), Some(("mm", Status::NotOk)));
}
