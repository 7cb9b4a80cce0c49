//! The IDT, the interrupt entry stubs and the dispatcher.
//!
//! Every vector has a 16-byte stub that pushes a dummy error code (when the
//! CPU pushes none) and the vector number, then jumps to `isr_common`, which
//! saves the general registers *and the SSE state* (the precompiled `core`
//! uses SSE, so a handler may clobber the interrupted code's XMM registers)
//! and calls [`interrupt_dispatch`] with a pointer to the saved frame.
//!
//! Vector map: 0..31 exceptions, [`VEC_TIMER`], [`VEC_RESCHED`],
//! [`VEC_CALL`], the device lines from [`VEC_IRQ_BASE`] (`crate::irq`) and
//! [`VEC_SPURIOUS`].
//!
//! # The return path
//!
//! Every gate is an interrupt gate, so a handler runs with interrupts off
//! and hard interrupts never nest in each other. What runs after the
//! handler may enable them, though: `kport::irq::irq_exit` runs pending
//! softirqs, with interrupts on (Linux does). [`interrupt_dispatch`] does,
//! in this order:
//!
//! 1. `irq_frames` += 1 (this CPU's interrupts in progress, exit paths
//!    included); the interrupt is *outermost* if it was 0. Then
//!    `irq_depth` += 1: `in_irq()` is true.
//! 2. The handler; it sends the EOI (the timer and the IPIs first thing,
//!    device lines after their handler).
//! 3. `irq_depth` -= 1: `in_irq()` is false again.
//! 4. Outermost only: `kport::irq::irq_exit()`, with interrupts off; it may
//!    enable them and must disable them again (checked: a hook that
//!    returns with them on is reported once, and they are turned off).
//! 5. `irq_frames` -= 1.
//! 6. Outermost only: the preemption point (Linux's
//!    `preempt_schedule_irq`), if the interrupted code had interrupts on
//!    and preemption enabled and a reschedule is due.
//! 7. `iretq` (in `isr_common`).
//!
//! An interrupt that comes while an outer one is in step 4 finds
//! `irq_frames` at 1: it is not outermost, so it neither calls `irq_exit`
//! (softirqs it raises are run by the outer one's loop, or by
//! `ksoftirqd`) nor preempts (the outer one, after its `irq_exit`, sees the
//! reschedule it asked for). `irq_frames` also keeps the preemption points
//! of `preempt_enable` and lock release quiet, and makes `schedule` a bug,
//! while step 4 runs: it runs on the interrupted context's stack, on behalf
//! of no context. Stack: such a nested interrupt never enables interrupts,
//! so a kernel stack holds at most two interrupt frames (each about 700
//! bytes with the saved SSE state) besides the softirq handlers' frames.
//! Exceptions (vectors below 32) are fatal and skip all of this.

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

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
/// First device-line vector: line n is `VEC_IRQ_BASE + n` (`crate::irq`).
/// Its priority class (3) is above the timer's and the IPIs' (2), as
/// Linux puts device vectors above its legacy timer vector.
pub const VEC_IRQ_BASE: u8 = 0x30;
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
    // The handler is Rust built with SSE, so the interrupted code's XMM
    // registers and MXCSR are saved here (16-byte aligned, below the
    // frame). Not the x87 state: no code in this kernel uses it. FXSAVE
    // would do both, but under TCG it is a helper that copies 512 bytes,
    // where these moves are translated inline.
    movq %rsp, %rbx
    andq $-16, %rsp
    subq $272, %rsp
    movaps %xmm0, 0(%rsp)
    movaps %xmm1, 16(%rsp)
    movaps %xmm2, 32(%rsp)
    movaps %xmm3, 48(%rsp)
    movaps %xmm4, 64(%rsp)
    movaps %xmm5, 80(%rsp)
    movaps %xmm6, 96(%rsp)
    movaps %xmm7, 112(%rsp)
    movaps %xmm8, 128(%rsp)
    movaps %xmm9, 144(%rsp)
    movaps %xmm10, 160(%rsp)
    movaps %xmm11, 176(%rsp)
    movaps %xmm12, 192(%rsp)
    movaps %xmm13, 208(%rsp)
    movaps %xmm14, 224(%rsp)
    movaps %xmm15, 240(%rsp)
    stmxcsr 256(%rsp)
    movq %rbx, %rdi
    call interrupt_dispatch
    ldmxcsr 256(%rsp)
    movaps 0(%rsp), %xmm0
    movaps 16(%rsp), %xmm1
    movaps 32(%rsp), %xmm2
    movaps 48(%rsp), %xmm3
    movaps 64(%rsp), %xmm4
    movaps 80(%rsp), %xmm5
    movaps 96(%rsp), %xmm6
    movaps 112(%rsp), %xmm7
    movaps 128(%rsp), %xmm8
    movaps 144(%rsp), %xmm9
    movaps 160(%rsp), %xmm10
    movaps 176(%rsp), %xmm11
    movaps 192(%rsp), %xmm12
    movaps 208(%rsp), %xmm13
    movaps 224(%rsp), %xmm14
    movaps 240(%rsp), %xmm15
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

