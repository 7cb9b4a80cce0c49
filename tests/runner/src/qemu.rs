//! Starting the emulator, streaming its serial output and enforcing the time-out.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The QEMU binary the runner uses by default.
pub const QEMU: &str = "qemu-system-x86_64";

/// The message (and exit status 2) when QEMU is not installed.
pub const QEMU_MISSING: &str =
    "qemu-system-x86_64 not found: install it with 'apt-get install qemu-system-x86' (Debian/Ubuntu)";

/// Exit code QEMU returns when the guest wrote 0x10 (pass) to isa-debug-exit.
pub const EXIT_PASS: i32 = 33;
/// Exit code QEMU returns when the guest wrote 0x11 (fail) to isa-debug-exit.
pub const EXIT_FAIL: i32 = 35;

/// How an emulator run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The process exited with this status.
    Code(i32),
    /// The process was killed by this signal (not by the runner).
    Signal(i32),
    /// The runner killed it at the time-out.
    TimedOut,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
            Exit::TimedOut => write!(f, "timed out"),
        }
    }
}

/// Something that happened while the emulator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A line of serial output (without its terminator; the last one may be partial).
    Line(&'a str),
    /// About a quarter of a second passed without output (for progress redraws).
    Tick,
}

/// Result of [`run_emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorRun {
    /// How the process ended.
    pub exit: Exit,
    /// Everything the process wrote to stderr.
    pub stderr: String,
    /// Wall-clock duration of the run.
    pub elapsed: Duration,
}

/// Accelerator selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// `-accel tcg,thread=multi` (the default: KVM does not work on these machines).
    Tcg,
    /// `-accel kvm`.
    Kvm,
    /// `-accel tcg,thread=single -icount shift=0,align=off,sleep=off`: time is the count of
    /// guest instructions (1 ns each), so a benchmark counts instructions and neither the
    /// host's load nor where TCG's translated blocks fall moves it. One host thread runs
    /// every vCPU in turn.
    Icount,
}

impl Accel {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
            Accel::Icount => "tcg-icount",
        }
    }
}

/// A CPU topology for QEMU's `-smp` (`sockets=S,dies=D,cores=C,threads=T`).
/// Without one QEMU chooses its own for `-smp N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Packages.
    pub sockets: u32,
    /// Dies per package.
    pub dies: u32,
    /// Cores per die.
    pub cores: u32,
    /// SMT threads per core.
    pub threads: u32,
}

impl Topology {
    /// Most CPUs the machine may have (QEMU's default `maxcpus`).
    pub fn max_cpus(&self) -> u32 {
        self.sockets * self.dies * self.cores * self.threads
    }

    /// The value of `-smp` for `cpus` CPUs (`dies` only when more than one).
    pub fn smp_arg(&self, cpus: u32) -> String {
        let dies = if self.dies > 1 { format!(",dies={}", self.dies) } else { String::new() };
        format!("{cpus},sockets={}{dies},cores={},threads={}", self.sockets, self.cores, self.threads)
    }

    /// The guest word that tells the testkernel what to expect
    /// (`expect_topology=sockets=S,dies=D,cores=C,threads=T`).
    pub fn guest_word(&self) -> String {
        format!(
            "expect_topology=sockets={},dies={},cores={},threads={}",
            self.sockets, self.dies, self.cores, self.threads
        )
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sockets={},dies={},cores={},threads={}", self.sockets, self.dies, self.cores, self.threads)
    }
}

