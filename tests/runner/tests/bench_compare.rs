//! The Linux side of the benchmarks without Linux or QEMU: the initramfs
//! format, the options, the reading of kbench's output (a real serial log),
//! the comparison table, its Markdown, JSON and SVG, and `bench-linux` and
//! `bench-compare` end to end with a shell script standing in for QEMU.

use ktest_runner::cli::{Cli, Mode, Options, parse};
use ktest_runner::compare::{self, Figure, Metric, Side};
use ktest_runner::initramfs::{Entry, archive};
use ktest_runner::ktap::Parser;
use ktest_runner::linux;
use ktest_runner::rounds;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[allow(dead_code)]
mod common;

const SERIAL: &str = include_str!("fixtures/kbench-serial.txt");

fn opts(args: &[&str]) -> Result<Options, String> {
    match parse(args.iter().map(|s| s.to_string()))? {
        Cli::Run(o) => Ok(*o),
        Cli::Help => Err("help".into()),
    }
}

fn fig(name: &str, fields: &[(&str, f64)]) -> Figure {
    Figure { name: name.into(), fields: fields.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>() }
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ------------------------------------------------------------------ options

#[test]
fn linux_modes_and_their_defaults() {
    let o = opts(&["bench-linux"]).unwrap();
    assert_eq!((o.mode, o.smp.as_slice(), o.mem_mib, o.set.as_str()), (Mode::BenchLinux, &[2][..], 512, "main"));
    let o = opts(&["bench-compare"]).unwrap();
    assert_eq!((o.mode, o.rounds, o.smp.as_slice()), (Mode::BenchCompare, 3, &[2][..]));
    let o = opts(&["bench-scale"]).unwrap();
    assert_eq!((o.smp.as_slice(), o.scale_mem_mib, o.no_linux), (&[1, 2, 4, 8][..], 2048, false));
}

#[test]
fn linux_options() {
    let o = opts(&[
        "bench-compare",
        "--rounds=5",
        "--linux-kernel",
        "/k",
        "--module",
        "/m.ko",
        "--busybox",
        "/bb",
        "--only",
        "ipi_roundtrip,wq_flush_idle",
        "--linux-append",
        "mitigations=off nokaslr",
        "--side",
        "redox=make redox-bench OUT=$KTEST_SIDE_OUT",
    ])
    .unwrap();
    assert_eq!(o.rounds, 5);
    assert_eq!(o.linux_kernel, Some(PathBuf::from("/k")));
    assert_eq!(o.module, Some(PathBuf::from("/m.ko")));
    assert_eq!(o.busybox, PathBuf::from("/bb"));
    assert_eq!(o.only, "ipi_roundtrip,wq_flush_idle");
    assert_eq!(o.linux_append, ["mitigations=off", "nokaslr"]);
    assert_eq!(o.sides, [("redox".to_string(), "make redox-bench OUT=$KTEST_SIDE_OUT".to_string())]);
    let o = opts(&["bench-scale", "--no-linux", "--smp", "1,2", "--scale-mem", "1024"]).unwrap();
    assert!(o.no_linux);
    assert_eq!((o.smp.as_slice(), o.scale_mem_mib), (&[1, 2][..], 1024));
}

#[test]
fn linux_option_errors() {
    for (args, want) in [
        (&["bench", "--rounds", "2"][..], "applies to bench-linux"),
        (&["run", "--side", "x=y"][..], "applies to bench-linux"),
        (&["bench-linux", "--side", "x=y"][..], "bench-compare only"),
        (&["bench-compare", "--rounds", "0"][..], "at least 1"),
        (&["bench-compare", "--side", "noequals"][..], "NAME=COMMAND"),
        (&["bench-compare", "--side", "linux=x"][..], "taken"),
        (&["bench-compare", "--side", "a b=x"][..], "invalid --side name"),
        (&["bench-compare", "--side", "r=x", "--side", "r=y"][..], "taken"),
        (&["bench-compare", "--side", "r= "][..], "no command"),
        (&["bench-linux", "--set", "all"][..], "main, scale or tput"),
        (&["bench-linux", "--only", "a b"][..], "comma list"),
        (&["bench-linux", "--smp", "1,2"][..], "single CPU count"),
        (&["bench-scale", "--set", "scale"][..], "drop --set"),
        (&["bench-scale", "--no-linux=1"][..], "takes no value"),
        (&["frobnicate"][..], "'bench-compare'"),
    ] {
        let e = opts(args).unwrap_err();
        assert!(e.contains(want), "{args:?}: {e}");
    }
}

// ------------------------------------------------------------------ initramfs

/// An archive entry read back: (name, mode, rdev, data).
type Unpacked = (String, u32, (u32, u32), Vec<u8>);

/// Parse a newc archive back.
fn unpack(a: &[u8]) -> Vec<Unpacked> {
    let mut out = Vec::new();
    let mut off = 0;
    let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
    loop {
        assert_eq!(&a[off..off + 6], b"070701", "magic at {off}");
        let f = |i: usize| hex(&a[off + 6 + 8 * i..off + 14 + 8 * i]);
        let (mode, size, rdev, namesize) = (f(1), f(6) as usize, (f(9), f(10)), f(11) as usize);
        let name = std::str::from_utf8(&a[off + 110..off + 110 + namesize - 1]).unwrap().to_string();
        assert_eq!(a[off + 110 + namesize - 1], 0);
        let data_at = (off + 110 + namesize).div_ceil(4) * 4;
        let data = a[data_at..data_at + size].to_vec();
        off = (data_at + size).div_ceil(4) * 4;
        if name == "TRAILER!!!" {
            assert_eq!(off, a.len());
            return out;
        }
        out.push((name, mode, rdev, data));
    }
}

#[test]
fn newc_archive_round_trips() {
    let a = archive(&[
        Entry::dir("dev"),
        Entry::char_dev("dev/console", 5, 1),
        Entry::file("init", b"#!/bin/sh\n".to_vec(), 0o755),
        Entry::file("odd", vec![1, 2, 3], 0o644),
    ]);
    assert_eq!(a.len() % 4, 0);
    let e = unpack(&a);
    let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(names, ["dev", "dev/console", "init", "odd"]);
    assert_eq!((e[0].1, e[1].1, e[1].2), (0o040_755, 0o020_600, (5, 1)));
    assert_eq!((e[2].1, e[2].3.as_slice()), (0o100_755, &b"#!/bin/sh\n"[..]));
    assert_eq!((e[3].1, e[3].3.as_slice()), (0o100_644, &[1u8, 2, 3][..]));
    assert_eq!(archive(&[Entry::dir("x")]), archive(&[Entry::dir("x")]), "reproducible");
}

#[test]
fn the_bench_linux_initramfs_has_init_module_and_console() {
    let d = tmp("initramfs");
    let (bb, module, blk) = (d.join("busybox"), d.join("kbench.ko"), d.join("blkbench"));
    std::fs::write(&bb, b"BB").unwrap();
    std::fs::write(&module, b"KO").unwrap();
    std::fs::write(&blk, b"BLK").unwrap();
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-linux/init");
    let e = unpack(&ktest_runner::initramfs::bench_linux(&bb, &init, &module, &[&blk], &[]).unwrap());
    let get = |n: &str| e.iter().find(|x| x.0 == n).unwrap_or_else(|| panic!("{n} missing"));
    assert_eq!(get("bin/busybox").3, b"BB");
    assert_eq!(get("kbench.ko").3, b"KO");
    assert_eq!(get("init").1 & 0o111, 0o111, "init is executable");
    assert!(String::from_utf8_lossy(&get("init").3).contains("insmod /kbench.ko"));
    assert_eq!(get("dev/console").2, (5, 1));
    assert!(ktest_runner::initramfs::bench_linux(&d.join("nope"), &init, &module, &[&blk], &[]).is_err());
}

// ------------------------------------------------------------------ kbench's output

#[test]
fn kbench_serial_output_parses_as_ktap() {
    let mut p = Parser::new();
    for l in SERIAL.lines() {
        p.feed(l);
    }
    let s = p.finish();
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.counts(), (25, 0, 0));
    assert_eq!(s.benches.len(), 25);
    let figs = rounds::figures_of(&s.benches);
    let ipi = figs.iter().find(|f| f.name == "ipi_roundtrip").unwrap();
    assert_eq!(Metric::of(ipi), Some(Metric::Latency));
    let tput = figs.iter().find(|f| f.name == "wq_throughput_bound").unwrap();
    assert_eq!(Metric::of(tput), Some(Metric::Throughput));
    assert_eq!(linux::kernel_facts(SERIAL), (Some("voluntary".into()), Some("6.1.0-57-amd64".into())));
}