/// A test's probe, called on the return path right after `irq_exit` of
/// an outermost interrupt (step 4 of the module documentation); 0 if none.
static EXIT_PROBE: AtomicUsize = AtomicUsize::new(0);

/// Install (or with `None`, remove) the return-path probe: the testkernel's
/// `irq` cases use it to nest an interrupt in the `irq_exit` window.
pub fn set_exit_probe(probe: Option<fn()>) {
    EXIT_PROBE.store(probe.map_or(0, |f| f as usize), Ordering::Release);
}

/// Reports of an `irq_exit` that returned with interrupts enabled.
static EXIT_IRQS_ON: AtomicUsize = AtomicUsize::new(0);

/// How many times `irq_exit` (or the probe) returned with interrupts
/// enabled, a bug of the bottom-half layer's hook.
pub fn exits_with_irqs_on() -> usize {
    EXIT_IRQS_ON.load(Ordering::Relaxed)
}

/// Entry from `isr_common`; the order of the return path is in the module
/// documentation.
#[unsafe(no_mangle)]
extern "C" fn interrupt_dispatch(frame: &mut InterruptFrame) {
    let v = frame.vector as u8;
    if v < 32 {
        super::exceptions::handle(frame);
        return;
    }
    let pc = percpu::this_cpu();
    pc.irqs.fetch_add(1, Ordering::Relaxed);
    let outermost = pc.irq_frames.fetch_add(1, Ordering::Relaxed) == 0;
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
    if outermost {
        kport::irq::irq_exit();
        let probe = EXIT_PROBE.load(Ordering::Acquire);
        if probe != 0 {
            // SAFETY: only `set_exit_probe` stores here, and it stores
            // `fn()` pointers (never a dangling one: functions are static).
            let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(probe) };
            f();
        }
        if super::cpu::irqs_enabled() {
            super::cpu::cli();
            if EXIT_IRQS_ON.fetch_add(1, Ordering::Relaxed) == 0 {
                crate::console::emergency_line(format_args!(
                    "# WARNING: irq_exit returned with interrupts enabled on cpu {}",
                    pc.cpu.load(Ordering::Relaxed)
                ));
            }
        }
    }
    pc.irq_frames.fetch_sub(1, Ordering::Relaxed);
    // Preemption point on the way out of an interrupt (Linux's
    // `preempt_schedule_irq`): only when the interrupted code had interrupts on
    // and preemption enabled; the scheduler decides whether the model allows it.
    if outermost
        && frame.rflags & super::cpu::RFLAGS_IF != 0
        && pc.preempt_count.load(Ordering::Relaxed) == 0
        && pc.need_resched.load(Ordering::Relaxed)
    {
        crate::sched::preempt_from_irq();
    }
}
