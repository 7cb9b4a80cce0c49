//! What the precompiled `core`/`alloc` expect from a C runtime that a
//! freestanding binary on the host target does not have: the `mem*` family
//! (`compiler_builtins` does not provide it on this target) and the two
//! unwinding entry points that `panic = "abort"` never calls.
//!
//! Only with the `runtime` feature, which only the freestanding binaries turn
//! on: on the host these `#[no_mangle]` symbols would clash with libc's.
//! Written with string instructions and index loops over volatile reads, so
//! that the compiler cannot turn them back into calls to themselves (the
//! `x86` crate has no string instructions: this asm stays hand-written).
//!
//! `memcpy` and `memset` move eight bytes per iteration (`rep movsq`/`rep
//! stosq`, then the tail byte by byte), as Linux does on CPUs without fast
//! byte strings (`ERMS`; QEMU's default CPU model has none): QEMU's TCG runs
//! a `rep` instruction one iteration at a time, so a byte per iteration made
//! a 4 KiB copy cost 4 096 emulated steps.

use core::arch::asm;

/// `memcpy`: copy `n` bytes between non-overlapping regions.
///
/// # Safety
/// `dst` and `src` must be valid for `n` bytes and must not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid and disjoint; `rep
    // movsq` copies the `n / 8` quadwords and `rep movsb` the `n % 8` bytes
    // after them, forwards with the direction flag clear (the ABI guarantees
    // DF = 0).
    unsafe {
        asm!("rep movsq", "mov rcx, {tail}", "rep movsb",
             tail = in(reg) n % 8,
             inout("rcx") n / 8 => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// `memmove`: copy `n` bytes between possibly overlapping regions.
///
/// # Safety
/// `dst` and `src` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n == 0 || (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when dst is below src or past its
        // end; the caller guarantees both ranges are valid.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: dst overlaps src from above: copy backwards from the last byte
    // (n > 0, so `n - 1` is inside both ranges) with DF set, and clear DF
    // again before returning.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
             options(nostack));
    }
    dst
}

/// `memset`: fill `n` bytes with the low byte of `c`.
///
/// # Safety
/// `dst` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    let word = u64::from(c as u8) * 0x0101_0101_0101_0101;
    // SAFETY: the caller guarantees the range is valid; `rep stosq` stores the
    // `n / 8` quadwords and `rep stosb` the `n % 8` bytes after them; DF = 0
    // (ABI).
    unsafe {
        asm!("rep stosq", "mov rcx, {tail}", "rep stosb",
             tail = in(reg) n % 8,
             inout("rcx") n / 8 => _, inout("rdi") dst => _, in("rax") word,
             options(nostack, preserves_flags));
    }
    dst
}

/// `memcmp`: compare `n` bytes.
///
/// # Safety
/// Both pointers must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: i < n and both ranges are valid for n bytes.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// `bcmp`: zero when the `n` bytes are equal.
///
/// # Safety
/// Both pointers must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Never called: the precompiled `alloc` refers to it (it was built with
/// unwinding), but with `panic = "abort"` nothing unwinds. Stops the CPU.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    loop {
        // SAFETY: the freestanding binaries run at CPL 0; halting with
        // interrupts off only stops this CPU.
        unsafe {
            x86::irq::disable();
            x86::halt();
        }
    }
}

/// Never called, for the same reason as [`_Unwind_Resume`]: the unwinding
/// personality routine the precompiled `core` refers to.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
