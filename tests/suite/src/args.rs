//! The guest command line (see `docs/guest-protocol.md`): `tests=`, `seed=`,
//! `preempt=`, `bench=`, `timeout=`, `fault=`, `expect_cpus=`, `expect_disks=`, `expect_mem_mib=`,
//! `torture_s=`, `torture_fault=`,
//! `redox_env_check=`, `restart=`, `restart_seed=`, `sysctl.NAME=`, `sysrq=`, `leak_check=`, and
//! the tracing keys `trace_event=`, `trace_buf_size=`, `latency_hist=`, `trace_dump=`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Which benchmark cases run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    /// Tests only (default).
    Skip,
    /// Benchmarks only.
    Only,
    /// Both.
    Also,
}

/// The leak check after every suite (`leak_check=`, `docs/leaks.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakCheck {
    /// Check, and fail a suite that leaks (default).
    On,
    /// Check, and also print each suite's figures (`# leak-check:` lines),
    /// leaking or not.
    Verbose,
    /// Do not check.
    Off,
}

/// Which half of the two-boot restart test this boot is (`restart=`,
/// suite `restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPhase {
    /// `restart=write`: the first boot writes the pattern and syncs it.
    Write,
    /// `restart=verify`: the second boot, on the same images, reads it back.
    Verify,
}

impl RestartPhase {
    /// The value as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RestartPhase::Write => "write",
            RestartPhase::Verify => "verify",
        }
    }
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Suites to run; empty means all.
    pub tests: Vec<String>,
    /// Seed of randomized cases.
    pub seed: u64,
    /// `preempt=full` (true) or `none`.
    pub preempt_full: bool,
    /// Benchmark selection.
    pub bench: BenchMode,
    /// Default per-case watchdog, seconds.
    pub timeout_s: u32,
    /// A fault to cause on purpose (runner self-tests).
    pub fault: Option<String>,
    /// CPUs the runner told QEMU to start, if it says.
    pub expect_cpus: Option<usize>,
    /// `expect_disks=1`: the runner attached the block suite's disks, so a
    /// missing one is a failure, not a skip.
    pub expect_disks: bool,
    /// Seconds each torture case runs (suite `torture`).
    pub torture_s: Option<u64>,
    /// `torture_fault=P`: the torture suite's fault-injection mode, in which
    /// the three `kport::fault` attributes are switched on and off at
    /// random while it runs, each failing `P` percent of eligible calls
    /// while on (0: off, the default).
    pub torture_fault: u8,
    /// Memory (MiB) the runner told QEMU to give the guest, if it says.
    pub expect_mem_mib: Option<u64>,
    /// A token the runner passes through a boot loader's environment, for the
    /// guest to check that it arrived intact (`redox_boot` suite).
    pub redox_env_check: Option<String>,
    /// The phase of the restart test this boot runs, if any.
    pub restart: Option<RestartPhase>,
    /// Seed of the restart test's pattern (`restart_seed=`); both boots
    /// must be given the same one.
    pub restart_seed: Option<u64>,
    /// Linux's `sysctl.NAME=VALUE` words, applied in order when the
    /// harness starts (`kport::sysctl::apply_boot_word`).
    pub sysctl: Vec<String>,
    /// Linux's fault-injection boot words (`fail_page_alloc=`,
    /// `fail_make_request=`, `fail_kthread_create=`: `<interval>,<probability>,<space>,<times>`),
    /// applied when the harness starts (`kport::fault::apply_boot_word`).
    pub fault_inject: Vec<String>,
    /// SysRq keys to act on after the suites (`sysrq=tw`; see
    /// `kthreadd::sysrq`).
    pub sysrq: String,
    /// `trace_event=`: the events to record from the start (bits of
    /// `kport::trace::MASK`; Linux's `set_event` syntax).
    pub trace_event: u64,
    /// `trace_buf_size=`: bytes of trace ring per CPU.
    pub trace_buf_size: Option<usize>,
    /// `latency_hist=`: the histograms to record (`kport::trace::hist` bits).
    pub latency_hist: u64,
    /// `trace_dump=`: what to print at the end of the run.
    pub trace_dump: TraceDump,
    /// `leak_check=`: the leak check after every suite.
    pub leak_check: LeakCheck,
    /// `cases=A,B`: only the cases of the chosen suites whose names contain
    /// one of these (empty: every case), e.g. one benchmark to profile.
    pub cases: Vec<String>,
    /// `repeat=N`: each selected case runs N times in a row (default 1),
    /// e.g. to keep one benchmark running long enough to sample it.
    pub repeat: usize,
}

/// What the harness prints of the trace and histograms at the end of a run
/// (`trace_dump=`), between `# trace-dump: begin` and `# trace-dump: end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceDump {
    /// The records in Linux's text format (`# trace-text:` lines).
    pub text: bool,
    /// The records as JSON (`# trace-json:` lines).
    pub json: bool,
    /// The histograms (`# hist-text:` and `# hist-json:` lines).
    pub hist: bool,
}

impl TraceDump {
    /// Nothing.
    pub const NONE: TraceDump = TraceDump { text: false, json: false, hist: false };

    /// Parse `none`, `all`, or a comma list of `text`, `json`, `hist`.
    pub fn parse(v: &str) -> Result<TraceDump, String> {
        let mut d = TraceDump::NONE;
        for w in v.split(',').filter(|s| !s.is_empty()) {
            match w {
                "none" => {}
                "all" => d = TraceDump { text: true, json: true, hist: true },
                "text" => d.text = true,
                "json" => d.json = true,
                "hist" => d.hist = true,
                _ => return Err(format!("bad value for trace_dump: '{w}' (none, all, text, json, hist)")),
            }
        }
        Ok(d)
    }

