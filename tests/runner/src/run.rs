//! Orchestration: build the kernel, boot every configuration, echo, report.

use crate::Error;
use crate::cli::Options;
use crate::disks::{self, BootDisks};
use crate::ktap::{Line, Parser, Summary};
use crate::qemu::{self, Event, Exit, QemuConfig};
use crate::report::{self, BootResult, RunInfo};
use crate::restart::{self, Phase};
use crate::symbolize::Symbolizer;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Terminal output: echoed lines plus, on a terminal, a progress line redrawn with `\r`.
pub struct Console<'a> {
    out: &'a mut dyn Write,
    tty: bool,
    quiet: bool,
    status: String,
}

impl<'a> Console<'a> {
    /// `tty` enables the redrawn progress line; `quiet` limits echo to failures.
    pub fn new(out: &'a mut dyn Write, tty: bool, quiet: bool) -> Self {
        Console { out, tty, quiet, status: String::new() }
    }

    /// Whether only failures are echoed.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Print a whole line (above the progress line on a terminal).
    pub fn line(&mut self, text: &str) {
        if self.tty && !self.status.is_empty() {
            let _ = write!(self.out, "\r\x1b[2K{text}\n{}", self.status);
        } else {
            let _ = writeln!(self.out, "{text}");
        }
        let _ = self.out.flush();
    }

    /// Replace the progress line (terminal only; ignored otherwise).
    pub fn progress(&mut self, text: String) {
        if self.tty && text != self.status {
            self.status = text;
            let _ = write!(self.out, "\r\x1b[2K{}", self.status);
            let _ = self.out.flush();
        }
    }

    /// Remove the progress line.
    pub fn clear_progress(&mut self) {
        if self.tty && !self.status.is_empty() {
            self.status.clear();
            let _ = write!(self.out, "\r\x1b[2K");
            let _ = self.out.flush();
        }
    }

    /// The underlying writer (for the summary).
    pub fn writer(&mut self) -> &mut dyn Write {
        self.clear_progress();
        self.out
    }
}

/// What one boot produced.
#[derive(Debug, Clone)]
pub struct BootOutcome {
    /// How the emulator ended.
    pub exit: Exit,
    /// The emulator's stderr.
    pub stderr: String,
    /// Raw serial output, one line per received line.
    pub raw: String,
    /// Parsed KTAP.
    pub ktap: Summary,
    /// Wall-clock duration.
    pub elapsed: Duration,
}

/// Decides which lines `--quiet` shows: failures with the diagnostics before them,
/// and panic/exception blocks.
#[derive(Default)]
struct QuietFilter {
    pending: Vec<String>,
    in_fault: bool,
}

impl QuietFilter {
    fn filter(&mut self, kind: &Line, text: String, failed: bool) -> Vec<String> {
        match kind {
            Line::Result(_) if failed => {
                self.in_fault = false;
                let mut out = std::mem::take(&mut self.pending);
                out.push(text);
                out
            }
            Line::Result(_) | Line::Version | Line::Plan(_) | Line::Subtest(_) => {
                self.in_fault = false;
                self.pending.clear();
                Vec::new()
            }
            Line::Panic(_) | Line::Exception(_) | Line::GuestError(_) => {
                self.in_fault = true;
                let mut out = std::mem::take(&mut self.pending);
                out.push(text);
                out
            }
            Line::Backtrace | Line::Frame(_) | Line::Registers(_) => vec![text],
            Line::Diagnostic if self.in_fault => vec![text],
            Line::Diagnostic => {
                if self.pending.len() < 64 {
                    self.pending.push(text);
                }
                Vec::new()
            }
            Line::Bench(_) | Line::Torture(_) | Line::Blank | Line::Garbage => Vec::new(),
        }
    }
}

/// Append the symbol of a frame address or of `rip=` to an echoed line.
pub fn annotate(line: &str, kind: &Line, sym: Option<&Symbolizer>) -> String {
    let described = match (kind, sym) {
        (Line::Frame(a), Some(s)) => s.describe(*a).map(|d| format!("{line} {d}")),
        (Line::Registers(a), Some(s)) => s.describe(*a).map(|d| format!("{line} (rip: {d})")),
        (Line::Exception(text), Some(s)) => {
            crate::ktap::rip_of(text).and_then(|a| s.describe(a)).map(|d| format!("{line} (rip: {d})"))
        }
        _ => None,
    };
    described.unwrap_or_else(|| line.to_string())
}

