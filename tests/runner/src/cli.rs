//! Command-line parsing (hand-written: the option set is small and flat).

use crate::qemu::{Accel, QEMU, Topology};
use std::path::PathBuf;

/// Usage text printed by `ktest --help`.
pub const USAGE: &str = "\
usage: ktest run [options]            boot the testkernel once per configuration and report
       ktest restart [options]        per configuration two boots on the same disk images: the
                                      first writes a seeded pattern (--seed) through the page cache
                                      and syncs, the second reads it back; images checked after each
       ktest bench [options]          run the benchmarks (--smp 2 -m 512M bench=only), write bench.json
       ktest bench-linux [options]    boot Debian's Linux with the kbench module in the same QEMU
                                      configuration, write bench-linux.json (docs/benchmarks.md)
       ktest bench-compare [options]  Linux and the testkernel alternately, --rounds N each; one
                                      table (bench-compare.md/.json) and a chart (bench-compare.svg)
       ktest bench-scale [options]    throughput per CPU count (--smp, default 1,2,4,8) and the
                                      explicit scale suite, ours and Linux (bench-scale.md/.json/.svg)

options:
  --smp LIST          comma list of CPU counts, one boot each (default 4; bench: 2)
  --preempt LIST      comma list of full,none (default full)
  --tests LIST        comma list of suites, passed as tests= (default all; restart: its own suite)
  --seed N            seed of randomized tests and of restart's pattern (default: random, printed)
  --timeout SECS      whole-run time-out per boot (default 900)
  --mem MIB           guest memory in MiB (default 256; bench: 512)
  --topology T        CPU topology appended to -smp: sockets=S,cores=C,threads=T[,dies=D]
                      (room for at least the largest --smp; the guest checks it)
  --numa N            N NUMA nodes: CPUs and memory split evenly in order (-numa, -object)
  --kernel PATH       kernel ELF to boot (default: build testkernel)
  --no-build          boot the already built kernel
  --append \"k=v ...\"  extra guest command-line words (repeatable)
  --kvm               use -accel kvm instead of -accel tcg,thread=multi
  --icount            one TCG thread with -icount shift=0,align=off,sleep=off: guest time
                      counts instructions (1 ns each), for comparisons a busy host or
                      TCG's code placement cannot move
  --initrd PATH       pass -initrd PATH to QEMU
  --qemu-arg ARG      extra QEMU argument (repeatable)
  --sysrq KEYS[@SECS] type SysRq KEYS on the serial console (BREAK, then each key), SECS
                      seconds after the guest's harness starts (QEMU gets -serial mon:stdio)
  --qemu PATH         emulator binary (default qemu-system-x86_64)
  --out DIR           output directory (default target/ktest)
  --quiet             echo only failures and the summary
  -h, --help          show this text

Linux, comparison and scale options:
  --linux-kernel PATH Linux bzImage (default target/bench-linux/vmlinuz, from scripts/bench-linux.sh)
  --module PATH       the kbench module (default target/bench-linux/kbench.ko)
  --busybox PATH      static busybox for the initramfs (default /bin/busybox)
  --set SET           kbench's set: main, scale or tput (default main)
  --only LIST         kbench: only these benchmarks (comma list of names)
  --linux-append \"k=v ...\"  extra words for Linux's command line (repeatable)
  --rounds N          bench-compare: alternating rounds (default 3)
  --side NAME=CMD     bench-compare: one more column; each round runs CMD (sh -c) with
                      KTEST_SIDE_OUT=<dir> in its environment, and CMD writes <dir>/bench.json
                      (e.g. redox='make redox-bench REDOX_KERNEL=... OUT=$KTEST_SIDE_OUT')
  --no-linux          bench-scale: the testkernel only
  --scale-mem MIB     bench-scale: guest memory for the scale suite (default 2048)

exit status: 0 all passed, 1 a test or boot failed, 2 usage or environment error";

/// What the runner was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ktest run`
    Run,
    /// `ktest restart`: two boots per configuration on the same disk images.
    Restart,
    /// `ktest bench`
    Bench,
    /// `ktest bench-linux`
    BenchLinux,
    /// `ktest bench-compare`
    BenchCompare,
    /// `ktest bench-scale`
    BenchScale,
}

impl Mode {
    /// Does this mode boot Linux or compare (the options of those modes apply)?
    pub fn is_linux(self) -> bool {
        matches!(self, Mode::BenchLinux | Mode::BenchCompare | Mode::BenchScale)
    }
}

