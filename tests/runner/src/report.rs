//! Verdicts, JSON reports and the final summary.

use crate::ktap::{Status, Summary, TestResult};
use crate::qemu::{EXIT_FAIL, EXIT_PASS, Exit};
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::Write;
use std::time::Duration;

/// Everything known about one boot (one configuration).
#[derive(Debug, Clone)]
pub struct BootResult {
    /// Number of CPUs.
    pub smp: u32,
    /// Preemption model.
    pub preempt: String,
    /// Guest command line.
    pub cmdline: String,
    /// How QEMU ended.
    pub exit: Exit,
    /// Wall-clock duration.
    pub elapsed: Duration,
    /// Parsed KTAP output.
    pub ktap: Summary,
    /// Reasons the boot failed (empty when it passed).
    pub failures: Vec<String>,
    /// File name of the raw serial log inside the output directory.
    pub log: String,
    /// Which boot of `ktest restart` this was (`write` or `verify`); `None`
    /// for every other boot.
    pub phase: Option<String>,
    /// The trace and histogram dump the guest printed (`trace_dump=`).
    pub trace: Option<crate::trace::Dump>,
}

impl BootResult {
    /// Whether the boot passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// (passed, failed, skipped) counts; a failed boot counts at least one failure,
    /// and each missing result counts as one.
    pub fn counts(&self) -> (usize, usize, usize) {
        let (p, f, s) = self.ktap.counts();
        let missing: usize = self.ktap.problems.iter().map(|p| p.weight).sum();
        let mut failed = f + missing;
        if failed == 0 && !self.passed() {
            failed = 1;
        }
        (p, failed, s)
    }
}

/// Why a boot failed, from QEMU's exit and the KTAP output; empty means pass.
pub fn judge(exit: Exit, ktap: &Summary, timeout_secs: u64) -> Vec<String> {
    let mut out = Vec::new();
    let failed: Vec<&TestResult> = ktap.leaves().filter(|r| r.status.is_failure()).collect();
    if !failed.is_empty() {
        out.push(format!("{} test(s) failed", failed.len()));
    }
    let suites_failed: Vec<&TestResult> = ktap.results.iter().filter(|r| !r.leaf && r.status.is_failure()).collect();
    // A suite's own reason (the harness's leak check, docs/leaks.md) is
    // named; a suite that only sums up failed cases is counted.
    let unexplained = suites_failed.iter().filter(|r| r.reason.is_none()).count();
    if failed.is_empty() && unexplained > 0 {
        out.push(format!("{unexplained} suite(s) reported not ok"));
    }
    for r in suites_failed.iter().filter(|r| r.reason.is_some()) {
        out.push(format!("suite {} not ok: {}", r.name, r.reason.as_deref().unwrap_or_default()));
    }
    match exit {
        Exit::TimedOut => out.push(format!("TIMEOUT: whole run exceeded {timeout_secs} s")),
        Exit::Code(EXIT_PASS) if ktap.has_failure() => {
            out.push(format!("guest reported pass (QEMU exit {EXIT_PASS}) but its KTAP output shows failures"))
        }
        Exit::Code(EXIT_PASS) => {}
        Exit::Code(EXIT_FAIL) if !ktap.has_failure() => {
            out.push(format!("guest reported failure (QEMU exit {EXIT_FAIL}) but its KTAP output shows none"))
        }
        Exit::Code(EXIT_FAIL) => out.push(format!("guest reported failure (QEMU exit {EXIT_FAIL})")),
        Exit::Code(0) => out.push("triple fault or reset (QEMU exit 0)".into()),
        Exit::Code(n) => out.push(format!("unexpected QEMU exit {n}")),
        Exit::Signal(s) => out.push(format!("QEMU killed by signal {s}")),
    }
    out.extend(ktap.problems.iter().map(|p| p.message.clone()));
    // A torture case fails itself on a violation; its figures say so too.
    for t in &ktap.tortures {
        let v = field_u64(t, "violations");
        if v > 0 {
            out.push(format!("torture {}: {v} invariant violation(s)", t.name));
        }
    }
    out
}

/// Run-wide facts recorded in the JSON reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Seed passed to the guest.
    pub seed: u64,
    /// Accelerator name (`tcg` or `kvm`).
    pub accel: String,
    /// QEMU version, if it could be read.
    pub qemu_version: Option<String>,
    /// Kernel ELF path.
    pub kernel: String,
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    smp: u32,
    preempt: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<&'a str>,
    cmdline: &'a str,
    exit: String,
    passed: bool,
    elapsed_s: f64,
    log: &'a str,
    failures: &'a [String],
    tests: Vec<&'a TestResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    torture: Vec<Value>,
}

#[derive(Serialize)]
struct ResultsJson<'a> {
    #[serde(flatten)]
    info: &'a RunInfo,
    passed: usize,
    failed: usize,
    skipped: usize,
    configs: Vec<ConfigJson<'a>>,
}

/// Totals over all boots: (passed, failed, skipped).
pub fn totals(boots: &[BootResult]) -> (usize, usize, usize) {
    boots.iter().map(BootResult::counts).fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2))
}