/// The QEMU arguments for `nodes` NUMA nodes over a machine of `max_cpus`
/// CPUs and `mem_mib` MiB: node k gets CPUs `k * max_cpus / nodes` up to the
/// next node's first (none if that range is empty: a memory-only node), and
/// an equal share of the memory (the first `mem_mib % nodes` nodes one MiB
/// more), as a RAM backend of its own, which QEMU requires since 5.1.
pub fn numa_args(nodes: u32, max_cpus: u32, mem_mib: u64) -> Vec<String> {
    let mut args = Vec::new();
    for k in 0..nodes {
        let size = mem_mib / u64::from(nodes) + u64::from(u64::from(k) < mem_mib % u64::from(nodes));
        let (first, end) = (k * max_cpus / nodes, (k + 1) * max_cpus / nodes);
        let cpus = if end > first { format!(",cpus={first}-{}", end - 1) } else { String::new() };
        args.push("-object".into());
        args.push(format!("memory-backend-ram,id=ktest-node{k},size={size}M"));
        args.push("-numa".into());
        args.push(format!("node,nodeid={k}{cpus},memdev=ktest-node{k}"));
    }
    args
}

/// Everything needed to build one QEMU command line.
#[derive(Debug, Clone)]
pub struct QemuConfig<'a> {
    /// Emulator binary.
    pub qemu: &'a Path,
    /// Kernel ELF.
    pub kernel: &'a Path,
    /// Guest command line (`-append`).
    pub cmdline: &'a str,
    /// Number of CPUs.
    pub smp: u32,
    /// CPU topology for `-smp`, if one is given.
    pub topology: Option<Topology>,
    /// NUMA nodes (`-numa`, see [`numa_args`]), if any.
    pub numa_nodes: Option<u32>,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// Accelerator.
    pub accel: Accel,
    /// Optional initrd.
    pub initrd: Option<&'a Path>,
    /// Extra arguments appended last.
    pub extra: &'a [String],
    /// Multiplex QEMU's monitor on the serial console (`-serial mon:stdio`), so that input
    /// can send a BREAK (`Ctrl-A b`) for the guest's SysRq.
    pub serial_monitor: bool,
}

/// Console input to type during a boot: once a line containing `after_line` arrives, wait
/// `delay`, then send each of `keys` as a serial SysRq request (a BREAK through QEMU's monitor
/// escape `Ctrl-A b`, then the key), one per second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleInput {
    /// A line containing this starts the delay.
    pub after_line: String,
    /// How long after that line.
    pub delay: Duration,
    /// The SysRq keys.
    pub keys: String,
}

/// Build the QEMU command for one boot (stdio is set up by [`run_emulator`]).
pub fn qemu_command(c: &QemuConfig<'_>) -> Command {
    let mut cmd = Command::new(c.qemu);
    cmd.arg("-kernel").arg(c.kernel);
    cmd.arg("-append").arg(c.cmdline);
    let serial = if c.serial_monitor { "mon:stdio" } else { "stdio" };
    cmd.args(["-display", "none", "-serial", serial, "-no-reboot"]);
    cmd.arg("-m").arg(format!("{}M", c.mem_mib));
    cmd.arg("-smp").arg(match c.topology {
        Some(t) => t.smp_arg(c.smp),
        None => c.smp.to_string(),
    });
    if let Some(nodes) = c.numa_nodes {
        let max_cpus = c.topology.map_or(c.smp, |t| t.max_cpus());
        cmd.args(numa_args(nodes, max_cpus, c.mem_mib));
    }
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    cmd.arg("-accel").arg(match c.accel {
        Accel::Tcg => "tcg,thread=multi",
        Accel::Kvm => "kvm",
        Accel::Icount => "tcg,thread=single",
    });
    if c.accel == Accel::Icount {
        cmd.args(["-icount", "shift=0,align=off,sleep=off"]);
    }
    if let Some(initrd) = c.initrd {
        cmd.arg("-initrd").arg(initrd);
    }
    cmd.args(c.extra);
    cmd
}

/// The emulator `qemu` names (a path or a name in `PATH`), or the runner's error: how to
/// install QEMU when it is the default one, else that the named one is not there.
pub fn find_emulator(qemu: &Path) -> Result<PathBuf, crate::Error> {
    find_executable(qemu).ok_or_else(|| {
        if qemu == Path::new(QEMU) {
            crate::Error::env(QEMU_MISSING)
        } else {
            crate::Error::env(format!("ktest: emulator {} not found", qemu.display()))
        }
    })
}