/// Boot once: run `cmd` (QEMU, or any stand-in) with the time-out, parse and echo
/// its output as it arrives. `label` prefixes the progress line.
pub fn run_boot(
    cmd: Command,
    timeout: Duration,
    sym: Option<&Symbolizer>,
    console: &mut Console<'_>,
    label: &str,
) -> std::io::Result<BootOutcome> {
    run_boot_input(cmd, timeout, sym, console, label, None)
}

/// [`run_boot`], typing `input` on the serial console when its time comes.
pub fn run_boot_input(
    cmd: Command,
    timeout: Duration,
    sym: Option<&Symbolizer>,
    console: &mut Console<'_>,
    label: &str,
    input: Option<&qemu::ConsoleInput>,
) -> std::io::Result<BootOutcome> {
    let start = Instant::now();
    let mut parser = Parser::new();
    let mut raw = String::new();
    let mut quiet = QuietFilter::default();
    let mut on_event = |ev: Event<'_>| {
        if let Event::Line(line) = ev {
            raw.push_str(line);
            raw.push('\n');
            let kind = parser.feed(line);
            let failed = match kind {
                Line::Result(i) => parser.summary().results[i].status.is_failure(),
                _ => false,
            };
            let text = annotate(line, &kind, sym);
            // The JSON halves of a trace dump go to trace.json and hist.json,
            // not the terminal (the text halves are echoed).
            let dump_json = line.contains("# trace-json: ") || line.contains("# hist-json: ");
            if dump_json {
                // Not echoed.
            } else if console.quiet() {
                for l in quiet.filter(&kind, text, failed) {
                    console.line(&l);
                }
            } else {
                console.line(&text);
            }
        }
        let (done, plan, suite) = parser.progress();
        let suites = match plan {
            Some(n) => format!("suite {}/{n}", (done + 1).min(n)),
            None => "starting".to_string(),
        };
        let suite = suite.map(|s| format!(" {s}")).unwrap_or_default();
        let secs = start.elapsed().as_secs();
        console.progress(format!("{label} {suites}{suite} {secs} s"));
    };
    let run = qemu::run_emulator_input(cmd, timeout, input, &mut on_event)?;
    console.clear_progress();
    Ok(BootOutcome { exit: run.exit, stderr: run.stderr, raw, ktap: parser.finish(), elapsed: run.elapsed })
}

/// The guest command line: runner keys first, `append` words override keys they repeat.
pub fn build_cmdline(tests: &str, seed: u64, preempt: &str, bench: &str, append: &[String]) -> String {
    let mut words: Vec<String> =
        vec![format!("tests={tests}"), format!("seed={seed}"), format!("preempt={preempt}"), format!("bench={bench}")];
    for w in append {
        let key = w.split_once('=').map(|(k, _)| k);
        let existing = key.and_then(|k| words.iter().position(|x| x.split_once('=').map(|(a, _)| a) == Some(k)));
        match existing {
            Some(i) => words[i] = w.clone(),
            None => words.push(w.clone()),
        }
    }
    words.join(" ")
}

/// The repository root: two levels above this package, or the nearest ancestor of
/// the current directory that has a `testkernel` directory and a `Cargo.toml`.
pub fn repo_root() -> Result<PathBuf, Error> {
    let is_repo = |p: &Path| p.join("Cargo.toml").is_file() && p.join("testkernel").is_dir();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Ok(m) = manifest.canonicalize()
        && let Some(root) = m.parent().and_then(Path::parent).filter(|r| is_repo(r))
    {
        return Ok(root.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| Error::env(format!("ktest: no current directory: {e}")))?;
    cwd.ancestors().find(|p| is_repo(p)).map(Path::to_path_buf).ok_or_else(|| {
        Error::env("ktest: cannot find the repository root (a directory with Cargo.toml and testkernel/)")
    })
}

/// Where `cargo build --release` in `testkernel/` puts the kernel ELF.
pub fn default_kernel_path(repo: &Path) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo.join("testkernel").join(dir),
        None => repo.join("target"),
    };
    target.join("x86_64-unknown-linux-gnu/release/testkernel")
}

/// Build the kernel with `cargo build --release` in `<repo>/testkernel`.
pub fn build_kernel(repo: &Path) -> Result<(), Error> {
    let dir = repo.join("testkernel");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // RUSTFLAGS from the environment would replace the kernel's own flags.
    let status = Command::new(&cargo)
        .args(["build", "--release"])
        .current_dir(&dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .map_err(|e| Error::env(format!("ktest: cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(Error::env(format!(
            "ktest: kernel build failed: 'cargo build --release' in {} exited with {status}",
            dir.display()
        )));
    }
    Ok(())
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

fn write_file(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|e| Error::env(format!("ktest: cannot write {}: {e}", path.display())))
}