#[test]
fn linux_command_line() {
    assert_eq!(
        linux::cmdline("main", "", &[]),
        "console=ttyS0 loglevel=6 printk.time=0 panic=-1 oops=panic kbench.set=main"
    );
    assert!(linux::cmdline("scale", "a,b", &["x=1".into()]).ends_with("kbench.set=scale kbench.only=a,b x=1"));
}

// ------------------------------------------------------------------ the table

fn two_sides() -> Vec<Side> {
    let ours = vec![
        vec![
            fig("lat", &[("median_ns", 1000.0), ("p99_ns", 3000.0)]),
            fig("tput", &[("items_per_s", 500_000.0)]),
            fig("only_ours", &[("count", 4.0)]),
        ],
        vec![fig("lat", &[("median_ns", 1400.0), ("p99_ns", 3200.0)]), fig("tput", &[("items_per_s", 700_000.0)])],
        vec![fig("lat", &[("median_ns", 1200.0), ("p99_ns", 2800.0)]), fig("tput", &[("items_per_s", 600_000.0)])],
    ];
    let linux = vec![
        vec![fig("lat", &[("median_ns", 2000.0), ("p99_ns", 4000.0)]), fig("tput", &[("items_per_s", 1_000_000.0)])],
        vec![fig("lat", &[("median_ns", 2000.0), ("p99_ns", 4000.0)]), fig("tput", &[("items_per_s", 1_200_000.0)])],
        vec![
            fig("lat", &[("median_ns", 2400.0), ("p99_ns", 4000.0)]),
            fig("tput", &[("items_per_s", 1_100_000.0)]),
            fig("mem", &[("bytes", 32.0), ("n", 1.0)]),
        ],
    ];
    vec![Side { name: "ours".into(), rounds: ours }, Side { name: "linux".into(), rounds: linux }]
}

