//! `ktest bench-linux`: Debian's own Linux kernel in the same QEMU
//! configuration as `ktest bench`, with an initramfs (static busybox, an init
//! script, the `kbench` module of `tests/bench-linux`, the static `blkbench`
//! and `mmbench` programs and Linux's virtio-blk modules) that runs the Linux counterparts
//! of the benchmarks and ends the machine through isa-debug-exit as the
//! testkernel does. Both print KTAP, so the output goes through the same
//! parser, verdict and `bench.json` objects.
//!
//! The boots of the `main` set get the same four virtio-blk disks as
//! `ktest bench`'s boots ([`crate::disks`]), so that the block benchmarks run
//! on identical QEMU devices on both sides.
//!
//! `scripts/bench-linux.sh` installs the packages, builds the module,
//! `blkbench` and `mmbench`, copies the modules (into `modules/`) and the
//! kernel to `target/bench-linux/` (the defaults here). `blkbench`, `mmbench`
//! and `modules/` are taken from beside the kbench module, wherever
//! `--module` puts it.

use crate::Error;
use crate::cli::Options;
use crate::disks::BootDisks;
use crate::qemu::{self, QemuConfig};
use crate::report::{self, BootResult, RunInfo};
use crate::run::{self, Console};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `scripts/bench-linux.sh` prepares, relative to the repository.
pub const PREPARED: &str = "target/bench-linux";

/// Linux's virtio-blk modules, in the order `tests/bench-linux/init` loads
/// them (each after those it depends on); `<name>.ko` files in
/// [`MODULES_SUBDIR`] beside the kbench module.
pub const VIRTIO_MODULES: [&str; 6] =
    ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk"];

/// The directory beside the kbench module that holds [`VIRTIO_MODULES`].
pub const MODULES_SUBDIR: &str = "modules";

/// The block benchmarks' program, beside the kbench module.
pub const BLKBENCH: &str = "blkbench";

/// The page-cache and reclaim benchmarks' program, beside the kbench module.
pub const MMBENCH: &str = "mmbench";

/// Does a Linux boot of kbench's `set` get the virtio-blk disks? The `main`
/// set is `ktest bench`'s counterpart (its `tests=all` boot gets them, see
/// [`crate::disks::block_selected`]); `scale` and `tput` stand beside
/// bench-scale's boots of the `scale` and `scale_tput` suites, which do not.
pub fn wants_disks(set: &str) -> bool {
    set == "main"
}

/// The tag of a Linux boot's disk images (`disk-<serial>-<tag>.img`).
pub fn disk_tag(smp: u32, set: &str) -> String {
    format!("linux-smp{smp}-{set}")
}

/// QEMU's extra arguments for a Linux boot: the disks' first, then `--qemu-arg`s.
pub fn extra_args(disks: Option<&BootDisks>, qemu_args: &[String]) -> Vec<String> {
    disks.into_iter().flat_map(BootDisks::qemu_args).chain(qemu_args.iter().cloned()).collect()
}

/// The guest command line: the serial console, only notices and worse on
/// it (kbench prints at KERN_NOTICE, the kernel's boot chatter is
/// KERN_INFO), no timestamps, a panic ends the machine at once, and the
/// module's parameters (`kbench.*`, which the init script hands to insmod).
pub fn cmdline(set: &str, only: &str, append: &[String]) -> String {
    let mut words = vec![
        "console=ttyS0".to_string(),
        "loglevel=6".into(),
        "printk.time=0".into(),
        "panic=-1".into(),
        "oops=panic".into(),
        format!("kbench.set={set}"),
    ];
    if !only.is_empty() {
        words.push(format!("kbench.only={only}"));
    }
    words.extend(append.iter().cloned());
    words.join(" ")
}

/// Facts the init script and the module print about the kernel:
/// (preemption model, kernel release), from `# kbench: preempt=X kernel=Y`.
pub fn kernel_facts(raw: &str) -> (Option<String>, Option<String>) {
    let mut preempt = None;
    let mut kernel = None;
    for line in raw.lines() {
        let Some(rest) = line.trim().strip_prefix("# kbench:") else { continue };
        for w in rest.split_whitespace() {
            if let Some(v) = w.strip_prefix("preempt=") {
                preempt = Some(v.to_string());
            } else if let Some(v) = w.strip_prefix("kernel=") {
                kernel = Some(v.to_string());
            }
        }
    }
    (preempt, kernel)
}

