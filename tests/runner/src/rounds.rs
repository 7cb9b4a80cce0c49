//! `ktest bench-compare` and `ktest bench-scale`: boots of the testkernel,
//! of Linux and of further sides, alternating, reduced by [`crate::compare`]
//! to tables and charts under the output directory.

use crate::Error;
use crate::cli::{Mode, Options};
use crate::compare::{self, Figure, Side};
use crate::hostprobe::{self, Sample};
use crate::ktap::Bench;
use crate::linux;
use crate::run::{self, Console};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Figures of parsed `# bench:` lines (numeric fields only).
pub fn figures_of(benches: &[Bench]) -> Vec<Figure> {
    benches
        .iter()
        .map(|b| Figure {
            name: b.name.clone(),
            fields: b.fields.iter().filter_map(|(k, v)| v.parse::<f64>().ok().map(|n| (k.clone(), n))).collect(),
        })
        .collect()
}

fn read_figures(path: &Path) -> Result<Vec<Figure>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    compare::figures_from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::env(format!("ktest: cannot write {}: {e}", path.display())))
}

fn mkdir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|e| Error::env(format!("ktest: cannot create {}: {e}", path.display())))
}

/// Today's date and time in UTC, `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// The options of one testkernel benchmark boot inside a sitting.
fn ours_options(opts: &Options, smp: u32, mem_mib: u64, tests: &str, out: PathBuf) -> Options {
    let mut o = Options::new(Mode::Bench);
    o.smp = vec![smp];
    o.mem_mib = mem_mib;
    o.tests = tests.to_string();
    o.seed = opts.seed;
    o.timeout_secs = opts.timeout_secs;
    o.kernel = opts.kernel.clone();
    o.no_build = true;
    o.append = opts.append.clone();
    o.accel = opts.accel;
    o.qemu_args = opts.qemu_args.clone();
    o.qemu = opts.qemu.clone();
    o.out = Some(out);
    o.quiet = opts.quiet;
    o
}

/// Build the testkernel once before a sitting (unless told not to).
fn build_ours(opts: &Options) -> Result<(), Error> {
    if opts.kernel.is_none() && !opts.no_build {
        run::build_kernel(&run::repo_root()?)?;
    }
    Ok(())
}

/// Boot the testkernel's benchmarks once; its figures, or why there are none.
fn ours_round(o: &Options, out: &mut dyn Write, tty: bool) -> Result<(Vec<Figure>, Option<String>), Error> {
    let dir = o.out.clone().expect("set by ours_options");
    let code = run::run(o, out, tty)?;
    let figs = read_figures(&dir.join("bench.json"));
    let failure = match (&figs, code) {
        (Err(e), _) => Some(format!("no figures: {e}")),
        (Ok(_), 0) => None,
        (Ok(_), _) => Some(format!("a boot or case failed (see {})", dir.display())),
    };
    Ok((figs.unwrap_or_default(), failure))
}

/// Run a further side's command for one round: `sh -c CMD` with
/// `KTEST_SIDE_OUT=dir`, bounded by `timeout` (its whole process group is
/// killed then); its figures are `dir/bench.json`.
pub fn side_round(cmd: &str, dir: &Path, timeout: Duration) -> (Vec<Figure>, Option<String>) {
    use std::os::unix::process::CommandExt;
    let mut child = match Command::new("sh").arg("-c").arg(cmd).env("KTEST_SIDE_OUT", dir).process_group(0).spawn() {
        Ok(c) => c,
        Err(e) => return (Vec::new(), Some(format!("cannot run sh: {e}"))),
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = Command::new("kill").arg("-KILL").arg("--").arg(format!("-{}", child.id())).status();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return (Vec::new(), Some(format!("waiting for the command: {e}"))),
        }
    };
    let figs = read_figures(&dir.join("bench.json"));
    let failure = match (status, &figs) {
        (None, _) => Some(format!("timed out after {} s", timeout.as_secs())),
        (_, Err(e)) => Some(format!("no figures: {e}")),
        (Some(s), Ok(_)) if !s.success() => Some(format!("the command exited with {s}")),
        _ => None,
    };
    (figs.unwrap_or_default(), failure)
}