/// `results.json`: every configuration with its leaf tests.
pub fn results_json(info: &RunInfo, boots: &[BootResult]) -> String {
    let (passed, failed, skipped) = totals(boots);
    let configs = boots
        .iter()
        .map(|b| ConfigJson {
            smp: b.smp,
            preempt: &b.preempt,
            phase: b.phase.as_deref(),
            cmdline: &b.cmdline,
            exit: b.exit.to_string(),
            passed: b.passed(),
            elapsed_s: b.elapsed.as_secs_f64(),
            log: &b.log,
            failures: &b.failures,
            tests: b.ktap.leaves().collect(),
            torture: b.ktap.tortures.iter().map(figures_object).collect(),
        })
        .collect();
    let doc = ResultsJson { info, passed, failed, skipped, configs };
    serde_json::to_string_pretty(&doc).expect("serializable") + "\n"
}

/// The objects of `bench.json`: one per `# bench:` line of every boot.
pub fn bench_objects(info: &RunInfo, boots: &[BootResult]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in boots {
        for bench in &b.ktap.benches {
            let mut obj = Map::new();
            obj.insert("name".into(), Value::from(bench.name.clone()));
            for (k, v) in &bench.fields {
                obj.insert(k.clone(), number_or_string(v));
            }
            obj.insert("smp".into(), Value::from(b.smp));
            obj.insert("preempt".into(), Value::from(b.preempt.clone()));
            obj.insert("accel".into(), Value::from(info.accel.clone()));
            if let Some(v) = &info.qemu_version {
                obj.insert("qemu_version".into(), Value::from(v.clone()));
            }
            out.push(Value::Object(obj));
        }
    }
    out
}

/// One torture figures line as a JSON object: `case` and its fields.
fn figures_object(t: &crate::ktap::Bench) -> Value {
    let mut obj = Map::new();
    obj.insert("case".into(), Value::from(t.name.clone()));
    for (k, v) in &t.fields {
        obj.insert(k.clone(), number_or_string(v));
    }
    Value::Object(obj)
}

/// The value of `key` in a figures line, as a number (0 when absent).
fn field_u64(t: &crate::ktap::Bench, key: &str) -> u64 {
    t.fields.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}

/// The torture summary of one boot: per case its violations, faults and
/// seconds, then the figures, as `torture CASE k=v ...`.
fn torture_lines(b: &BootResult) -> Vec<String> {
    b.ktap
        .tortures
        .iter()
        .map(|t| {
            let fields: Vec<String> = t.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("torture {} {}", t.name, fields.join(" "))
        })
        .collect()
}

/// Totals over every boot's torture lines: (case runs, violations, faults injected).
pub fn torture_totals(boots: &[BootResult]) -> (usize, u64, u64) {
    boots
        .iter()
        .flat_map(|b| b.ktap.tortures.iter())
        .fold((0, 0, 0), |(n, v, f), t| (n + 1, v + field_u64(t, "violations"), f + field_u64(t, "faults")))
}

fn number_or_string(v: &str) -> Value {
    if let Ok(n) = v.parse::<u64>() {
        Value::from(n)
    } else if let Some(n) = v.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
        Value::Number(n)
    } else {
        Value::from(v)
    }
}

/// Print the per-configuration and per-suite summary, ending with the skip line and
/// the final `N passed, N failed` line.
pub fn print_summary(out: &mut dyn Write, seed: u64, boots: &[BootResult]) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(out, "==== ktest summary (seed {seed}) ====")?;
    for b in boots {
        let (p, f, s) = b.counts();
        let phase = b.phase.as_deref().map(|p| format!(" restart={p}")).unwrap_or_default();
        writeln!(
            out,
            "smp={} preempt={}{phase}: {} ({}, {:.1} s): {p} passed, {f} failed, {s} skipped",
            b.smp,
            b.preempt,
            if b.passed() { "PASS" } else { "FAIL" },
            b.exit,
            b.elapsed.as_secs_f64()
        )?;
        for (suite, tests) in suites(&b.ktap) {
            let count = |pred: fn(Status) -> bool| tests.iter().filter(|t| pred(t.status)).count();
            writeln!(
                out,
                "    {suite}: {} passed, {} failed, {} skipped",
                count(|s| s == Status::Ok),
                count(Status::is_failure),
                count(|s| s == Status::Skip)
            )?;
            for t in tests.iter().filter(|t| t.status.is_failure()) {
                let reason = t.reason.as_deref().map(|r| format!(" # {r}")).unwrap_or_default();
                writeln!(out, "        not ok {}{reason}", t.name)?;
            }
        }
        for bench in &b.ktap.benches {
            let fields: Vec<String> = bench.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(out, "    bench {} {}", bench.name, fields.join(" "))?;
        }
        for line in torture_lines(b) {
            writeln!(out, "    {line}")?;
        }
        for f in &b.failures {
            writeln!(out, "    FAIL: {f}")?;
        }
    }
    let benches: usize = boots.iter().map(|b| b.ktap.benches.len()).sum();
    if benches > 0 {
        writeln!(out, "{benches} benchmark figure(s) recorded")?;
    }
    let (runs, violations, faults) = torture_totals(boots);
    if runs > 0 {
        writeln!(out, "torture: {runs} case run(s), {violations} invariant violation(s), {faults} fault(s) injected")?;
    }
    let (p, f, s) = totals(boots);
    writeln!(out, "{s} skipped")?;
    writeln!(out, "{p} passed, {f} failed")?;
    out.flush()
}

/// Leaf tests grouped by suite, suites in order of first appearance.
fn suites(ktap: &Summary) -> Vec<(&str, Vec<&TestResult>)> {
    let mut out: Vec<(&str, Vec<&TestResult>)> = Vec::new();
    for r in ktap.leaves() {
        match out.iter_mut().find(|(s, _)| *s == r.suite) {
            Some((_, v)) => v.push(r),
            None => out.push((&r.suite, vec![r])),
        }
    }
    out
}