/// Parsed options of `run` and `bench`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Subcommand.
    pub mode: Mode,
    /// CPU counts, one boot each.
    pub smp: Vec<u32>,
    /// Preemption models, one boot each (cross product with `smp`).
    pub preempt: Vec<String>,
    /// Value of `tests=`.
    pub tests: String,
    /// Seed; `None` picks a random one.
    pub seed: Option<u64>,
    /// Whole-run time-out per boot, in seconds.
    pub timeout_secs: u64,
    /// Guest memory in MiB.
    pub mem_mib: u64,
    /// CPU topology appended to `-smp`.
    pub topology: Option<Topology>,
    /// NUMA nodes.
    pub numa_nodes: Option<u32>,
    /// Kernel ELF; `None` means the default build output.
    pub kernel: Option<PathBuf>,
    /// Do not build the kernel.
    pub no_build: bool,
    /// Extra command-line words.
    pub append: Vec<String>,
    /// Accelerator.
    pub accel: Accel,
    /// Optional initrd.
    pub initrd: Option<PathBuf>,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// `--sysrq KEYS[@SECS]`: type these SysRq keys on the serial console (BREAK, key) SECS
    /// seconds after the guest's harness starts (its `# seed:` line).
    pub sysrq: Option<crate::qemu::ConsoleInput>,
    /// Emulator binary.
    pub qemu: PathBuf,
    /// Output directory; `None` means `<repo>/target/ktest`.
    pub out: Option<PathBuf>,
    /// Echo only failures and the summary.
    pub quiet: bool,
    /// Linux bzImage; `None` means `target/bench-linux/vmlinuz`.
    pub linux_kernel: Option<PathBuf>,
    /// The kbench module; `None` means `target/bench-linux/kbench.ko`.
    pub module: Option<PathBuf>,
    /// Static busybox for Linux's initramfs.
    pub busybox: PathBuf,
    /// kbench's set (`main`, `scale`, `tput`).
    pub set: String,
    /// kbench: only these benchmarks (empty: the whole set).
    pub only: String,
    /// Extra words for Linux's command line.
    pub linux_append: Vec<String>,
    /// bench-compare: alternating rounds.
    pub rounds: u32,
    /// bench-compare: further columns, (name, shell command).
    pub sides: Vec<(String, String)>,
    /// bench-scale: leave Linux out.
    pub no_linux: bool,
    /// bench-scale: memory of the scale suite's boots, MiB.
    pub scale_mem_mib: u64,
}

impl Options {
    /// Defaults of a subcommand.
    pub fn new(mode: Mode) -> Self {
        let bench = !matches!(mode, Mode::Run | Mode::Restart);
        let smp = match mode {
            Mode::Run | Mode::Restart => vec![4],
            Mode::BenchScale => vec![1, 2, 4, 8],
            _ => vec![2],
        };
        Options {
            mode,
            smp,
            preempt: vec!["full".into()],
            tests: if mode == Mode::Restart { RESTART_SUITE.into() } else { "all".into() },
            seed: None,
            timeout_secs: 900,
            mem_mib: if bench { 512 } else { 256 },
            topology: None,
            numa_nodes: None,
            kernel: None,
            no_build: false,
            append: Vec::new(),
            accel: Accel::Tcg,
            initrd: None,
            qemu_args: Vec::new(),
            sysrq: None,
            qemu: PathBuf::from(QEMU),
            out: None,
            quiet: false,
            linux_kernel: None,
            module: None,
            busybox: PathBuf::from("/bin/busybox"),
            set: "main".into(),
            only: String::new(),
            linux_append: Vec::new(),
            rounds: 3,
            sides: Vec::new(),
            no_linux: false,
            scale_mem_mib: 2048,
        }
    }

    /// Value of `bench=` for this mode.
    pub fn bench_mode(&self) -> &'static str {
        match self.mode {
            Mode::Run | Mode::Restart => "skip",
            _ => "only",
        }
    }
}

/// Result of parsing the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cli {
    /// Print [`USAGE`].
    Help,
    /// Run or benchmark with these options.
    Run(Box<Options>),
}