fn out_dir(opts: &Options) -> Result<PathBuf, Error> {
    match &opts.out {
        Some(d) => Ok(d.clone()),
        None => Ok(run::repo_root()?.join("target/ktest")),
    }
}

/// `ktest bench-compare`: `rounds` alternating rounds (Linux, the
/// testkernel, then each `--side`), one table. 0 when every boot passed.
pub fn run_compare(opts: &Options, out: &mut dyn Write, tty: bool) -> Result<i32, Error> {
    let inputs = linux::inputs(opts)?;
    let out_dir = out_dir(opts)?;
    let dir = out_dir.join("bench-compare");
    mkdir(&dir)?;
    build_ours(opts)?;
    let smp = opts.smp[0];
    let n = opts.rounds as usize;
    let mut sides: Vec<Side> = ["ours", "linux"]
        .iter()
        .map(|s| s.to_string())
        .chain(opts.sides.iter().map(|(s, _)| s.clone()))
        .map(|name| Side { name, rounds: Vec::new() })
        .collect();
    let mut failures: Vec<String> = Vec::new();
    let mut kernel_release = None;
    let mut qemu_version = None;
    let started = Instant::now();
    // Probed right after each boot, while the host still places QEMU's
    // threads where they ran (hostprobe.rs).
    let mut probes: Vec<Sample> = Vec::new();
    let mut probe = |round: usize, side: &str, out: &mut dyn Write| {
        probes.push(hostprobe::sample(round, side.to_string(), &format!("bench-compare: round {round}"), out));
    };
    for k in 1..=n {
        let round = dir.join(format!("round-{k}"));
        {
            let mut console = Console::new(&mut *out, tty, opts.quiet);
            console.line(&format!("==== bench-compare: round {k}/{n}: Linux ===="));
            let lb =
                linux::boot(opts, &inputs, smp, opts.mem_mib, "main", &opts.only, &round.join("linux"), &mut console)?;
            if !lb.boot.passed() {
                failures.push(format!("round {k}: Linux: {}", lb.boot.failures.join("; ")));
            }
            kernel_release = kernel_release.or(lb.kernel);
            qemu_version = qemu_version.or(lb.info.qemu_version);
            sides[1].rounds.push(figures_of(&lb.boot.ktap.benches));
        }
        probe(k, "linux", &mut *out);
        let _ = writeln!(out, "==== bench-compare: round {k}/{n}: testkernel ====");
        let o = ours_options(opts, smp, opts.mem_mib, &opts.tests, round.join("ours"));
        let (figs, failure) = ours_round(&o, out, tty)?;
        probe(k, "ours", &mut *out);
        if let Some(f) = failure {
            failures.push(format!("round {k}: ours: {f}"));
        }
        sides[0].rounds.push(figs);
        for (i, (name, cmd)) in opts.sides.iter().enumerate() {
            let d = round.join(name);
            mkdir(&d)?;
            let _ = writeln!(out, "==== bench-compare: round {k}/{n}: {name}: {cmd} ====");
            let (figs, failure) = side_round(cmd, &d, Duration::from_secs(opts.timeout_secs.saturating_mul(3)));
            probe(k, name, &mut *out);
            if let Some(f) = failure {
                failures.push(format!("round {k}: {name}: {f}"));
            }
            sides[2 + i].rounds.push(figs);
        }
    }
    let table = compare::build(&sides, "linux");
    let title = format!(
        "bench-compare: testkernel vs Linux {}, {n} alternating round(s), QEMU {} TCG -smp {smp} -m {}M",
        kernel_release.as_deref().unwrap_or("?"),
        qemu_version.as_deref().unwrap_or("?"),
        opts.mem_mib
    );
    let when = utc_now();
    let md_table = compare::markdown(&table);
    let mut md = format!(
        "# {title}\n\n{when}, {:.0} min. {}\n\n{md_table}",
        started.elapsed().as_secs_f64() / 60.0,
        compare::legend(&table)
    );
    md.push('\n');
    md.push_str(&hostprobe::markdown(&probes));
    if !failures.is_empty() {
        md.push_str("\nFailures:\n\n");
        for f in &failures {
            md.push_str(&format!("- {f}\n"));
        }
    }
    write(&out_dir.join("bench-compare.md"), &md)?;
    let extra = [
        ("title", Value::from(title.clone())),
        ("date", Value::from(when)),
        ("linux_kernel", Value::from(kernel_release)),
        ("qemu_version", Value::from(qemu_version)),
        ("smp", Value::from(smp)),
        ("mem_mib", Value::from(opts.mem_mib)),
        ("failures", Value::from(failures.clone())),
        ("host_core_to_core_ns", hostprobe::json(&probes)),
    ];
    write(&out_dir.join("bench-compare.json"), &compare::json(&table, &extra))?;
    write(&out_dir.join("bench-compare.svg"), &compare::svg(&table, &title))?;
    let _ = writeln!(out, "\n{md}");
    let _ = writeln!(
        out,
        "ktest: bench-compare.md, bench-compare.json and bench-compare.svg in {} (rounds in bench-compare/)",
        out_dir.display()
    );
    Ok(if failures.is_empty() { 0 } else { 1 })
}