    /// Does it print anything?
    pub fn any(&self) -> bool {
        self.text || self.json || self.hist
    }
}

impl Default for Args {
    fn default() -> Self {
        Args {
            tests: Vec::new(),
            seed: 1,
            preempt_full: true,
            bench: BenchMode::Skip,
            timeout_s: DEFAULT_TIMEOUT_S,
            fault: None,
            expect_cpus: None,
            expect_disks: false,
            expect_mem_mib: None,
            redox_env_check: None,
            torture_s: None,
            torture_fault: 0,
            restart: None,
            restart_seed: None,
            sysctl: Vec::new(),
            sysrq: String::new(),
            fault_inject: Vec::new(),
            trace_event: 0,
            trace_buf_size: None,
            latency_hist: 0,
            trace_dump: TraceDump::NONE,
            leak_check: LeakCheck::On,
            cases: Vec::new(),
            repeat: 1,
        }
    }
}

/// Default per-case watchdog: generous, because under TCG several guest CPUs
/// share two host cores and a spinning CPU can delay the others.
pub const DEFAULT_TIMEOUT_S: u32 = 120;

/// Faults the testkernel can cause on purpose.
pub const FAULTS: [&str; 5] = ["page", "stack", "hang", "panic", "lockup"];

fn number<T: core::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("bad number for {key}: '{v}'"))
}

impl Args {
    /// Parse `key=value` words. Unknown keys, bad values and unknown faults
    /// are errors with a message naming them. Words a host kernel consumes
    /// itself can be passed in `ignore` (keys only).
    pub fn parse(cmdline: &str, ignore: &[&str]) -> Result<Args, String> {
        let mut a = Args::default();
        for word in cmdline.split_ascii_whitespace() {
            let (k, v) = word.split_once('=').ok_or_else(|| format!("expected key=value, got '{word}'"))?;
            match k {
                "tests" => {
                    a.tests = if v == "all" || v.is_empty() {
                        Vec::new()
                    } else {
                        v.split(',').filter(|s| !s.is_empty()).map(|s| s.to_string()).collect()
                    }
                }
                "seed" => a.seed = number(k, v)?,
                "preempt" => {
                    a.preempt_full = match v {
                        "full" => true,
                        "none" => false,
                        _ => return Err(format!("bad value for preempt: '{v}' (full or none)")),
                    }
                }
                "bench" => {
                    a.bench = match v {
                        "skip" => BenchMode::Skip,
                        "only" => BenchMode::Only,
                        "also" => BenchMode::Also,
                        _ => return Err(format!("bad value for bench: '{v}' (skip, only or also)")),
                    }
                }
                "timeout" => {
                    a.timeout_s = number(k, v)?;
                    if a.timeout_s == 0 {
                        return Err("timeout must be at least 1 second".to_string());
                    }
                }
                "fault" => {
                    if !FAULTS.contains(&v) {
                        return Err(format!("unknown fault '{v}' (one of {})", FAULTS.join(", ")));
                    }
                    a.fault = Some(v.to_string());
                }
                "expect_cpus" => a.expect_cpus = Some(number(k, v)?),
                "expect_disks" => a.expect_disks = number::<u8>(k, v)? != 0,
                "torture_s" => a.torture_s = Some(number(k, v)?),
                "torture_fault" => {
                    a.torture_fault = number(k, v)?;
                    if a.torture_fault > 100 {
                        return Err(format!("torture_fault is a percentage (0 to 100), not {v}"));
                    }
                }
                "expect_mem_mib" => a.expect_mem_mib = Some(number(k, v)?),
                "redox_env_check" => a.redox_env_check = Some(v.to_string()),
                "restart" => {
                    a.restart = Some(match v {
                        "write" => RestartPhase::Write,
                        "verify" => RestartPhase::Verify,
                        _ => return Err(format!("bad value for restart: '{v}' (write or verify)")),
                    })
                }
                "restart_seed" => a.restart_seed = Some(number(k, v)?),
                "sysrq" => a.sysrq = v.to_string(),
                "fail_page_alloc" | "fail_make_request" | "fail_kthread_create" => {
                    a.fault_inject.push(word.to_string())
                }
                _ if k.starts_with("sysctl.") && k.len() > "sysctl.".len() => a.sysctl.push(word.to_string()),
                "trace_event" => a.trace_event = kport::trace::parse_events(v)?,
                "trace_buf_size" => a.trace_buf_size = Some(kport::trace::parse_size(v)?),
                "latency_hist" => a.latency_hist = kport::trace::hist::parse(v)?,
                "trace_dump" => a.trace_dump = TraceDump::parse(v)?,
                "repeat" => {
                    a.repeat = number(k, v)?;
                    if a.repeat == 0 || a.repeat > 100_000 {
                        return Err(format!("repeat is 1 to 100000, not {v}"));
                    }
                }
                "cases" => a.cases = v.split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
                "leak_check" => {
                    a.leak_check = match v {
                        "on" => LeakCheck::On,
                        "verbose" => LeakCheck::Verbose,
                        "off" => LeakCheck::Off,
                        _ => return Err(format!("bad value for leak_check: '{v}' (on, verbose or off)")),
                    }
                }
                _ if ignore.contains(&k) => {}
                _ => return Err(format!("unknown command-line key '{k}'")),
            }
        }
        if a.fault.is_some() && a.tests.is_empty() {
            a.tests.push("fault".to_string());
        }
        Ok(a)
    }

    /// Is `suite` selected?
    pub fn selects(&self, suite: &str) -> bool {
        self.tests.is_empty() || self.tests.iter().any(|t| t == suite)
    }
}