/// Parse the arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, String> {
    let mut args = args.into_iter();
    let mode = match args.next().as_deref() {
        Some("run") => Mode::Run,
        Some("restart") => Mode::Restart,
        Some("bench") => Mode::Bench,
        Some("bench-linux") => Mode::BenchLinux,
        Some("bench-compare") => Mode::BenchCompare,
        Some("bench-scale") => Mode::BenchScale,
        Some("-h" | "--help" | "help") => return Ok(Cli::Help),
        Some(other) => {
            return Err(format!("unknown command '{other}' (expected {COMMANDS})"));
        }
        None => return Err(format!("missing command (expected {COMMANDS})")),
    };
    let mut o = Options::new(mode);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Cli::Help),
            "--smp" => o.smp = parse_list(&flag, &value()?, parse_cpus)?,
            "--preempt" => o.preempt = parse_list(&flag, &value()?, parse_preempt)?,
            "--tests" if o.mode == Mode::Restart => {
                return Err(format!("restart runs the {RESTART_SUITE} suite only: drop --tests"));
            }
            "--tests" => {
                let v = value()?;
                if v.is_empty() || v.contains(char::is_whitespace) {
                    return Err(format!("invalid --tests value '{v}': expected a comma list of suites"));
                }
                o.tests = v;
            }
            "--seed" => o.seed = Some(parse_num(&flag, &value()?)?),
            "--timeout" => {
                o.timeout_secs = parse_num(&flag, &value()?)?;
                if o.timeout_secs == 0 {
                    return Err("--timeout must be at least 1 second".into());
                }
            }
            "--mem" => o.mem_mib = parse_num(&flag, &value()?)?,
            "--topology" => o.topology = Some(parse_topology(&value()?)?),
            "--numa" => {
                let n = parse_num(&flag, &value()?)?;
                if !(1..=MAX_NUMA_NODES).contains(&n) {
                    return Err(format!("invalid --numa value '{n}': expected 1 to {MAX_NUMA_NODES} nodes"));
                }
                o.numa_nodes = Some(n as u32);
            }
            "--kernel" => o.kernel = Some(PathBuf::from(value()?)),
            "--no-build" => o.no_build = true,
            "--append" => o.append.extend(value()?.split_whitespace().map(String::from)),
            "--kvm" => o.accel = Accel::Kvm,
            "--icount" => o.accel = Accel::Icount,
            "--initrd" => o.initrd = Some(PathBuf::from(value()?)),
            "--qemu-arg" => o.qemu_args.push(value()?),
            "--sysrq" => o.sysrq = Some(parse_sysrq(&value()?)?),
            "--qemu" => o.qemu = PathBuf::from(value()?),
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--quiet" | "-q" => o.quiet = true,
            "--linux-kernel" | "--module" | "--busybox" | "--set" | "--only" | "--linux-append" | "--rounds"
            | "--side" | "--no-linux" | "--scale-mem"
                if !o.mode.is_linux() =>
            {
                return Err(format!("{flag} applies to bench-linux, bench-compare and bench-scale only"));
            }
            "--linux-kernel" => o.linux_kernel = Some(PathBuf::from(value()?)),
            "--module" => o.module = Some(PathBuf::from(value()?)),
            "--busybox" => o.busybox = PathBuf::from(value()?),
            "--set" => {
                let v = value()?;
                if !matches!(v.as_str(), "main" | "scale" | "tput") {
                    return Err(format!("invalid --set value '{v}': expected main, scale or tput"));
                }
                o.set = v;
            }
            "--only" => {
                let v = value()?;
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b',') {
                    return Err(format!("invalid --only value '{v}': expected a comma list of benchmark names"));
                }
                o.only = v;
            }
            "--linux-append" => o.linux_append.extend(value()?.split_whitespace().map(String::from)),
            "--rounds" => {
                o.rounds = parse_num(&flag, &value()?)? as u32;
                if o.rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "--side" => {
                let v = value()?;
                let (name, cmd) =
                    v.split_once('=').ok_or_else(|| format!("invalid --side value '{v}': expected NAME=COMMAND"))?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                    return Err(format!("invalid --side name '{name}': letters, digits, '-' and '_'"));
                }
                if matches!(name, "ours" | "linux") || o.sides.iter().any(|(n, _)| n == name) {
                    return Err(format!("--side name '{name}' is taken"));
                }
                if cmd.trim().is_empty() {
                    return Err(format!("--side {name} has no command"));
                }
                o.sides.push((name.to_string(), cmd.to_string()));
            }
            "--no-linux" => o.no_linux = true,
            "--scale-mem" => o.scale_mem_mib = parse_num(&flag, &value()?)?,
            _ => return Err(format!("unknown option '{arg}'")),
        }
        if inline.is_some() && matches!(flag.as_str(), "--no-build" | "--kvm" | "--quiet" | "--no-linux") {
            return Err(format!("{flag} takes no value"));
        }
    }
    if matches!(o.mode, Mode::BenchLinux | Mode::BenchCompare) && o.smp.len() != 1 {
        return Err(format!("{} boots one configuration: give --smp a single CPU count", command_name(o.mode)));
    }
    if o.mode == Mode::BenchScale && (o.set != "main" || !o.only.is_empty()) {
        return Err("bench-scale chooses kbench's sets itself: drop --set and --only".into());
    }
    if o.mode == Mode::Restart
        && let Some(w) = o.append.iter().find(|w| RESTART_OWN_KEYS.contains(&w.split('=').next().unwrap_or_default()))
    {
        return Err(format!("--append {w}: restart sets {} itself", RESTART_OWN_KEYS.join("=, ") + "="));
    }
    if !o.sides.is_empty() && o.mode != Mode::BenchCompare {
        return Err("--side applies to bench-compare only".into());
    }
    if let Some(t) = o.topology
        && let Some(&n) = o.smp.iter().find(|&&n| n > t.max_cpus())
    {
        return Err(format!("--topology {t} has room for {} CPUs, --smp asks for {n}", t.max_cpus()));
    }
    if let Some(nodes) = o.numa_nodes
        && o.mem_mib < u64::from(nodes) * MIN_NODE_MIB
    {
        return Err(format!(
            "--numa {nodes} needs --mem of at least {} MiB ({MIN_NODE_MIB} per node)",
            u64::from(nodes) * MIN_NODE_MIB
        ));
    }
    Ok(Cli::Run(Box::new(o)))
}