/// `ktest bench-scale`: the throughput cases alone at each `--smp` CPU count
/// (Linux, then the testkernel), then the explicit `scale` suite and its
/// Linux counterpart with two CPUs and `--scale-mem` MiB.
pub fn run_scale(opts: &Options, out: &mut dyn Write, tty: bool) -> Result<i32, Error> {
    let inputs = if opts.no_linux { None } else { Some(linux::inputs(opts)?) };
    let out_dir = out_dir(opts)?;
    let dir = out_dir.join("bench-scale");
    mkdir(&dir)?;
    build_ours(opts)?;
    let mut failures: Vec<String> = Vec::new();
    let mut runs: Vec<(String, u32, Vec<Figure>)> = Vec::new();
    let mut linux_scale = Vec::new();
    // Probed right after each boot; a step is one CPU count, then the scale suite.
    let mut probes: Vec<Sample> = Vec::new();
    let mut probe = |step: usize, side: String, out: &mut dyn Write| {
        probes.push(hostprobe::sample(step, side, "bench-scale", out));
    };
    for (step, &smp) in opts.smp.iter().enumerate() {
        if let Some(inputs) = &inputs {
            let mut console = Console::new(&mut *out, tty, opts.quiet);
            console.line(&format!("==== bench-scale: throughput, {smp} CPU(s): Linux ===="));
            let lb = linux::boot(
                opts,
                inputs,
                smp,
                opts.mem_mib,
                "tput",
                "",
                &dir.join(format!("linux-smp{smp}")),
                &mut console,
            )?;
            if !lb.boot.passed() {
                failures.push(format!("Linux, {smp} CPUs: {}", lb.boot.failures.join("; ")));
            }
            runs.push(("linux".into(), smp, figures_of(&lb.boot.ktap.benches)));
            drop(console);
            probe(step + 1, format!("linux-smp{smp}"), &mut *out);
        }
        let _ = writeln!(out, "==== bench-scale: throughput, {smp} CPU(s): testkernel ====");
        let o = ours_options(opts, smp, opts.mem_mib, "scale_tput", dir.join(format!("ours-smp{smp}")));
        let (figs, failure) = ours_round(&o, out, tty)?;
        probe(step + 1, format!("ours-smp{smp}"), &mut *out);
        if let Some(f) = failure {
            failures.push(format!("ours, {smp} CPUs: {f}"));
        }
        runs.push(("ours".into(), smp, figs));
    }
    let last = opts.smp.len() + 1;
    if let Some(inputs) = &inputs {
        let mut console = Console::new(&mut *out, tty, opts.quiet);
        console.line("==== bench-scale: the scale suite: Linux ====");
        let lb = linux::boot(opts, inputs, 2, opts.scale_mem_mib, "scale", "", &dir.join("linux-scale"), &mut console)?;
        if !lb.boot.passed() {
            failures.push(format!("Linux, scale set: {}", lb.boot.failures.join("; ")));
        }
        linux_scale.push(figures_of(&lb.boot.ktap.benches));
        drop(console);
        probe(last, String::from("linux-scale"), &mut *out);
    }
    let _ = writeln!(out, "==== bench-scale: the scale suite: testkernel ====");
    let o = ours_options(opts, 2, opts.scale_mem_mib, "scale", dir.join("ours-scale"));
    let (ours_scale, failure) = ours_round(&o, out, tty)?;
    probe(last, String::from("ours-scale"), &mut *out);
    if let Some(f) = failure {
        failures.push(format!("ours, scale suite: {f}"));
    }
    let series = compare::scale_series(&runs);
    let mut growth_in = vec![("ours".to_string(), ours_scale.clone())];
    let mut sides = vec![Side { name: "ours".into(), rounds: vec![ours_scale] }];
    if inputs.is_some() {
        growth_in.push(("linux".to_string(), linux_scale.first().cloned().unwrap_or_default()));
        sides.push(Side { name: "linux".into(), rounds: linux_scale });
    }
    let growth = compare::growth_series(&growth_in);
    let table = compare::build(&sides, if inputs.is_some() { "linux" } else { "ours" });
    let when = utc_now();
    let cpus: Vec<String> = opts.smp.iter().map(u32::to_string).collect();
    let mut md = format!(
        "# bench-scale, {when}\n\nThroughput (items/s per CPU; QEMU TCG, {} MiB; CPUs {}):\n\n{}\n\
         The scale suite (one boot each, -smp 2, {} MiB). {}\n\n{}\n\
         Growth with the load (the median at load N ÷ the median at the smallest load; 1.0 = flat):\n\n{}",
        opts.mem_mib,
        cpus.join(", "),
        compare::scale_markdown(&series, "CPUs"),
        opts.scale_mem_mib,
        compare::legend(&table),
        compare::markdown(&table),
        compare::scale_markdown(&growth, "load N")
    );
    md.push('\n');
    md.push_str(&hostprobe::markdown(&probes));
    if !failures.is_empty() {
        md.push_str("\nFailures:\n\n");
        for f in &failures {
            md.push_str(&format!("- {f}\n"));
        }
    }
    write(&out_dir.join("bench-scale.md"), &md)?;
    let series_json: Vec<Value> = series
        .iter()
        .map(|(b, s, p)| {
            let pts: Vec<Value> =
                p.iter().map(|(c, v)| serde_json::json!({"cpus": c, "items_per_s_per_cpu": v})).collect();
            serde_json::json!({"name": b, "side": s, "points": pts})
        })
        .collect();
    let growth_json: Vec<Value> = growth
        .iter()
        .map(|(b, s, p)| {
            let pts: Vec<Value> = p.iter().map(|(n, v)| serde_json::json!({"load": n, "relative": v})).collect();
            serde_json::json!({"family": b, "side": s, "points": pts})
        })
        .collect();
    let extra = [
        ("date", Value::from(when)),
        ("throughput_per_cpu", Value::from(series_json)),
        ("growth", Value::from(growth_json)),
        ("failures", Value::from(failures.clone())),
        ("host_core_to_core_ns", hostprobe::json(&probes)),
    ];
    write(&out_dir.join("bench-scale.json"), &compare::json(&table, &extra))?;
    write(
        &out_dir.join("bench-scale.svg"),
        &compare::line_svg(
            &series,
            "bench-scale: workqueue throughput per CPU",
            "items/s per CPU against the CPU count (log₂); Linux dashed",
        ),
    )?;
    write(
        &out_dir.join("bench-scale-growth.svg"),
        &compare::line_svg(
            &growth,
            "bench-scale: cost against the load",
            "median at load N ÷ median at the smallest load, N on a log₂ axis; 1.0 = flat; Linux dashed",
        ),
    )?;
    if inputs.is_some() {
        write(
            &out_dir.join("bench-scale-ratios.svg"),
            &compare::svg(&table, "bench-scale: the scale suite against Linux"),
        )?;
    }
    let _ = writeln!(out, "\n{md}");
    let _ = writeln!(out, "ktest: bench-scale.md, bench-scale.json and bench-scale*.svg in {}", out_dir.display());
    Ok(if failures.is_empty() { 0 } else { 1 })
}
