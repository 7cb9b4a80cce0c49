//! Feature `ktests`: run the shipped suites (`ktests` crate) inside Redox, before user space.
//!
//! `[kthread-boot]` calls [`run`] once the workqueues are started. The words of Redox's env (one
//! `KEY=VALUE` line per word of QEMU's `-append` when booted through the project's PVH shim) are
//! the suite's command line (`docs/guest-protocol.md`). The KTAP goes to the serial port through
//! the port's `console_line`, and QEMU exits through isa-debug-exit: 0x10 if every selected case
//! passed or was skipped, 0x11 otherwise. Before it exits it prints what `sys:kthread` reads, as
//! `# sys:kthread: ` diagnostic lines. A kernel panic during the run reports the running case
//! as failed and exits with 0x11 too.

use alloc::{format, string::String, vec::Vec};
use core::{
    panic::PanicInfo,
    sync::atomic::{AtomicBool, Ordering},
};

// The subsystem's API (the only lines to adapt when its crates change).
use ::ktests::{harness, Args};
use kport::{harness::Harness as _, Port as _, Result};

use super::{clock, port::PORT};

/// Redox's kernel code is never preempted: `preempt=full` cannot be honoured here.
const PREEMPT_FULL_ERROR: &str =
    "preempt=full: Redox never preempts kernel code (run with preempt=none)";

/// The suite's command line: Redox's env lines joined by spaces.
fn command_line() -> String {
    let env = crate::startup::init_env();
    let words: Vec<&str> = core::str::from_utf8(env)
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    words.join(" ")
}

fn fail_early(why: &str) -> ! {
    PORT.console_line(&format!("# ktest: error: {why}"));
    PORT.console_line("1..0");
    PORT.exit_machine(false)
}

/// Parse the command line, run the selected suites, and stop QEMU with their verdict.
/// `workqueues` is what `workqueue::init` returned: without them the run fails at once.
pub fn run(workqueues: Result<()>) -> ! {
    if let Err(e) = workqueues {
        fail_early(&format!("cannot start the workqueues: {e:?}"));
    }
    let line = command_line();
    // The testkernel's own machine checks: the topology is checked here by the shared suite.
    let args = match Args::parse(&line, &["expect_topology", "expect_numa_nodes"]) {
        Ok(a) => a,
        Err(e) => fail_early(&e),
    };
    let cpus = PORT.cpu_count();
    PORT.console_line(&format!(
        "# ktest: redox cpus={cpus} preempt=none tsc_mhz={} mem_mib={}",
        clock::tsc_hz() / 1_000_000,
        crate::memory::total_frames().saturating_mul(crate::memory::PAGE_SIZE) >> 20
    ));
    if line.split_ascii_whitespace().any(|w| w == "preempt=full") {
        fail_early(PREEMPT_FULL_ERROR);
    }
    if let Some(want) = args.expect_cpus
        && want != cpus
    {
        fail_early(&format!("expected {want} CPUs, found {cpus}"));
    }
    let ok = harness::run(&args);
    print_sys_kthread();
    PORT.exit_machine(ok)
}

/// Print what `sys:kthread` reads now, one `# sys:kthread: ` diagnostic line per line. Runs in
/// `[kthread-boot]`, whose port calls use its own lock token.
fn print_sys_kthread() {
    for line in super::ps_text().lines() {
        PORT.console_line(&format!("# sys:kthread: {line}"));
    }
}

/// Hook in Redox's panic handler: report the running case and stop QEMU (once).
pub fn panicked(info: &PanicInfo<'_>) {
    static ONCE: AtomicBool = AtomicBool::new(false);
    if ONCE.swap(true, Ordering::AcqRel) {
        return;
    }
    let at = info.location().map_or(String::from("?"), |l| {
        format!("{}:{}:{}", l.file(), l.line(), l.column())
    });
    let msg = format!("{}", info.message()).replace('\n', " ");
    PORT.console_line(&format!("# PANIC at {at}: {msg}"));
    super::dump_stack();
    harness::report_fatal(&format!("PANIC at {at}: {msg}"));
    PORT.exit_machine(false)
}