#[test]
fn medians_spreads_and_ratios_that_read_the_same_way() {
    let t = compare::build(&two_sides(), "linux");
    assert_eq!((t.sides.as_slice(), t.baseline, t.rounds), (&["ours".to_string(), "linux".to_string()][..], 1, 3));
    let names: Vec<&str> = t.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["lat", "tput", "mem", "only_ours"], "Linux's order, then the rest");

    let lat = &t.rows[0];
    let ours = lat.stats[0].as_ref().unwrap();
    assert_eq!((ours.median, ours.min, ours.max, ours.p99), (1200.0, 1000.0, 1400.0, Some(3000.0)));
    let r = lat.ratios[0].as_ref().unwrap();
    assert_eq!(r.median, 0.6, "ours ÷ Linux: medians 1200 and 2000");
    assert_eq!(r.p99, Some(0.75));
    assert_eq!((r.min, r.max), (0.5, 0.7), "per-round ratios 0.5, 0.7, 0.5");
    assert!(lat.ratios[1].is_none(), "no ratio for the baseline");

    // Throughput: Linux ÷ ours, so above 1 again means behind.
    let tp = t.rows[1].ratios[0].as_ref().unwrap();
    assert!((tp.median - 1_100_000.0 / 600_000.0).abs() < 1e-9);
    assert!((tp.min - 1_200_000.0 / 700_000.0).abs() < 1e-9 && (tp.max - 2.0).abs() < 1e-9);

    assert!(t.rows[3].stats[1].is_none() && t.rows[3].ratios[0].is_none());
    assert_eq!(t.rows[3].stats[0].as_ref().unwrap().rounds, [Some(4.0), None, None]);
    assert_eq!(t.rows[2].metric, Metric::Bytes);
}