/// The objects of `bench-linux.json`: `bench.json`'s, each also naming the
/// kernel (`"kernel": "linux-6.1.0-57-amd64"`).
pub fn bench_objects(info: &RunInfo, boots: &[BootResult], kernel: Option<&str>) -> Vec<Value> {
    let mut objs = report::bench_objects(info, boots);
    if let Some(k) = kernel {
        for o in &mut objs {
            if let Value::Object(m) = o {
                m.insert("kernel".into(), Value::from(format!("linux-{k}")));
            }
        }
    }
    objs
}

/// Where the prepared files are, given the options.
pub struct Inputs {
    /// Linux bzImage.
    pub kernel: PathBuf,
    /// The kbench module.
    pub module: PathBuf,
    /// The init script.
    pub init: PathBuf,
    /// The static `blkbench` program.
    pub blkbench: PathBuf,
    /// The static `mmbench` program.
    pub mmbench: PathBuf,
    /// Linux's virtio-blk modules, in [`VIRTIO_MODULES`] order.
    pub modules: Vec<PathBuf>,
}

/// `blkbench` and the virtio-blk modules that go with the kbench module at `module`.
pub fn beside_module(module: &Path) -> (PathBuf, Vec<PathBuf>) {
    let dir = module.parent().unwrap_or(Path::new("."));
    let modules = VIRTIO_MODULES.iter().map(|m| dir.join(MODULES_SUBDIR).join(format!("{m}.ko"))).collect();
    (dir.join(BLKBENCH), modules)
}

/// `mmbench` beside the kbench module at `module`.
pub fn mmbench_beside_module(module: &Path) -> PathBuf {
    module.parent().unwrap_or(Path::new(".")).join(MMBENCH)
}

/// The inputs, checked to exist (with the command that makes them).
pub fn inputs(opts: &Options) -> Result<Inputs, Error> {
    let repo = run::repo_root()?;
    let prepared = repo.join(PREPARED);
    let module = opts.module.clone().unwrap_or_else(|| prepared.join("kbench.ko"));
    let (blkbench, modules) = beside_module(&module);
    let mmbench = mmbench_beside_module(&module);
    let i = Inputs {
        kernel: opts.linux_kernel.clone().unwrap_or_else(|| prepared.join("vmlinuz")),
        module,
        init: repo.join("tests/bench-linux/init"),
        blkbench,
        mmbench,
        modules,
    };
    let named = [("Linux kernel", &i.kernel), ("kbench module", &i.module), ("init script", &i.init)];
    let beside = [("blkbench program", &i.blkbench), ("mmbench program", &i.mmbench)]
        .into_iter()
        .chain(i.modules.iter().map(|m| ("Linux module", m)));
    for (what, p) in named.into_iter().chain(beside) {
        if !p.is_file() {
            return Err(Error::env(format!(
                "ktest: {what} not found at {} (run scripts/bench-linux.sh, or make bench-linux, first)",
                p.display()
            )));
        }
    }
    if !opts.busybox.is_file() {
        return Err(Error::env(format!(
            "ktest: {} not found: install a static busybox (Debian/Ubuntu: apt-get install busybox-static)",
            opts.busybox.display()
        )));
    }
    Ok(i)
}

/// One Linux boot: what it produced, for `bench-linux` and `bench-compare`.
pub struct LinuxBoot {
    /// The verdict and parsed output.
    pub boot: BootResult,
    /// The run-wide facts.
    pub info: RunInfo,
    /// The kernel release the guest reported.
    pub kernel: Option<String>,
}

