//! Feature `ktests`: run the shipped suites (`ktests` crate) inside Redox, before user space.
//!
//! `[kthread-boot]` calls [`run`] once the workqueues are started. The words of Redox's env (one
//! `KEY=VALUE` line per word of QEMU's `-append` when booted through the project's PVH shim) are
//! the suite's command line (`docs/guest-protocol.md`). The KTAP goes to the serial port through
//! the port's `console_line`, and QEMU exits through isa-debug-exit: 0x10 if every selected case
//! passed or was skipped, 0x11 otherwise. Before it exits it prints what `sys:kthread` reads, as
//! `# sys:kthread: ` diagnostic lines. A kernel panic during the run reports the running case
//! as failed and exits with 0x11 too.
//!
//! User space. `kmain` does not start it at once: it idles in [`hold_user_space`] until a case
//! of the `redox_user` suite (registered here, run only when named in `tests=`) asks for it,
//! then starts Redox's first user program as it normally does. That program (the project's
//! `tests/redox-user`, which the shim hands over as the bootstrap image) checks from user space
//! what a Redox user sees, prints its results as a KTAP subtest of the case and reports its
//! verdict by writing `pass` or `fail` to `sys:ktest` ([`sys_ktest`]), which completes the case.
//! The run then ends as usual, when the harness is done. Without `redox_user` in `tests=` user
//! space never starts.

use alloc::{format, string::String, sync::Arc, vec::Vec};
use core::{
    panic::PanicInfo,
    sync::atomic::{AtomicBool, AtomicU8, Ordering},
};

// The subsystem's API (the only lines to adapt when its crates change).
use ::ktests::{check, check_eq, harness, ktest, Args, Failure};
use kport::{harness::Harness as _, sync::Completion, Port as _, Result, EPERM};