#[test]
fn median_of_even_and_odd_counts() {
    assert_eq!(compare::median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(compare::median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(compare::median(&[]), None);
    assert_eq!(Metric::Throughput.ratio(0.0, 1.0), None, "no division by zero");
}

#[test]
fn markdown_json_and_svg() {
    let t = compare::build(&two_sides(), "linux");
    let md = compare::markdown(&t);
    let lines: Vec<&str> = md.lines().collect();
    assert!(lines[0].starts_with("| benchmark | unit | ours median / p99 | ours spread | Linux median / p99 | Linux spread | ours ÷ Linux (median / p99) | ratio spread |"), "{md}");
    assert!(
        md.contains("| `lat` | µs | 1.20 / 3.00 | 1.00–1.40 | 2.00 / 4.00 | 2.00–2.40 | 0.60 / 0.75 | 0.50–0.70 |"),
        "{md}"
    );
    assert!(md.contains("| `tput` | items/s | 600 000 | 500 000–700 000 | 1 100 000 | 1 000 000–1 200 000 | 1.83 (inverse) | 1.71–2.00 |"), "{md}");
    assert!(md.contains("| `mem` | bytes | — |  | 32 | 32–32 |  |  |"), "{md}");
    assert!(compare::legend(&t).contains("below 1.0 always means"));

    let v: serde_json::Value = serde_json::from_str(&compare::json(&t, &[("date", "d".into())])).unwrap();
    assert_eq!(v["rows"][0]["name"], "lat");
    assert_eq!(v["rows"][0]["metric"], "latency");
    assert_eq!(v["rows"][0]["ratios"][0]["median"], 0.6);
    assert_eq!(v["rows"][1]["stats"][1]["median"], 1_100_000.0);
    assert_eq!(v["date"], "d");
    assert!(v["legend"].as_str().unwrap().contains("ratio"));

    let long =
        "bench-compare: testkernel vs Linux 6.1.0-57-amd64, 3 alternating round(s), QEMU 7.2.22 TCG -smp 2 -m 512M";
    let svg = compare::svg(&t, long);
    assert!(svg.contains(">bench-compare: testkernel vs Linux 6.1.0-57-amd64, 3 alternating round(s)</text>"), "{svg}");
    assert!(svg.contains(">QEMU 7.2.22 TCG -smp 2 -m 512M</text>"), "a long title takes two lines: {svg}");
    let svg = compare::svg(&t, "a <title> & more");
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("a &lt;title&gt; &amp; more"));
    assert!(svg.contains(">lat</text>") && svg.contains(">tput</text>"));
    assert!(!svg.contains(">only_ours</text>"), "rows without a ratio are left out of the chart");
    assert_eq!(svg.matches("<svg").count(), 1);
    assert_eq!(svg.matches('<').count(), svg.matches('>').count());
}

#[test]
fn a_third_column() {
    let mut sides = two_sides();
    sides.push(Side {
        name: "redox".into(),
        rounds: vec![vec![fig("lat", &[("median_ns", 4000.0), ("p99_ns", 8000.0)])]; 3],
    });
    let t = compare::build(&sides, "linux");
    let md = compare::markdown(&t);
    assert!(md.lines().next().unwrap().ends_with("| redox ÷ Linux (median / p99) | ratio spread |"), "{md}");
    assert_eq!(t.rows[0].ratios[2].as_ref().unwrap().median, 2.0);
    let svg = compare::svg(&t, "t");
    assert!(svg.contains("redox ÷ Linux"));
}

#[test]
fn bench_json_files_read_back() {
    let figs = compare::figures_from_json(
        r#"[{"name":"a","median_ns":5,"p99_ns":7,"n":10,"smp":2,"preempt":"full","accel":"tcg"},{"name":"b","items_per_s":9}]"#,
    )
    .unwrap();
    assert_eq!(figs[0], fig("a", &[("median_ns", 5.0), ("p99_ns", 7.0), ("n", 10.0), ("smp", 2.0)]));
    assert_eq!(Metric::of(&figs[1]), Some(Metric::Throughput));
    assert!(compare::figures_from_json("{}").is_err());
    assert!(compare::figures_from_json(r#"[{"median_ns":1}]"#).is_err());
}

#[test]
fn scale_series_table_and_chart() {
    let runs = vec![
        ("ours".to_string(), 1, vec![fig("wq_throughput_bound", &[("items_per_s", 800_000.0)])]),
        ("ours".to_string(), 2, vec![fig("wq_throughput_bound", &[("items_per_s", 1_200_000.0)])]),
        ("linux".to_string(), 2, vec![fig("wq_throughput_bound", &[("items_per_s", 2_000_000.0)])]),
        ("linux".to_string(), 1, vec![fig("wq_throughput_bound", &[("items_per_s", 1_000_000.0)])]),
    ];
    let s = compare::scale_series(&runs);
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].1.as_str(), s[1].1.as_str()), ("ours", "linux"), "ours first");
    assert_eq!(s[0].2, [(1, 800_000.0), (2, 600_000.0)], "per CPU");
    assert_eq!(s[1].2, [(1, 1_000_000.0), (2, 1_000_000.0)], "sorted by CPUs");
    let md = compare::scale_markdown(&s, "CPUs");
    assert!(md.starts_with("| CPUs | `wq_throughput_bound` ours | `wq_throughput_bound` Linux |"), "{md}");
    assert!(md.contains("| 2 | 600 000 | 1 000 000 |"), "{md}");
    let svg = compare::line_svg(&s, "t", "sub");
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert!(svg.contains(">1 000 000</text>"), "a round top of the y axis: {svg}");
    assert!(svg.contains(">250 000</text>") && svg.contains(">0</text>"), "round quarters: {svg}");
    let s2 = compare::scale_series(&[("ours".to_string(), 1, vec![fig("t", &[("items_per_s", 1_050_000.0)])])]);
    let svg = compare::line_svg(&s2, "t", "sub");
    assert!(svg.contains(">1 200 000</text>") && svg.contains(">300 000</text>"), "{svg}");
}