/// What every boot of one invocation shares.
struct Session {
    qemu_path: PathBuf,
    kernel: PathBuf,
    out_dir: PathBuf,
    seed: u64,
    sym: Option<Symbolizer>,
    info: RunInfo,
}

/// Find the emulator, build (or find) the kernel, make the output directory,
/// pick the seed and load the kernel's symbols.
fn start(opts: &Options, console: &mut Console<'_>) -> Result<Session, Error> {
    let qemu_path = qemu::find_emulator(&opts.qemu)?;
    let kernel = match &opts.kernel {
        Some(k) => k.clone(),
        None => {
            let repo = repo_root()?;
            if !opts.no_build {
                build_kernel(&repo)?;
            }
            default_kernel_path(&repo)
        }
    };
    if !kernel.is_file() {
        let hint = if opts.no_build { " (drop --no-build to build it)" } else { "" };
        let kernel = kernel.display();
        return Err(Error::env(format!("ktest: kernel ELF not found at {kernel}{hint}")));
    }
    let out_dir = match &opts.out {
        Some(d) => d.clone(),
        None => repo_root()?.join("target/ktest"),
    };
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| Error::env(format!("ktest: cannot create {}: {e}", out_dir.display())))?;

    let seed = opts.seed.unwrap_or_else(random_seed);
    if !opts.quiet {
        console.line(&format!("ktest: seed={seed} (rerun with --seed {seed})"));
    }
    // With an initrd that is itself a kernel ELF (a Redox kernel booted through the PVH shim),
    // the frames a backtrace or a stack dump prints are that kernel's: symbolize from it. The
    // shim only runs before it.
    let sym_from = match &opts.initrd {
        Some(initrd) if Symbolizer::from_file(initrd).is_ok() => initrd.clone(),
        _ => kernel.clone(),
    };
    let sym = match Symbolizer::from_file(&sym_from) {
        Ok(s) => Some(s),
        Err(e) => {
            console.line(&format!("ktest: warning: backtraces stay unsymbolized: {e}"));
            None
        }
    };
    let info = RunInfo {
        seed,
        accel: opts.accel.name().to_string(),
        qemu_version: qemu::qemu_version(&qemu_path),
        kernel: kernel.display().to_string(),
    };
    Ok(Session { qemu_path, kernel, out_dir, seed, sym, info })
}

/// The configurations of `opts`: every CPU count with every preemption model.
fn configs(opts: &Options) -> Vec<(u32, &str)> {
    opts.smp.iter().flat_map(|&n| opts.preempt.iter().map(move |p| (n, p.as_str()))).collect()
}

/// The words the runner adds to the guest command line of a boot with
/// `smp` CPUs, the user's `--append` words last. The guest checks that it
/// started as many CPUs as QEMU was told, and in the topology it was told.
fn machine_words(opts: &Options, smp: u32) -> Vec<String> {
    std::iter::once(format!("expect_cpus={smp}"))
        .chain(opts.topology.map(|t| t.guest_word()))
        .chain(opts.numa_nodes.map(|n| format!("expect_numa_nodes={n}")))
        .chain(opts.append.iter().cloned())
        .collect()
}

/// One boot to make.
struct BootPlan<'a> {
    /// Prefix of the boot's console lines (`[1/2] smp=2 preempt=full`).
    label: &'a str,
    smp: u32,
    preempt: &'a str,
    cmdline: String,
    disks: Option<&'a BootDisks>,
    /// File name of the serial log in the output directory.
    log: String,
    phase: Option<String>,
}