/// The commands, for error messages.
const COMMANDS: &str = "'run', 'restart', 'bench', 'bench-linux', 'bench-compare' or 'bench-scale'";

/// The guest suite `ktest restart` runs.
pub const RESTART_SUITE: &str = "restart";

/// Guest command-line keys `ktest restart` decides: `--append` may not set them.
pub const RESTART_OWN_KEYS: [&str; 4] = ["tests", "bench", "restart", "restart_seed"];

/// The command's name as typed.
pub fn command_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Run => "run",
        Mode::Restart => "restart",
        Mode::Bench => "bench",
        Mode::BenchLinux => "bench-linux",
        Mode::BenchCompare => "bench-compare",
        Mode::BenchScale => "bench-scale",
    }
}

/// Most NUMA nodes `--numa` makes.
pub const MAX_NUMA_NODES: u64 = 8;
/// Least memory per NUMA node (MiB): enough for the guest's allocations
/// wherever the firmware puts them.
pub const MIN_NODE_MIB: u64 = 32;

/// Parse `sockets=S,cores=C,threads=T[,dies=D]` (any order; `dies` defaults
/// to 1). Each count from 1, at most 255 CPUs in all.
fn parse_topology(v: &str) -> Result<Topology, String> {
    let bad = |why: &str| format!("invalid --topology value '{v}': {why}");
    let (mut sockets, mut dies, mut cores, mut threads) = (None, None, None, None);
    for item in v.split(',') {
        let (key, n) = item.split_once('=').ok_or_else(|| bad("expected sockets=S,cores=C,threads=T[,dies=D]"))?;
        let n: u32 = n.parse().ok().filter(|n| (1..=255).contains(n)).ok_or_else(|| bad("counts are 1 to 255"))?;
        let slot = match key {
            "sockets" => &mut sockets,
            "dies" => &mut dies,
            "cores" => &mut cores,
            "threads" => &mut threads,
            _ => return Err(bad(&format!("unknown key '{key}'"))),
        };
        if slot.replace(n).is_some() {
            return Err(bad(&format!("'{key}' given twice")));
        }
    }
    let (Some(sockets), Some(cores), Some(threads)) = (sockets, cores, threads) else {
        return Err(bad("sockets, cores and threads are all needed"));
    };
    let t = Topology { sockets, dies: dies.unwrap_or(1), cores, threads };
    if sockets * t.dies * cores * threads > 255 {
        return Err(bad("more than 255 CPUs"));
    }
    Ok(t)
}

fn parse_num(flag: &str, v: &str) -> Result<u64, String> {
    v.parse().map_err(|_| format!("invalid {flag} value '{v}': expected a non-negative integer"))
}

fn parse_cpus(v: &str) -> Option<u32> {
    v.parse().ok().filter(|&n| (1..=255).contains(&n))
}

fn parse_preempt(v: &str) -> Option<String> {
    matches!(v, "full" | "none").then(|| v.to_string())
}

fn parse_list<T>(flag: &str, v: &str, item: fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    let what = if flag == "--smp" { "CPU counts from 1 to 255" } else { "full, none" };
    let items: Option<Vec<T>> = v.split(',').map(|s| item(s.trim())).collect();
    match items {
        Some(list) if !list.is_empty() => Ok(list),
        _ => Err(format!("invalid {flag} value '{v}': expected a comma list of {what}")),
    }
}

/// `KEYS[@SECS]` of `--sysrq`.
fn parse_sysrq(v: &str) -> Result<crate::qemu::ConsoleInput, String> {
    let (keys, secs) = match v.split_once('@') {
        Some((k, s)) => (k, s.parse::<u64>().map_err(|_| format!("--sysrq {v}: `{s}` is not whole seconds"))?),
        None => (v, 0),
    };
    if keys.is_empty() || !keys.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("--sysrq {v}: expected SysRq keys (letters such as t, w, l), then optionally @SECS"));
    }
    Ok(crate::qemu::ConsoleInput {
        after_line: String::from("# seed:"),
        delay: std::time::Duration::from_secs(secs),
        keys: keys.to_string(),
    })
}
