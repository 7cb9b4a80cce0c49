//! Thin wrappers over single x86-64 instructions: port I/O, MSRs, control
//! registers, interrupt flag, TSC.

use core::arch::asm;

/// Write a byte to an I/O port.
pub fn outb(port: u16, val: u8) {
    // SAFETY: port I/O has no memory effects visible to Rust; the ports this
    // kernel writes (COM1, PIT, PIC, debug-exit) are owned by it.
    unsafe { asm!("out dx, al", in("dx") port, in("al") val, options(nomem, nostack, preserves_flags)) }
}

/// Read a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for `outb`.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Write a 32-bit value to an I/O port.
pub fn outl(port: u16, val: u32) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") val, options(nomem, nostack, preserves_flags)) }
}

/// Write a model-specific register.
pub fn wrmsr(msr: u32, val: u64) {
    // SAFETY: callers write architectural MSRs (GS base, EFER) with valid values.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") val as u32, in("edx") (val >> 32) as u32,
             options(nostack, preserves_flags))
    }
}

/// MSR holding the GS segment base (per-CPU data pointer).
pub const MSR_GS_BASE: u32 = 0xC000_0101;

/// Read the time-stamp counter, ordered after earlier loads (`lfence; rdtsc`).
#[inline(always)]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc is unprivileged and has no memory effects.
    unsafe { asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    ((hi as u64) << 32) | lo as u64
}

/// Read CR2 (the faulting address of the last page fault).
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Read CR3 (the page-table root).
pub fn cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Flush this CPU's whole TLB (non-global entries) by reloading CR3.
pub fn flush_tlb_local() {
    // SAFETY: writing back the current CR3 only drops cached translations.
    unsafe { asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack, preserves_flags)) }
}

/// Drop the TLB entry of one page on this CPU.
pub fn invlpg(addr: u64) {
    // SAFETY: invlpg only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) addr, options(nostack, preserves_flags)) }
}

/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;

/// Read RFLAGS.
#[inline(always)]
pub fn rflags() -> u64 {
    let v: u64;
    // SAFETY: pushfq/pop only touch the stack slot they use.
    unsafe { asm!("pushfq", "pop {}", out(reg) v, options(nomem, preserves_flags)) }
    v
}

/// Are interrupts enabled on this CPU?
#[inline(always)]
pub fn irqs_enabled() -> bool {
    rflags() & RFLAGS_IF != 0
}

/// Disable interrupts on this CPU.
#[inline(always)]
pub fn cli() {
    // SAFETY: masking interrupts cannot break memory safety. The asm is not
    // `nomem` so it also orders memory accesses like a compiler barrier.
    unsafe { asm!("cli", options(nostack)) }
}

/// Enable interrupts on this CPU.
#[inline(always)]
pub fn sti() {
    // SAFETY: the IDT is loaded before any code calls this.
    unsafe { asm!("sti", options(nostack)) }
}

/// Enable interrupts and halt until the next one, atomically (`sti; hlt`).
#[inline(always)]
pub fn sti_hlt() {
    // SAFETY: the sti shadow guarantees no interrupt is taken between the two
    // instructions, so a wake-up IPI cannot be lost before the halt.
    unsafe { asm!("sti", "hlt", options(nostack)) }
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
        // SAFETY: halting with interrupts off only stops this CPU (NMIs aside).
        unsafe { asm!("hlt", options(nomem, nostack)) }
    }
}

/// The current frame pointer (start of a backtrace).
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let v: u64;
    // SAFETY: reading rbp has no side effects.
    unsafe { asm!("mov {}, rbp", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}