#[test]
fn growth_against_the_load() {
    let ours = vec![
        fig("kthread_create_run_alive_10", &[("median_ns", 10_000.0)]),
        fig("kthread_create_run_alive_1000", &[("median_ns", 12_000.0)]),
        fig("kthread_create_run_alive_10000", &[("median_ns", 40_000.0)]),
        fig("wq_queue_depth_10", &[("median_ns", 400.0)]),
        fig("wq_drain_depth_10", &[("items_per_s", 5.0)]),
        fig("mem_kthread", &[("bytes", 1.0)]),
        fig("lonely_7", &[("median_ns", 1.0)]),
    ];
    let linux = vec![
        fig("kthread_create_run_alive_10", &[("median_ns", 300_000.0)]),
        fig("kthread_create_run_alive_10000", &[("median_ns", 330_000.0)]),
    ];
    let g = compare::growth_series(&[("ours".into(), ours), ("linux".into(), linux)]);
    assert_eq!(g.len(), 2, "families of one point are left out: {g:?}");
    assert_eq!((g[0].0.as_str(), g[0].1.as_str()), ("kthread_create_run_alive", "ours"));
    assert_eq!(g[0].2, [(10, 1.0), (1000, 1.2), (10000, 4.0)]);
    assert!((g[1].2[1].1 - 1.1).abs() < 1e-9);
    let md = compare::scale_markdown(&g, "load N");
    assert!(md.contains("| 10 000 | 4.00 | 1.10 |"), "{md}");
}

#[test]
fn utc_date() {
    let d = rounds::utc_now();
    assert_eq!(d.len(), "2026-11-29 16:00 UTC".len(), "{d}");
    assert!(d.starts_with("20") && d.ends_with(" UTC"), "{d}");
}

// ------------------------------------------------------------------ end to end

/// A stand-in for QEMU: Linux's fixture when booted with kbench's words,
/// otherwise a testkernel's KTAP with two figures (the second slower by
/// the round number kept in a counter file).
fn fake_qemu(dir: &Path) -> PathBuf {
    let serial = dir.join("serial.txt");
    std::fs::write(&serial, SERIAL).unwrap();
    let script = dir.join("fake-qemu");
    let text = format!(
        r#"#!/bin/sh
case "$*" in
  *--version*) echo "QEMU emulator version 7.2.0"; exit 0 ;;
  *kbench.set=*) cat '{serial}'; exit 33 ;;
esac
n=$(cat '{dir}/count' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '{dir}/count'
printf 'KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: kthread\n    1..1\n'
printf '    # bench: ipi_roundtrip median_ns=%d p99_ns=9000 n=10000\n' $((8000 + n * 100))
printf '    # bench: wq_throughput_bound items_per_s=700000 n=100000\n'
printf '    ok 1 bench_x\nok 1 kthread\n'
exit 33
"#,
        serial = serial.display(),
        dir = dir.display()
    );
    common::write_executable(&script, &text);
    script
}

fn ktest(args: &[&str]) -> (i32, String) {
    common::ktest_text(args)
}

