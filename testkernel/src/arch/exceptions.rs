//! CPU exceptions: every one is fatal in this kernel. The report names the
//! exception, the CPU, the error code, the registers and a frame-pointer
//! backtrace (the runner symbolizes it), then the machine stops with the fail
//! code. A page fault or double fault on a stack guard page is reported as a
//! kernel stack overflow.

use super::cpu;
use super::interrupts::InterruptFrame;

const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range exceeded",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack-segment fault",
    "general protection fault",
    "page fault",
    "reserved (15)",
    "x87 floating-point error",
    "alignment check",
    "machine check",
    "SIMD floating-point error",
    "virtualization exception",
    "control protection exception",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "hypervisor injection exception",
    "VMM communication exception",
    "security exception",
    "reserved (31)",
];

/// Handle exception `frame.vector` (< 32).
pub fn handle(frame: &mut InterruptFrame) {
    let v = frame.vector as usize;
    if v == 2 && crate::panic::stopping() {
        // Another CPU is reporting a fatal error and asked everyone to stop.
        cpu::halt_forever();
    }
    if v == 2 && crate::sched::nmi_wakes_offline_cpu() {
        // `cpu_up` waking this hot-unplugged CPU from its halt.
        return;
    }
    let cr2 = if v == 14 || v == 8 { cpu::cr2() } else { 0 };
    let headline = match crate::mem::stack::guard_owner(cr2) {
        Some(owner) if v == 14 || v == 8 => {
            crate::panic::begin_fatal();
            crate::console::emergency_line(format_args!(
                "# EXCEPTION: kernel stack overflow ({} on the guard page at {cr2:#x} below the stack of {owner}) on cpu {}",
                NAMES[v],
                crate::percpu::cpu_id()
            ));
            "kernel stack overflow"
        }
        _ => {
            crate::panic::begin_fatal();
            crate::console::emergency_line(format_args!(
                "# EXCEPTION: {} (vector {v}) on cpu {}, error code {:#x}",
                NAMES[v],
                crate::percpu::cpu_id(),
                frame.error_code
            ));
            NAMES[v]
        }
    };
    dump_frame(frame, cr2);
    crate::panic::finish_fatal(headline, frame.rip, frame.rbp);
}

fn dump_frame(f: &InterruptFrame, cr2: u64) {
    use crate::console::emergency_line as l;
    l(format_args!("# rip={:#018x} rsp={:#018x} rflags={:#x} cr2={cr2:#x}", f.rip, f.rsp, f.rflags));
    l(format_args!("# rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x}", f.rax, f.rbx, f.rcx, f.rdx));
    l(format_args!("# rsi={:#x} rdi={:#x} rbp={:#x} r8={:#x}", f.rsi, f.rdi, f.rbp, f.r8));
    l(format_args!("# r9={:#x} r10={:#x} r11={:#x} r12={:#x}", f.r9, f.r10, f.r11, f.r12));
    l(format_args!("# r13={:#x} r14={:#x} r15={:#x}", f.r13, f.r14, f.r15));
}
