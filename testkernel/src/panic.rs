//! Fatal errors: panics and exceptions. The first CPU to fail stops the
//! others with an NMI, prints the report and a backtrace, lets the test harness
//! report the running test as failed, and exits QEMU with the fail code.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::arch::cpu;
use crate::console::emergency_line;

static STOPPING: AtomicBool = AtomicBool::new(false);
static FATAL_CPU: AtomicU32 = AtomicU32::new(u32::MAX);

/// Has a CPU begun a fatal report (others should halt)?
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// Claim the fatal path: the first CPU stops the others; a second fatal error
/// on another CPU halts quietly; a nested one on the same CPU (a fault while
/// reporting) exits at once.
pub fn begin_fatal() {
    cpu::cli();
    let me = crate::percpu::cpu_id_raw();
    match FATAL_CPU.compare_exchange(u32::MAX, me, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            STOPPING.store(true, Ordering::Release);
            crate::arch::apic::stop_other_cpus();
        }
        Err(c) if c == me => {
            emergency_line(format_args!("# fatal error while reporting a fatal error on cpu {me}"));
            crate::exit::exit_qemu(false);
        }
        Err(_) => cpu::halt_forever(),
    }
}

/// Print a backtrace starting at `rip` with frame pointer `rbp`, let the
/// harness report the running test, and exit with the fail code.
pub fn finish_fatal(reason: &str, rip: u64, rbp: u64) -> ! {
    backtrace(rip, rbp);
    crate::harness::report_fatal(reason);
    crate::exit::exit_qemu(false)
}

/// Most frames printed in a backtrace.
const MAX_FRAMES: usize = 48;

/// Print `# backtrace:` and one `#  N: 0x…` line per frame, walking the
/// frame-pointer chain (the kernel is built with frame pointers). Stops at a
/// null, unaligned or unmapped frame pointer.
pub fn backtrace(rip: u64, mut rbp: u64) {
    emergency_line(format_args!("# backtrace:"));
    emergency_line(format_args!("#  0: {rip:#018x}"));
    for i in 1..MAX_FRAMES {
        if rbp == 0 || rbp & 7 != 0 || !crate::mem::paging::is_mapped(rbp) || !crate::mem::paging::is_mapped(rbp + 8) {
            break;
        }
        // SAFETY: rbp is aligned and both words are mapped (checked above); a
        // corrupt chain can only make us print wrong addresses.
        let (next, ret) = unsafe { ((rbp as *const u64).read_volatile(), ((rbp + 8) as *const u64).read_volatile()) };
        if ret == 0 {
            break;
        }
        emergency_line(format_args!("# {i:2}: {:#018x}", ret.saturating_sub(1)));
        if next <= rbp {
            break;
        }
        rbp = next;
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    begin_fatal();
    let msg = info.message();
    match info.location() {
        Some(loc) => emergency_line(format_args!(
            "# PANIC at {}:{}:{}: {msg} (cpu {}, in {})",
            loc.file(),
            loc.line(),
            loc.column(),
            crate::percpu::cpu_id_raw(),
            crate::sched::current_name_for_report()
        )),
        None => emergency_line(format_args!("# PANIC: {msg}")),
    }
    let rbp = cpu::frame_pointer();
    // The first frame is this function; its return address is the caller.
    finish_fatal("PANIC", panic as *const () as u64, rbp)
}