use super::{clock, lend, port::PORT, token::with_token};
use crate::{
    arch::interrupt,
    context::{self, switch::SwitchResult, ContextLock},
    sync::CleanLockToken,
    syscall::error::{Error, EINVAL},
};

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
    let args = match Args::parse(
        &line,
        &[
            "expect_topology",
            "expect_numa_nodes",
            "irq_softirq",
            "kblk",
        ],
    ) {
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

/// Print what `sys:kthread`, `sys:softirqs` and `sys:interrupts` read now, one `# sys:NAME: `
/// diagnostic line per line. Runs in `[kthread-boot]`, whose port calls use its own lock token.
fn print_sys_kthread() {
    for line in super::ps_text().lines() {
        PORT.console_line(&format!("# sys:kthread: {line}"));
    }
    for line in softirq::softirq::softirqs_text().lines() {
        PORT.console_line(&format!("# sys:softirqs: {line}"));
    }
    for line in super::irq::interrupts_text().lines() {
        PORT.console_line(&format!("# sys:interrupts: {line}"));
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

/// Set by the `redox_user` suite: `kmain` may start user space.
static START_USER_SPACE: AtomicBool = AtomicBool::new(false);
/// Completed when the user program has reported its verdict through `sys:ktest`.
static USER_REPORTED: Completion = Completion::new();
/// The user program's verdict: [`NO_VERDICT`], [`USER_PASSED`] or [`USER_FAILED`].
static USER_VERDICT: AtomicU8 = AtomicU8::new(NO_VERDICT);
const NO_VERDICT: u8 = 0;
const USER_PASSED: u8 = 1;
const USER_FAILED: u8 = 2;
/// Longest the user program may take, from the case's request to its verdict (s).
const USER_SPACE_TIMEOUT_S: u32 = 120;

/// Hook in `kmain` (feature `ktests`), where it would start user space: run Redox's idle loop
/// on the boot CPU (as `run_userspace` does) until the `redox_user` suite asks for user space,
/// then return, with interrupts off as `kmain` runs, so that `kmain` starts it as it normally
/// does. Without that suite the run ends (the harness stops QEMU) while this still loops.
pub fn hold_user_space(token: &mut CleanLockToken) {
    loop {
        // SAFETY: kmain's context, the boot CPU's idle context, runs with interrupts off except
        // in the windows below, exactly as Redox's own idle loop.
        unsafe { interrupt::disable() };
        if START_USER_SPACE.load(Ordering::Acquire) {
            return;
        }
        match context::switch(token) {
            // SAFETY: as in Redox's idle loop: let the interrupts that arrived in, then go on.
            SwitchResult::Switched => unsafe { interrupt::enable_and_nop() },
            // SAFETY: as in Redox's idle loop (with the series' poll): wait for the next interrupt
            // (the PIT's at the latest, which also brings a request for user space here within a
            // tick).
            SwitchResult::AllContextsIdle => unsafe { super::idle_wait() },
        }
    }
}

/// `sys:ktest` (feature `ktests`; write-only, root only, as every writable `sys:` file): the
/// user program of the `redox_user` suite reports its verdict, `pass` or `fail`. Runs in the
/// program's `write`, whose token the completion's wake-up borrows.
pub fn sys_ktest(buf: &[u8], token: &mut CleanLockToken) -> crate::syscall::error::Result<usize> {
    let verdict = match buf.trim_ascii() {
        b"pass" => USER_PASSED,
        b"fail" => USER_FAILED,
        _ => return Err(Error::new(EINVAL)),
    };
    USER_VERDICT.store(verdict, Ordering::Release);
    lend(token, || USER_REPORTED.complete_all());
    Ok(buf.len())
}

/// Every kernel context named `name` (Redox's context list, read with the caller's token).
fn contexts_named(name: &str, token: &mut CleanLockToken) -> Vec<Arc<ContextLock>> {
    let mut found = Vec::new();
    let mut list = context::contexts(token.downgrade());
    let (list, mut token) = list.token_split();
    for c in list.iter() {
        if c.read(token.token()).name.as_str() == name {
            found.push(Arc::clone(&c.0));
        }
    }
    found
}

// Redox's kill path refuses kernel threads: the hook `proc:` calls before its stop, continue,
// interrupt and kill verbs answers EPERM for kthreadd and for this case's own kernel context,
// whatever the verb.
ktest!(redox_user::kill_path_refuses_kernel_threads [explicit = true] => |_ctx| {
    let answers = with_token(|token| {
        let mut targets = contexts_named("[kthreadd]", token);
        check_eq!(targets.len(), 1, "[kthreadd] contexts");
        targets.push(context::current());
        let mut answers = Vec::new();
        for target in &targets {
            for verb in [1, 2, 3, usize::MAX] {
                answers.push(super::signal_from_user(target, verb, token).map_err(|e| e.errno));
            }
        }
        Ok(answers)
    })?;
    check!(answers.iter().all(|a| *a == Err(EPERM)), "answers {answers:?}, expected EPERM for each");
    Ok(())
});

// Start user space as kmain normally does, with the project's user program as the bootstrap
// image; the program prints its checks as a KTAP subtest of this case and reports its verdict
// through `sys:ktest`. Booted without that program (the shim's zeroed bootstrap page), Redox
// panics in `usermode_bootstrap` on the missing entry point and this case reports the panic.
ktest!(redox_user::user_space [explicit = true, timeout_s = USER_SPACE_TIMEOUT_S] => |_ctx| {
    check!(!START_USER_SPACE.load(Ordering::Acquire), "user space was already started");
    // The program checks that `sys:softirqs` counts TIMER runs. Any suite run before this one
    // (delayed work, timers) makes some; run first, nothing may have yet: one soft timer's
    // expiry makes sure of it.
    let fired = Arc::new(AtomicBool::new(false));
    let f = fired.clone();
    let timer = softirq::SoftTimer::new(Arc::new(move || f.store(true, Ordering::Release)));
    timer.arm(PORT.now_ns().saturating_add(1_000_000), None);
    check!(
        ::ktests::port_api::wait_for(5_000, || fired.load(Ordering::Acquire)),
        "a 1 ms soft timer never fired through TIMER"
    );
    START_USER_SPACE.store(true, Ordering::Release);
    USER_REPORTED.wait("redox_user");
    match USER_VERDICT.load(Ordering::Acquire) {
        USER_PASSED => Ok(()),
        _ => Err(Failure::Fail(String::from("the user program reported failures (its results above)"))),
    }
});

// --------------------------------------------------------------- Redox's bottom halves

/// Fire the test line and wait until the `irq:` scheme has had one more delivery of it.
fn fire_and_wait_delivery(line: u32) -> core::result::Result<(), Failure> {
    let before = super::irq::scheme_deliveries(line);
    kport::irq::TestIrq::fire(&super::irq::TEST_IRQ);
    check!(
        ::ktests::port_api::wait_for(5_000, || super::irq::scheme_deliveries(line) > before),
        "the test line's irq: delivery never came"
    );
    Ok(())
}

// With the deferral on (the `irq_softirq=1` env word, here switched at run time), a line that
// no kernel handler takes reaches the irq: scheme from a HI tasklet, in softirq context, and
// nothing is delivered from the hard interrupt; switched off, delivery is immediate again.
ktest!(redox_bh::irq_scheme_delivery_moves_to_a_softirq => |_ctx| {
    let Some(line) = super::irq::test_line() else {
        return ::ktests::skip("no free vector for the test line");
    };
    let was = super::irq::scheme_deferral();
    super::irq::set_scheme_deferral(true);
    let [direct0, deferred0, marked0] = super::irq::scheme_counters();
    let outside0 = super::irq::deferred_outside_softirq();
    let result = (|| {
        for _ in 0..5 {
            fire_and_wait_delivery(line)?;
        }
        let [direct1, deferred1, marked1] = super::irq::scheme_counters();
        check!(deferred1.0 >= deferred0.0 + 5, "deferred deliveries {} -> {}", deferred0.0, deferred1.0);
        check!(marked1.0 >= marked0.0 + 5, "marks in hard IRQ {} -> {}", marked0.0, marked1.0);
        check_eq!(direct1.0, direct0.0, "deliveries made in hard IRQ while deferring");
        check_eq!(super::irq::deferred_outside_softirq(), outside0, "deferred deliveries outside softirq context");
        super::irq::set_scheme_deferral(false);
        fire_and_wait_delivery(line)?;
        let [direct2, deferred2, _] = super::irq::scheme_counters();
        check!(direct2.0 > direct1.0, "no delivery in hard IRQ with the deferral off");
        check_eq!(deferred2.0, deferred1.0, "a deferred delivery with the deferral off");
        Ok(())
    })();
    super::irq::set_scheme_deferral(was);
    result
});

// sys:softirqs and sys:interrupts print Linux's tables.
ktest!(redox_bh::sys_softirqs_and_sys_interrupts_print_linux_tables => |_ctx| {
    let (softirqs, interrupts) = with_token(|token| {
        (super::sys_softirqs(token), super::sys_interrupts(token))
    });
    let softirqs = String::from_utf8(softirqs.map_err(|e| Failure::Fail(format!("sys:softirqs: {e:?}")))?)
        .map_err(|_| Failure::Fail("sys:softirqs is not UTF-8".into()))?;
    let interrupts = String::from_utf8(interrupts.map_err(|e| Failure::Fail(format!("sys:interrupts: {e:?}")))?)
        .map_err(|_| Failure::Fail("sys:interrupts is not UTF-8".into()))?;
    for cpu in 0..PORT.cpu_count() {
        let col = format!("CPU{cpu}");
        check!(softirqs.lines().next().is_some_and(|h| h.contains(&col)), "sys:softirqs header lacks {col}:\n{softirqs}");
        check!(interrupts.lines().next().is_some_and(|h| h.contains(&col)), "sys:interrupts header lacks {col}:\n{interrupts}");
    }
    for v in ["HI:", "TIMER:", "NET_TX:", "NET_RX:", "BLOCK:", "IRQ_POLL:", "TASKLET:", "SCHED:", "HRTIMER:", "RCU:"] {
        check!(softirqs.lines().any(|l| l.trim_start().starts_with(v)), "sys:softirqs has no {v} row:\n{softirqs}");
    }
    check!(interrupts.contains("irq-scheme delivery:"), "sys:interrupts lacks the delivery counters:\n{interrupts}");
    Ok(())
});

// ksoftirqd/N for every CPU, and an irq/N-name thread while a threaded handler is requested,
// show in the kernel-thread listing (sys:kthread, what kthread-ps reads).
ktest!(redox_bh::ksoftirqd_and_irq_threads_are_listed => |_ctx| {
    let ps = super::ps_text();
    for cpu in 0..PORT.cpu_count() {
        let name = format!("ksoftirqd/{cpu}");
        check!(ps.lines().any(|l| l.contains(&name)), "sys:kthread lacks {name}:\n{ps}");
    }
    let Some(line) = super::irq::test_line() else {
        return ::ktests::skip("no free vector for the test line");
    };
    let action = softirq::request_threaded_irq(
        line,
        None,
        Some(alloc::boxed::Box::new(|_| softirq::IrqReturn::Handled)),
        softirq::IrqFlags::ONESHOT,
        "kt-listed",
    )
    .map_err(|e| Failure::Fail(format!("request_threaded_irq: {e:?}")))?;
    let ps = super::ps_text();
    let name = format!("irq/{line}-kt-listed");
    let want: String = name.chars().take(15).collect();
    let listed = ps.lines().any(|l| l.contains(&want));
    softirq::free_irq(action).map_err(|(e, _)| Failure::Fail(format!("free_irq: {e:?}")))?;
    check!(listed, "sys:kthread lacks {want}:\n{ps}");
    Ok(())
});

/// The RTC (CMOS ports 0x70/0x71) as a device a test can make interrupt on legacy line 8: its
/// periodic interrupt. The index/data pair is shared by the handler (CPU 0) and the test thread
/// (any CPU): one lock with interrupts off around each access.
static RTC: kport::sync::SpinLock<()> = kport::sync::SpinLock::new(());
/// Runs of the test's RTC handlers.
static RTC_RUNS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// The RTC's legacy line.
const RTC_LINE: u32 = 8;

fn cmos_read(reg: u8) -> u8 {
    use crate::syscall::io::{Io, Pio};
    let _g = RTC.lock();
    Pio::<u8>::new(0x70).write(reg);
    Pio::<u8>::new(0x71).read()
}

fn cmos_write(reg: u8, value: u8) {
    use crate::syscall::io::{Io, Pio};
    let _g = RTC.lock();
    Pio::<u8>::new(0x70).write(reg);
    Pio::<u8>::new(0x71).write(value);
}

/// Turn the RTC's periodic interrupt on (64 Hz) or off; returns register A as it was.
fn rtc_periodic(on: bool, old_a: Option<u8>) -> u8 {
    let a = cmos_read(0x0A);
    let b = cmos_read(0x0B);
    if on {
        cmos_write(0x0A, (a & 0xF0) | 10);
        cmos_write(0x0B, b | 0x40);
    } else {
        cmos_write(0x0B, b & !0x40);
        if let Some(old) = old_a {
            cmos_write(0x0A, old);
        }
    }
    // Register C clears the flags the RTC may have raised meanwhile.
    let _ = cmos_read(0x0C);
    a
}

fn rtc_handled() -> u64 {
    (0..PORT.cpu_count())
        .map(|c| softirq::irq::irq_count(RTC_LINE, c))
        .sum()
}

// A legacy line with a kernel handler: the RTC's periodic interrupt on line 8 reaches the
// handler from Redox's `rtc` handler, never the irq: scheme, with the line unmasked between
// interrupts; then as a threaded ONESHOT action, the line masked at the PIC while the thread
// runs and unmasked after. The lines Redox's own handlers keep are refused.
ktest!(redox_bh::a_legacy_line_goes_to_a_kernel_handler => |_ctx| {
    for line in [0, 1, 2, 3, 4, 12] {
        let r = softirq::request_irq(line, alloc::boxed::Box::new(|_| softirq::IrqReturn::Handled), softirq::IrqFlags::empty(), "kt-refused");
        check_eq!(r.map(|_| ()).map_err(|e| e.errno), Err(EINVAL), "request_irq of Redox's own line {line}");
    }
    let scheme_before = super::irq::scheme_deliveries(RTC_LINE);
    let counted_before = rtc_handled();
    let action = softirq::request_irq(
        RTC_LINE,
        alloc::boxed::Box::new(|_| {
            let _ = cmos_read(0x0C);
            RTC_RUNS.fetch_add(1, Ordering::SeqCst);
            softirq::IrqReturn::Handled
        }),
        softirq::IrqFlags::empty(),
        "kt-rtc",
    )
    .map_err(|e| Failure::Fail(format!("request_irq(8): {e:?}")))?;
    let runs0 = RTC_RUNS.load(Ordering::SeqCst);
    let old_a = rtc_periodic(true, None);
    let got = ::ktests::port_api::wait_for(5_000, || RTC_RUNS.load(Ordering::SeqCst) >= runs0 + 5);
    rtc_periodic(false, Some(old_a));
    ::ktests::port_api::msleep(50);
    let runs = RTC_RUNS.load(Ordering::SeqCst) - runs0;
    let freed = softirq::free_irq(action).map_err(|(e, _)| Failure::Fail(format!("free_irq: {e:?}")));
    check!(got, "the RTC's periodic interrupt reached the kernel handler {runs} times in 5 s");
    freed?;
    check_eq!(rtc_handled() - counted_before, runs, "line 8's counters against the handler's runs");
    check_eq!(super::irq::scheme_deliveries(RTC_LINE), scheme_before, "line 8 reached the irq: scheme while a kernel handler had it");

    // ONESHOT: the thread function runs with the line masked; the interrupts keep coming.
    let runs0 = RTC_RUNS.load(Ordering::SeqCst);
    let action = softirq::request_threaded_irq(
        RTC_LINE,
        Some(alloc::boxed::Box::new(|_| {
            let _ = cmos_read(0x0C);
            softirq::IrqReturn::WakeThread
        })),
        Some(alloc::boxed::Box::new(|_| {
            RTC_RUNS.fetch_add(1, Ordering::SeqCst);
            softirq::IrqReturn::Handled
        })),
        softirq::IrqFlags::ONESHOT,
        "kt-rtc-thread",
    )
    .map_err(|e| Failure::Fail(format!("request_threaded_irq(8): {e:?}")))?;
    let old_a = rtc_periodic(true, None);
    let got = ::ktests::port_api::wait_for(5_000, || RTC_RUNS.load(Ordering::SeqCst) >= runs0 + 5);
    rtc_periodic(false, Some(old_a));
    let thread_runs = RTC_RUNS.load(Ordering::SeqCst) - runs0;
    let state = super::irq::line_state(RTC_LINE);
    let freed = softirq::free_irq(action).map_err(|(e, _)| Failure::Fail(format!("free_irq: {e:?}")));
    let imr = {
        use crate::syscall::io::{Io, Pio};
        (Pio::<u8>::new(0x21).read(), Pio::<u8>::new(0xa1).read())
    };
    check!(got, "the threaded handler ran {thread_runs} times in 5 s: the ONESHOT mask was not lifted (PIC masks {:#04x} {:#04x}, RTC C {:#04x}, B {:#04x}, line 8 handled {}, (masked, pending, handler, running, arrivals) {:?})", imr.0, imr.1, cmos_read(0x0C), cmos_read(0x0B), rtc_handled(), state);
    freed?;
    check_eq!(super::irq::scheme_deliveries(RTC_LINE), scheme_before, "line 8 reached the irq: scheme while a kernel handler had it");
    Ok(())
});

// A vector line's reservation survives a detach (Redox's `set_reserved(.., false)` releases
// nothing), and attaching the same line again must still work: the glue knows the reservation
// is its own. A line no one reserved is taken, released and taken again.
ktest!(redox_bh::a_vector_line_can_be_attached_again => |_ctx| {
    let test = super::irq::test_line();
    let line = (16..224u32)
        .rev()
        .filter(|l| Some(*l) != test)
        .find(|l| {
            let v = *l as u8 + 32;
            (0..PORT.cpu_count()).all(|c| !interrupt::is_reserved(crate::cpu_set::LogicalCpuId::new(c as u32), v))
        })
        .ok_or_else(|| Failure::Fail("no free vector line".into()))?;
    for round in 0..3 {
        let action = softirq::request_irq(line, alloc::boxed::Box::new(|_| softirq::IrqReturn::Handled), softirq::IrqFlags::empty(), "kt-again")
            .map_err(|e| Failure::Fail(format!("round {round}: request_irq({line}): {e:?}")))?;
        softirq::free_irq(action).map_err(|(e, _)| Failure::Fail(format!("round {round}: free_irq: {e:?}")))?;
    }
    Ok(())
});

/// The runner's image pattern (`tests/runner/src/disks.rs`): byte `i` of sector `s`.
fn image_byte(sector: u64, i: usize) -> u8 {
    if i < 8 {
        sector.to_le_bytes()[i]
    } else {
        (sector.wrapping_mul(31).wrapping_add(i as u64) & 0xff) as u8
    }
}

fn image_bytes(pos: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|k| image_byte((pos + k) / 512, ((pos + k) % 512) as usize))
        .collect()
}

// The disks as files (`sys:kblk/NAME`): the functions the scheme's handles call, driven directly
// with kernel buffers, at offsets and lengths that are not whole sectors (a bounce buffer for
// reads, read-modify-write for writes), across the largest transfer, and at the end.
ktest!(redox_blk::the_disk_file_reads_and_writes_at_any_offset => |ctx| {
    if !super::bus::enabled() {
        return ::ktests::skip("no kblk=virtio in Redox's env");
    }
    let Ok(d) = super::kblk::find("kblk-main") else {
        return ::ktests::skip("no disk kblk-main (the runner gives the disks to boots with the block suite)");
    };
    check_eq!(super::kblk::find("vda").map(|v| v.info().serial.clone()).ok(), Some(String::from("kblk-main")), "vda is kblk-main");
    let size = super::kblk::size(&d);
    check_eq!(size, 16 << 20, "kblk-main's size");
    // An unaligned read of the untouched first half.
    let mut buf = alloc::vec![0u8; 3000];
    check_eq!(super::kblk::read_at(&d, 1000, &mut buf), Ok(3000), "read of 3000 bytes at 1000");
    check!(buf == image_bytes(1000, 3000), "3000 bytes at 1000 differ from the image's pattern");
    // Longer than one transfer.
    let mut big = alloc::vec![0u8; (2 << 20) + 700];
    check_eq!(super::kblk::read_at(&d, 4 << 20, &mut big), Ok(big.len()), "a read of 2 MiB + 700");
    check!(big == image_bytes(4 << 20, big.len()), "2 MiB + 700 bytes at 4 MiB differ from the image");
    // An unaligned write in the last MiB keeps its neighbours.
    let at = (15u64 << 20) + 100;
    let data: Vec<u8> = (0..5000).map(|_| ctx.rng.next_u64() as u8).collect();
    check_eq!(super::kblk::write_at(&d, at, &data), Ok(5000), "write of 5000 bytes at 15 MiB + 100");
    let first = at / 512 * 512;
    let end = (at + 5000).next_multiple_of(512);
    let mut want = image_bytes(first, (end - first) as usize);
    want[(at - first) as usize..(at - first) as usize + 5000].copy_from_slice(&data);
    let mut back = alloc::vec![0u8; (end - first) as usize];
    check_eq!(super::kblk::read_at(&d, first, &mut back), Ok(back.len()), "read back");
    check!(back == want, "the write at 15 MiB + 100 did not land exactly (or lost its neighbours)");
    harness::diag_line(&format!(
        "block-image: serial=kblk-main sector={} count={} fnv1a64={:016x}",
        first / 512,
        (end - first) / 512,
        want.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
    ));
    check_eq!(super::kblk::sync(&d), Ok(()), "fsync");
    // The end of the disk, as for a file.
    let mut tail = alloc::vec![0u8; 100];
    check_eq!(super::kblk::read_at(&d, size - 10, &mut tail), Ok(10), "a read across the end");
    check_eq!(super::kblk::read_at(&d, size, &mut tail), Ok(0), "a read at the end");
    check_eq!(super::kblk::write_at(&d, size, &tail), Ok(0), "a write at the end");
    // The read-only disk refuses writes; the file API says so.
    let ro = super::kblk::find("kblk-ro").map_err(|e| Failure::Fail(format!("kblk-ro: {e:?}")))?;
    check_eq!(super::kblk::write_at(&ro, 512, &[1, 2, 3]).map_err(|e| e.errno), Err(crate::syscall::error::EROFS), "a write to kblk-ro");
    let stats = with_token(|token| super::kblk::sys_diskstats(token)).unwrap_or_default();
    let stats = String::from_utf8(stats).unwrap_or_default();
    check!(stats.contains("kblk-main") && stats.lines().count() >= 3, "sys:diskstats:\n{stats}");
    Ok(())
});