/// Make the boot `plan`: run QEMU, echo and log its output, then judge it:
/// QEMU's exit and the KTAP output, the `block-image` lines against the
/// images, and whatever `more` finds in the outcome.
fn boot(
    s: &Session,
    opts: &Options,
    console: &mut Console<'_>,
    plan: BootPlan<'_>,
    more: impl FnOnce(&BootOutcome, &disks::ImageCheck) -> Vec<String>,
) -> Result<BootResult, Error> {
    let label = plan.label;
    let extra: Vec<String> =
        plan.disks.iter().flat_map(|d| d.qemu_args()).chain(opts.qemu_args.iter().cloned()).collect();
    let cmd = qemu::qemu_command(&QemuConfig {
        qemu: &s.qemu_path,
        kernel: &s.kernel,
        cmdline: &plan.cmdline,
        smp: plan.smp,
        topology: opts.topology,
        numa_nodes: opts.numa_nodes,
        mem_mib: opts.mem_mib,
        accel: opts.accel,
        initrd: opts.initrd.as_deref(),
        extra: &extra,
        serial_monitor: opts.sysrq.is_some(),
    });
    if !opts.quiet {
        let kernel = s.kernel.display();
        console.line(&format!("ktest: {label}: booting {kernel} with \"{}\"", plan.cmdline));
    }
    let timeout = Duration::from_secs(opts.timeout_secs);
    let outcome = run_boot_input(cmd, timeout, s.sym.as_ref(), console, label, opts.sysrq.as_ref())
        .map_err(|e| Error::env(format!("ktest: cannot start {}: {e}", s.qemu_path.display())))?;
    write_file(&s.out_dir.join(&plan.log), &outcome.raw)?;
    let mut failures = report::judge(outcome.exit, &outcome.ktap, opts.timeout_secs);
    let images = disks::check_images(&outcome.raw, plan.disks);
    failures.extend(images.failures.iter().cloned());
    failures.extend(more(&outcome, &images));
    let trace = match crate::trace::extract(&outcome.raw) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            failures.push(e);
            None
        }
        None => None,
    };
    for line in outcome.stderr.lines().filter(|l| !l.trim().is_empty()) {
        if !opts.quiet || !failures.is_empty() {
            console.line(&format!("qemu: {line}"));
        }
    }
    if images.checked > 0 && (!opts.quiet || !failures.is_empty()) {
        console.line(&format!("ktest: block-image: {} ranges checked", images.checked));
    }
    let verdict = if failures.is_empty() { "PASS" } else { "FAIL" };
    if !opts.quiet || !failures.is_empty() {
        let secs = outcome.elapsed.as_secs_f64();
        console.line(&format!("ktest: {label}: {verdict} ({}, {secs:.1} s)", outcome.exit));
    }
    for f in &failures {
        console.line(&format!("ktest: {label}: {f}"));
    }
    Ok(BootResult {
        smp: plan.smp,
        preempt: plan.preempt.to_string(),
        cmdline: plan.cmdline,
        exit: outcome.exit,
        elapsed: outcome.elapsed,
        ktap: outcome.ktap,
        failures,
        log: plan.log,
        phase: plan.phase,
        trace,
    })
}

/// Fresh disk images for the boots tagged `tag`.
fn create_disks(s: &Session, tag: &str) -> Result<BootDisks, Error> {
    BootDisks::create(&s.out_dir, tag)
        .map_err(|e| Error::env(format!("ktest: cannot write disk images in {}: {e}", s.out_dir.display())))
}

/// Images stay for a look after a failed boot; a passing one leaves none.
fn dispose_disks(s: &Session, console: &mut Console<'_>, disks: &BootDisks, passed: bool, label: &str, tag: &str) {
    if passed {
        if let Err(e) = disks.remove() {
            console.line(&format!("ktest: warning: cannot remove the disk images of {tag}: {e}"));
        }
    } else {
        let dir = s.out_dir.display();
        console.line(&format!("ktest: {label}: disk images kept in {dir} (disk-*-{tag}.img)"));
    }
}

/// Write the reports, print the summary; the exit status (0 pass, 1 fail).
fn finish(s: &Session, opts: &Options, console: &mut Console<'_>, boots: &[BootResult]) -> Result<i32, Error> {
    write_file(&s.out_dir.join("results.json"), &report::results_json(&s.info, boots))?;
    let benches = report::bench_objects(&s.info, boots);
    if opts.mode == crate::cli::Mode::Bench || !benches.is_empty() {
        let text = serde_json::to_string_pretty(&benches).expect("serializable") + "\n";
        write_file(&s.out_dir.join("bench.json"), &text)?;
    }
    if !opts.quiet {
        console.line(&format!("ktest: reports in {}", s.out_dir.display()));
    }
    let dumps: Vec<_> = boots
        .iter()
        .filter_map(|b| b.trace.as_ref().map(|d| (crate::trace::BootTag { smp: b.smp, preempt: &b.preempt }, d)))
        .collect();
    let trace_line = crate::trace::finish(&s.out_dir, &dumps)
        .map_err(|e| Error::env(format!("ktest: cannot write the trace reports in {}: {e}", s.out_dir.display())))?;
    let mut watchdogs = Vec::new();
    let mut reports = Vec::new();
    for b in boots.iter() {
        let raw = std::fs::read_to_string(s.out_dir.join(&b.log)).unwrap_or_default();
        let r = crate::watchdogs::scan(&raw);
        watchdogs.push(crate::watchdogs::json(b.smp, &b.preempt, &r));
        reports.push(r);
    }
    let text = serde_json::to_string_pretty(&watchdogs).expect("serializable") + "\n";
    write_file(&s.out_dir.join("watchdogs.json"), &text)?;
    let _ = report::print_summary(console.writer(), s.seed, boots);
    if let Some(l) = trace_line {
        console.line(&l);
    }
    if let Some(l) = crate::watchdogs::summary(&reports.iter().collect::<Vec<_>>()) {
        console.line(&l);
    }
    Ok(if boots.iter().all(BootResult::passed) { 0 } else { 1 })
}

