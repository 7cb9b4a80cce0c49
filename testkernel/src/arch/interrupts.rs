//! The IDT, the interrupt entry stubs and the dispatcher.
//!
//! Every vector has a 16-byte stub that pushes a dummy error code (when the
//! CPU pushes none) and the vector number, then jumps to `isr_common`, which
//! saves the general registers *and the SSE state* (the precompiled `core`
//! uses SSE, so a handler may clobber the interrupted code's XMM registers)
//! and calls [`interrupt_dispatch`] with a pointer to the saved frame.
//!
//! Vector map: 0..31 exceptions, [`VEC_TIMER`], [`VEC_RESCHED`],
//! [`VEC_CALL`] and [`VEC_SPURIOUS`].

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::Ordering;

use x86::bits64::segmentation::Descriptor64;
use x86::dtables::{self, DescriptorTablePointer};
use x86::segmentation::{BuildDescriptor, DescriptorBuilder, GateDescriptorBuilder, SegmentSelector};

use super::gdt;
use crate::percpu;

/// LAPIC timer.
pub const VEC_TIMER: u8 = 32;
/// Reschedule IPI (remote wake-up).
pub const VEC_RESCHED: u8 = 33;
/// Function-call IPI (`smp_call_function_single`).
pub const VEC_CALL: u8 = 34;
/// Spurious-interrupt vector of the LAPIC.
pub const VEC_SPURIOUS: u8 = 0xFF;

global_asm!(
    r#"
    .section .text.isr, "ax"
    .p2align 4
    .global isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .p2align 4
    .if !((vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30))
    pushq $0
    .endif
    pushq $vec
    jmp isr_common
    .set vec, vec + 1
    .endr

isr_common:
    cld
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rbx
    andq $-16, %rsp
    subq $512, %rsp
    fxsave64 (%rsp)
    movq %rbx, %rdi
    call interrupt_dispatch
    fxrstor64 (%rsp)
    movq %rbx, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
"#,
    options(att_syntax)
);

/// The registers saved on entry, in stack order.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct InterruptFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

#[repr(align(16))]
struct IdtCell(UnsafeCell<[Descriptor64; 256]>);
// SAFETY: written once by the boot CPU before any other CPU loads it.
unsafe impl Sync for IdtCell {}

static IDT: IdtCell = IdtCell(UnsafeCell::new([Descriptor64::NULL; 256]));

unsafe extern "C" {
    static isr_stubs: u8;
}

/// Fill the IDT (boot CPU, once): every vector is an interrupt gate (IF
/// cleared on entry) to its stub in the kernel code segment, at DPL 0, with
/// the IST stack of its kind for double faults, NMIs and machine checks.
pub fn init_idt() {
    let base = (&raw const isr_stubs) as u64;
    // SAFETY: called once on the boot CPU before the IDT is loaded anywhere.
    let idt = unsafe { &mut *IDT.0.get() };
    for (v, e) in idt.iter_mut().enumerate() {
        let ist = match v {
            8 => gdt::IST_DOUBLE_FAULT,
            2 => gdt::IST_NMI,
            18 => gdt::IST_MACHINE_CHECK,
            _ => 0,
        };
        let stub = base + 16 * v as u64;
        *e = <DescriptorBuilder as GateDescriptorBuilder<u64>>::interrupt_descriptor(
            SegmentSelector::from_raw(gdt::KERNEL_CS),
            stub,
        )
        .present()
        .ist(ist)
        .finish();
    }
}

/// Load the IDT on this CPU.
pub fn load_idt() {
    // SAFETY: the IDT is static and fully initialised (`init_idt` ran on the
    // boot CPU before any CPU loads it), and its gates point at the stubs
    // above; `lidt` at CPL 0 only tells this CPU where it is.
    unsafe {
        let ptr = DescriptorTablePointer::new(&*IDT.0.get());
        dtables::lidt(&ptr);
    }
}

/// Handler type for a device or IPI vector.
pub type Handler = fn(&mut InterruptFrame);

struct HandlerTable(UnsafeCell<[Option<Handler>; 256]>);
// SAFETY: entries are set during boot (before the vectors can fire) with
// single-word writes and only read afterwards.
unsafe impl Sync for HandlerTable {}
static HANDLERS: HandlerTable = HandlerTable(UnsafeCell::new([None; 256]));

/// Install `h` for `vector` (boot time only, before the vector can fire).
pub fn set_handler(vector: u8, h: Handler) {
    // SAFETY: see HandlerTable.
    unsafe { (*HANDLERS.0.get())[vector as usize] = Some(h) };
}

/// Entry from `isr_common`.
#[unsafe(no_mangle)]
extern "C" fn interrupt_dispatch(frame: &mut InterruptFrame) {
    let v = frame.vector as u8;
    if v < 32 {
        super::exceptions::handle(frame);
        return;
    }
    let pc = percpu::this_cpu();
    pc.irq_depth.fetch_add(1, Ordering::Relaxed);
    // SAFETY: see HandlerTable.
    let h = unsafe { (*HANDLERS.0.get())[v as usize] };
    match h {
        Some(h) => h(frame),
        None if v == VEC_SPURIOUS => {}
        None => {
            crate::console::emergency_line(format_args!(
                "# WARNING: unexpected interrupt vector {v} on cpu {}",
                pc.cpu.load(Ordering::Relaxed)
            ));
            super::apic::eoi();
        }
    }
    pc.irq_depth.fetch_sub(1, Ordering::Relaxed);
    // Preemption point on the way out of an interrupt (Linux's
    // `preempt_schedule_irq`): only when the interrupted code had interrupts on
    // and preemption enabled; the scheduler decides whether the model allows it.
    if frame.rflags & super::cpu::RFLAGS_IF != 0
        && pc.irq_depth.load(Ordering::Relaxed) == 0
        && pc.preempt_count.load(Ordering::Relaxed) == 0
        && pc.need_resched.load(Ordering::Relaxed)
    {
        crate::sched::preempt_from_irq();
    }
}