/// Boot Linux once with `smp` CPUs and `mem_mib` MiB, kbench's `set` and
/// `only`; write the serial log and `bench-linux.json` to `out_dir`.
#[allow(clippy::too_many_arguments)]
pub fn boot(
    opts: &Options,
    inputs: &Inputs,
    smp: u32,
    mem_mib: u64,
    set: &str,
    only: &str,
    out_dir: &Path,
    console: &mut Console<'_>,
) -> Result<LinuxBoot, Error> {
    let qemu_path = qemu::find_emulator(&opts.qemu)?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::env(format!("ktest: cannot create {}: {e}", out_dir.display())))?;
    let programs = [inputs.blkbench.as_path(), inputs.mmbench.as_path()];
    let image = crate::initramfs::bench_linux(&opts.busybox, &inputs.init, &inputs.module, &programs, &inputs.modules)
        .map_err(|e| Error::env(format!("ktest: cannot build the initramfs: {e}")))?;
    let initrd = out_dir.join("initramfs-linux.cpio");
    std::fs::write(&initrd, image).map_err(|e| Error::env(format!("ktest: cannot write {}: {e}", initrd.display())))?;
    let cmdline = cmdline(set, only, &opts.linux_append);
    let tag = disk_tag(smp, set);
    let disks = if wants_disks(set) {
        let d = BootDisks::create(out_dir, &tag)
            .map_err(|e| Error::env(format!("ktest: cannot write disk images in {}: {e}", out_dir.display())))?;
        Some(d)
    } else {
        None
    };
    let extra = extra_args(disks.as_ref(), &opts.qemu_args);
    let cmd = qemu::qemu_command(&QemuConfig {
        qemu: &qemu_path,
        kernel: &inputs.kernel,
        cmdline: &cmdline,
        smp,
        topology: None,
        numa_nodes: None,
        mem_mib,
        accel: opts.accel,
        initrd: Some(&initrd),
        extra: &extra,
        serial_monitor: false,
    });
    let label = format!("linux smp={smp} set={set}");
    if !opts.quiet {
        console.line(&format!("ktest: {label}: booting {} with \"{cmdline}\"", inputs.kernel.display()));
    }
    let timeout = Duration::from_secs(opts.timeout_secs);
    let b = run::run_boot(cmd, timeout, None, console, &label);
    // Linux's side checks nothing in the images: they go whatever the verdict.
    if let Some(d) = &disks
        && let Err(e) = d.remove()
    {
        console.line(&format!("ktest: warning: cannot remove the disk images of {tag}: {e}"));
    }
    let b = b.map_err(|e| Error::env(format!("ktest: cannot start {}: {e}", qemu_path.display())))?;
    let log = format!("ktap-linux-smp{smp}-{set}.txt");
    std::fs::write(out_dir.join(&log), &b.raw).map_err(|e| Error::env(format!("ktest: cannot write {log}: {e}")))?;
    let (preempt, kernel) = kernel_facts(&b.raw);
    let mut failures = report::judge(b.exit, &b.ktap, opts.timeout_secs);
    for f in &mut failures {
        if f.starts_with("triple fault or reset") {
            *f = "Linux rebooted (QEMU exit 0): a panic or oops (see the log), or init ended without isa-debug-exit"
                .into();
        }
    }
    for line in b.stderr.lines().filter(|l| !l.trim().is_empty()) {
        console.line(&format!("qemu: {line}"));
    }
    let verdict = if failures.is_empty() { "PASS" } else { "FAIL" };
    if !opts.quiet || !failures.is_empty() {
        console.line(&format!("ktest: {label}: {verdict} ({}, {:.1} s)", b.exit, b.elapsed.as_secs_f64()));
    }
    for f in &failures {
        console.line(&format!("ktest: {label}: {f}"));
    }
    let info = RunInfo {
        seed: 0,
        accel: opts.accel.name().to_string(),
        qemu_version: qemu::qemu_version(&qemu_path),
        kernel: inputs.kernel.display().to_string(),
    };
    let boot = BootResult {
        smp,
        preempt: preempt.unwrap_or_else(|| "unknown".into()),
        cmdline,
        exit: b.exit,
        elapsed: b.elapsed,
        ktap: b.ktap,
        failures,
        log,
        phase: None,
        trace: None,
    };
    let objs = bench_objects(&info, std::slice::from_ref(&boot), kernel.as_deref());
    let text = serde_json::to_string_pretty(&objs).expect("serializable") + "\n";
    let path = out_dir.join("bench-linux.json");
    std::fs::write(&path, text).map_err(|e| Error::env(format!("ktest: cannot write {}: {e}", path.display())))?;
    Ok(LinuxBoot { boot, info, kernel })
}

/// `ktest bench-linux`: boot once, report; 0 pass, 1 fail.
pub fn run(opts: &Options, out: &mut dyn Write, tty: bool) -> Result<i32, Error> {
    let inputs = inputs(opts)?;
    let out_dir = match &opts.out {
        Some(d) => d.clone(),
        None => run::repo_root()?.join("target/ktest"),
    };
    let mut console = Console::new(out, tty, opts.quiet);
    let lb = boot(opts, &inputs, opts.smp[0], opts.mem_mib, &opts.set, &opts.only, &out_dir, &mut console)?;
    if !opts.quiet {
        console.line(&format!("ktest: reports in {} (bench-linux.json)", out_dir.display()));
    }
    let boots = [lb.boot];
    let _ = report::print_summary(console.writer(), 0, &boots);
    Ok(if boots[0].passed() { 0 } else { 1 })
}