/// Run every configuration of `opts`; returns the exit status (0 pass, 1 fail).
pub fn run(opts: &Options, out: &mut dyn Write, tty: bool) -> Result<i32, Error> {
    let mut console = Console::new(out, tty, opts.quiet);
    let s = start(opts, &mut console)?;
    let configs = configs(opts);
    let mut boots = Vec::new();
    for (i, &(smp, preempt)) in configs.iter().enumerate() {
        let label = format!("[{}/{}] smp={smp} preempt={preempt}", i + 1, configs.len());
        let mut cmdline = build_cmdline(&opts.tests, s.seed, preempt, opts.bench_mode(), &machine_words(opts, smp));
        let tag = format!("smp{smp}-{preempt}");
        let disks = if disks::block_selected(&cmdline) {
            let d = create_disks(&s, &tag)?;
            // The guest's block suite then fails, not skips, when it cannot find them.
            cmdline.push_str(" expect_disks=1");
            Some(d)
        } else {
            None
        };
        let log = format!("ktap-{tag}.txt");
        let plan = BootPlan { label: &label, smp, preempt, cmdline, disks: disks.as_ref(), log, phase: None };
        let b = boot(&s, opts, &mut console, plan, |_, _| Vec::new())?;
        if let Some(d) = &disks {
            dispose_disks(&s, &mut console, d, b.passed(), &label, &tag);
        }
        boots.push(b);
    }
    finish(&s, opts, &mut console, &boots)
}

/// `ktest restart`: for each configuration, fresh disk images, then two
/// boots on them: `restart=write` (the `restart` suite writes a pattern
/// seeded with the run's seed through the page cache and syncs it), then,
/// if that boot passed, `restart=verify` (it reads the pattern back). Each
/// boot is judged as in [`run`], its images checked, and its phase's case
/// must have passed ([`restart::failures`]). Returns the exit status.
pub fn restart(opts: &Options, out: &mut dyn Write, tty: bool) -> Result<i32, Error> {
    let mut console = Console::new(out, tty, opts.quiet);
    let s = start(opts, &mut console)?;
    let configs = configs(opts);
    let mut boots: Vec<BootResult> = Vec::new();
    for (i, &(smp, preempt)) in configs.iter().enumerate() {
        let tag = format!("smp{smp}-{preempt}");
        let disks = create_disks(&s, &tag)?;
        let mut all_passed = true;
        for (n, phase) in Phase::ALL.into_iter().enumerate() {
            let label = format!("[{}/{}] smp={smp} preempt={preempt} boot {}/2 ({phase})", i + 1, configs.len(), n + 1);
            if !all_passed {
                console.line(&format!("ktest: {label}: not booted: the boot before it failed"));
                break;
            }
            let mut words = machine_words(opts, smp);
            words.extend(phase.guest_words(s.seed));
            let mut cmdline = build_cmdline(&opts.tests, s.seed, preempt, opts.bench_mode(), &words);
            cmdline.push_str(" expect_disks=1");
            let log = format!("ktap-{tag}-{}.txt", phase.name());
            let phase_name = Some(phase.name().to_string());
            let plan = BootPlan { label: &label, smp, preempt, cmdline, disks: Some(&disks), log, phase: phase_name };
            let b = boot(&s, opts, &mut console, plan, |o, images| restart::failures(phase, &o.ktap, images))?;
            all_passed = b.passed();
            boots.push(b);
        }
        let label = format!("[{}/{}] smp={smp} preempt={preempt}", i + 1, configs.len());
        dispose_disks(&s, &mut console, &disks, all_passed, &label, &tag);
    }
    finish(&s, opts, &mut console, &boots)
}