#[test]
fn bench_linux_and_bench_compare_with_a_fake_emulator() {
    let d = tmp("fake-compare");
    fake_qemu(&d);
    for f in ["vmlinuz", "kbench.ko", "busybox", "kernel.elf", "blkbench", "mmbench"] {
        std::fs::write(d.join(f), b"x").unwrap();
    }
    std::fs::create_dir_all(d.join(linux::MODULES_SUBDIR)).unwrap();
    for m in linux::VIRTIO_MODULES {
        std::fs::write(d.join(linux::MODULES_SUBDIR).join(format!("{m}.ko")), b"x").unwrap();
    }
    let p = |f: &str| d.join(f).display().to_string();
    let common = [
        "--qemu",
        &p("fake-qemu"),
        "--linux-kernel",
        &p("vmlinuz"),
        "--module",
        &p("kbench.ko"),
        "--busybox",
        &p("busybox"),
    ];

    let out = p("linux-out");
    let mut args = vec!["bench-linux", "--out", &out, "--quiet"];
    args.extend(common);
    let (code, text) = ktest(&args);
    assert_eq!(code, 0, "{text}");
    let json = std::fs::read_to_string(d.join("linux-out/bench-linux.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 25);
    assert_eq!(v[0]["name"], "kthread_create_run");
    assert_eq!(v[0]["preempt"], "voluntary");
    assert_eq!(v[0]["kernel"], "linux-6.1.0-57-amd64");
    assert_eq!(v[0]["smp"], 2);
    assert!(text.ends_with("25 passed, 0 failed\n"), "{text}");
    assert!(d.join("linux-out/initramfs-linux.cpio").is_file());

    let out = p("compare-out");
    let side = format!("other=cp '{}' \"$KTEST_SIDE_OUT/bench.json\"", d.join("linux-out/bench-linux.json").display());
    let kernel = p("kernel.elf");
    let mut args =
        vec!["bench-compare", "--rounds", "2", "--out", &out, "--quiet", "--kernel", &kernel, "--side", &side];
    args.extend(common);
    let (code, text) = ktest(&args);
    assert_eq!(code, 0, "{text}");
    let md = std::fs::read_to_string(d.join("compare-out/bench-compare.md")).unwrap();
    assert!(md.contains("2 round(s)"), "{md}");
    // ours 8100 and 8200 ns in the two rounds against Linux's 4111 ns.
    assert!(md.contains("| `ipi_roundtrip` | µs | 8.15 / 9.00 | 8.10–8.20 | 4.11 / 59.1 | 4.11–4.11 | 4.11 / 59.1 | 4.11–4.11 | 1.98 / 0.15 | 1.97–1.99 | 1.00 / 1.00 | 1.00–1.00 |"), "{md}");
    assert!(md.contains("| `wq_throughput_bound` | items/s | 700 000 |"), "{md}");
    assert!(md.contains("| `softirq_raise_run` | µs | — |"), "Linux-only rows stay: {md}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("compare-out/bench-compare.json")).unwrap()).unwrap();
    assert_eq!(v["sides"], serde_json::json!(["ours", "linux", "other"]));
    assert_eq!(v["rounds"], 2);
    // The host was probed right after each of the six boots, named by round and side.
    assert!(md.contains("Host core-to-core round trip"), "{md}");
    let probes = v["host_core_to_core_ns"].as_array().expect("host_core_to_core_ns");
    let named: Vec<(u64, &str)> =
        probes.iter().map(|p| (p["round"].as_u64().unwrap(), p["side"].as_str().unwrap())).collect();
    assert_eq!(named, [(1, "linux"), (1, "ours"), (1, "other"), (2, "linux"), (2, "ours"), (2, "other")]);
    assert!(d.join("compare-out/bench-compare.svg").is_file());
    for k in 1..=2 {
        for s in ["linux/bench-linux.json", "ours/bench.json", "other/bench.json"] {
            assert!(d.join(format!("compare-out/bench-compare/round-{k}/{s}")).is_file(), "round {k}: {s}");
        }
    }
}

#[test]
fn a_side_that_fails_or_hangs_is_reported() {
    let d = tmp("side-fail");
    let (figs, why) = rounds::side_round("exit 3", &d, Duration::from_secs(30));
    assert!(figs.is_empty());
    assert!(why.unwrap().contains("no figures"));
    let (_, why) =
        rounds::side_round("echo '[]' > \"$KTEST_SIDE_OUT/bench.json\"; exit 3", &d, Duration::from_secs(30));
    assert!(why.unwrap().contains("exited with"));
    let start = std::time::Instant::now();
    let (_, why) = rounds::side_round("sleep 60", &d, Duration::from_secs(1));
    assert!(why.unwrap().contains("timed out"));
    assert!(start.elapsed() < Duration::from_secs(20));
}