/// Find an executable: a path with a slash is taken as is, a bare name is searched in `PATH`.
pub fn find_executable(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The emulator's version (`7.2.x` from `QEMU emulator version 7.2.x (...)`).
pub fn qemu_version(qemu: &Path) -> Option<String> {
    let out = Command::new(qemu).arg("--version").stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next()?;
    let version = first.split("version").nth(1)?.split_whitespace().next()?;
    Some(version.to_string())
}

/// Run an emulator command with its stdout streamed line by line to `on_event`,
/// killing it once `timeout` has passed.
///
/// The command's stdin is closed (so QEMU leaves the terminal alone) and its
/// stdout and stderr are piped. Any command works: tests pass a shell script.
pub fn run_emulator(
    cmd: Command,
    timeout: Duration,
    on_event: &mut dyn FnMut(Event<'_>),
) -> std::io::Result<EmulatorRun> {
    run_emulator_input(cmd, timeout, None, on_event)
}

/// [`run_emulator`], typing `input` on the emulator's stdin (piped, then) when its time comes.
pub fn run_emulator_input(
    mut cmd: Command,
    timeout: Duration,
    input: Option<&ConsoleInput>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> std::io::Result<EmulatorRun> {
    let start = Instant::now();
    let deadline = start + timeout;
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take();
    // When to type, once the trigger line arrived; the keys still to type.
    let mut type_at: Option<Instant> = None;
    let mut keys: Vec<u8> = input.map(|i| i.keys.bytes().collect()).unwrap_or_default();
    keys.reverse();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");

    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while matches!(buf.last(), Some(b'\n' | b'\r')) {
                        buf.pop();
                    }
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (etx, erx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        let _ = etx.send(String::from_utf8_lossy(&bytes).into_owned());
    });

    let tick = Duration::from_millis(250);
    let grace = Duration::from_millis(500);
    let mut timed_out = false;
    let mut status = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            let _ = child.kill();
            break;
        }
        if let (Some(at), Some(pipe)) = (type_at, stdin.as_mut())
            && now >= at
            && let Some(k) = keys.pop()
        {
            // BREAK through the monitor escape, then the key.
            let _ = pipe.write_all(&[0x01, b'b', k]).and_then(|()| pipe.flush());
            type_at = Some(now + Duration::from_secs(1));
        }
        match rx.recv_timeout(deadline.saturating_duration_since(now).min(tick)) {
            Ok(line) => {
                if let Some(i) = input
                    && type_at.is_none()
                    && line.contains(&i.after_line)
                {
                    type_at = Some(Instant::now() + i.delay);
                }
                on_event(Event::Line(&line))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                on_event(Event::Tick);
                // The process may have exited while something else holds the pipe.
                if let Some(s) = child.try_wait()? {
                    status = Some(s);
                    break;
                }
            }
        }
    }
    // Collect what is still buffered, without waiting long on a pipe a stray process holds.
    let drain_end = Instant::now() + grace;
    while let Ok(line) = rx.recv_timeout(drain_end.saturating_duration_since(Instant::now())) {
        on_event(Event::Line(&line));
    }
    let status = match status {
        Some(s) => s,
        None => loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if !timed_out && Instant::now() >= deadline {
                timed_out = true;
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        },
    };
    let stderr = erx.recv_timeout(grace).unwrap_or_default();
    let exit = if timed_out {
        Exit::TimedOut
    } else if let Some(code) = status.code() {
        Exit::Code(code)
    } else {
        use std::os::unix::process::ExitStatusExt;
        Exit::Signal(status.signal().unwrap_or(0))
    };
    Ok(EmulatorRun { exit, stderr, elapsed: start.elapsed() })
}
