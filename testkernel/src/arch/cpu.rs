//! Single x86-64 instructions as safe functions: port I/O, MSRs, control
//! registers, the TLB, the interrupt flag, the TSC. Each is the `x86` crate's
//! wrapper, made safe here because this kernel runs at CPL 0 with the
//! preconditions each one states; only `sti; hlt` stays hand-written, since
//! the two instructions must be adjacent (see `docs/hardware.md`).

use core::arch::asm;

use x86::bits64::rflags::{self, RFlags};

/// Write a byte to an I/O port.
#[inline]
pub fn outb(port: u16, val: u8) {
    // SAFETY: the kernel runs at CPL 0, so port I/O cannot fault; the ports it
    // writes (COM1, PIT, PIC, debug-exit, PCI configuration) are its own devices, and port I/O
    // has no effect on memory Rust knows about.
    unsafe { x86::io::outb(port, val) }
}

/// Read a byte from an I/O port.
#[inline]
pub fn inb(port: u16) -> u8 {
    // SAFETY: as for `outb`.
    unsafe { x86::io::inb(port) }
}

/// Write a 32-bit value to an I/O port.
#[inline]
pub fn outl(port: u16, val: u32) {
    // SAFETY: as for `outb`.
    unsafe { x86::io::outl(port, val) }
}

/// Read a 32-bit value from an I/O port.
#[inline]
pub fn inl(port: u16) -> u32 {
    // SAFETY: as for `outb`; reads of the PCI configuration data port have
    // no effect on memory.
    unsafe { x86::io::inl(port) }
}

/// Write a model-specific register.
pub fn wrmsr(msr: u32, val: u64) {
    // SAFETY: CPL 0; callers write architectural MSRs (the GS base) with
    // valid values, which changes nothing Rust relies on.
    unsafe { x86::msr::wrmsr(msr, val) }
}

/// MSR holding the GS segment base (per-CPU data pointer).
pub const MSR_GS_BASE: u32 = x86::msr::IA32_GS_BASE;

/// Read the time-stamp counter, ordered after earlier loads (`lfence; rdtsc`).
#[inline(always)]
pub fn rdtsc() -> u64 {
    x86::fence::lfence();
    // SAFETY: CR4.TSD is clear (the kernel never sets it), and at CPL 0 it
    // would not matter: rdtsc cannot fault here and touches no memory.
    unsafe { x86::time::rdtsc() }
}

/// Read CR2 (the faulting address of the last page fault).
pub fn cr2() -> u64 {
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { x86::controlregs::cr2() as u64 }
}

/// Read CR3 (the page-table root).
pub fn cr3() -> u64 {
    // SAFETY: reading CR3 at CPL 0 has no side effects.
    unsafe { x86::controlregs::cr3() }
}

/// Flush this CPU's whole TLB (non-global entries) by reloading CR3.
pub fn flush_tlb_local() {
    // SAFETY: writing back the current CR3 only drops cached translations.
    unsafe { x86::tlb::flush_all() }
}

/// Drop the TLB entry of one page on this CPU.
pub fn invlpg(addr: u64) {
    // SAFETY: invlpg at CPL 0 only drops a cached translation.
    unsafe { x86::tlb::flush(addr as usize) }
}

/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = RFlags::FLAGS_IF.bits();

/// Read RFLAGS.
#[inline(always)]
pub fn rflags() -> u64 {
    rflags::read().bits()
}

/// Are interrupts enabled on this CPU?
#[inline(always)]
pub fn irqs_enabled() -> bool {
    rflags() & RFLAGS_IF != 0
}

/// Disable interrupts on this CPU.
#[inline(always)]
pub fn cli() {
    // SAFETY: masking interrupts cannot break memory safety. The crate's asm
    // is not `nomem`, so it also orders memory accesses like a compiler
    // barrier, which the lock paths rely on.
    unsafe { x86::irq::disable() }
}

/// Enable interrupts on this CPU.
#[inline(always)]
pub fn sti() {
    // SAFETY: the IDT is loaded before any code calls this; like `cli`, a
    // compiler barrier.
    unsafe { x86::irq::enable() }
}

/// Enable interrupts and halt until the next one, atomically (`sti; hlt`).
///
/// Hand-written: the `sti` shadow covers only the next instruction, so the two
/// must be adjacent in one `asm!` block; two separate calls could let an
/// interrupt (the wake-up IPI) in between, and the CPU would then halt with
/// the wake-up already consumed.
#[inline(always)]
pub fn sti_hlt() {
    // SAFETY: the sti shadow guarantees no interrupt is taken between the two
    // instructions, so a wake-up IPI cannot be lost before the halt.
    unsafe { asm!("sti", "hlt", options(nostack)) }
}

/// Halt until the next interrupt this CPU takes; with interrupts off, only
/// an NMI (or INIT) ends it.
#[inline(always)]
pub fn hlt() {
    // SAFETY: halting only stops this CPU until an interrupt or NMI.
    unsafe { x86::halt() }
}

/// Spin-wait hint.
#[inline(always)]
pub fn pause() {
    core::hint::spin_loop()
}

/// Halt this CPU forever with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        cli();
        // SAFETY: halting with interrupts off only stops this CPU (NMIs aside,
        // after which the loop halts again).
        unsafe { x86::halt() }
    }
}

/// The current frame pointer (start of a backtrace).
#[inline(always)]
pub fn frame_pointer() -> u64 {
    x86::bits64::registers::rbp()
}

/// The address of the instruction after this one (the first line of a
/// backtrace of the code running now).
#[inline(always)]
pub fn instruction_pointer() -> u64 {
    let rip: u64;
    // SAFETY: reads RIP into a register; no memory, stack or flags touched.
    unsafe { core::arch::asm!("lea {}, [rip]", out(reg) rip, options(nomem, nostack, preserves_flags)) };
    rip
}
