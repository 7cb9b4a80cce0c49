//! The calling CPU's hottest words, read and written inline where the port
//! says where they are.
//!
//! The bottom-half and spinlock paths ask the port for the CPU number, the
//! bottom-half word, "in a hard interrupt?", and enter interrupts-off and
//! preemption-off sections many times per operation: a raise-and-run of a
//! tasklet asked it 17 times. Through the [`Port`](crate::Port) trait
//! object each is a dynamic call and a return, which under QEMU's TCG each
//! end a translation block and look the next one up; Linux's are single
//! per-CPU instructions (`this_cpu_read`, `__preempt_count_add`,
//! `local_irq_save`).
//!
//! A kernel port that reaches its per-CPU block through the GS segment (the
//! testkernel) tells this module where those words sit with
//! [`install_gs_layout`]; the functions here then do what Linux's do, in a
//! few instructions and no call. Elsewhere (the host port, loom, a port
//! that did not install a layout, another architecture) they are the port's
//! calls. Whether and how to reschedule stays the port's policy: the
//! inline re-enables and [`cond_resched`] call it only when the port's
//! need-resched flag is set (or never, for a port without kernel
//! preemption).

use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use crate::port;

/// Where a port's per-CPU block, at the GS segment's base on each CPU,
/// keeps the words this module reads (byte offsets of aligned `u32`
/// fields).
#[derive(Clone, Copy, Debug)]
pub struct GsLayout {
    /// The CPU number, what [`Port::cpu_id`](crate::Port::cpu_id) answers.
    pub cpu_id: u32,
    /// The preemption count that [`Port::preempt_disable`](crate::Port::preempt_disable)
    /// raises by one (written only by its own CPU); `None`: the calls stay.
    pub preempt_count: Option<u32>,
    /// The hard-interrupt nesting depth: non-zero exactly when
    /// [`Port::in_irq`](crate::Port::in_irq) is true; `None`: the calls stay.
    pub irq_depth: Option<u32>,
    /// When the port reschedules at a preemption re-enable.
    pub resched: Resched,
    /// [`Port::irq_save`](crate::Port::irq_save) is the processor's own:
    /// read the interrupt flag, then `cli` (then raise
    /// [`GsLayout::irq_off_count`] if given); and
    /// [`Port::irq_restore`](crate::Port::irq_restore) lowers that count,
    /// then is `sti` when the flag was set.
    pub native_irq_flag: bool,
    /// A count of the port's own interrupts-off sections that `irq_save`
    /// raises by one and `irq_restore` lowers (Redox, whose kernel code
    /// always runs with interrupts off, reports these sections as its
    /// interrupts-off state); `None`: no such count.
    pub irq_off_count: Option<u32>,
}

/// When a port reschedules at [`Port::preempt_enable`](crate::Port::preempt_enable)
/// and at a lock section's exit.
#[derive(Clone, Copy, Debug)]
pub enum Resched {
    /// Not said: the re-enables, the section exits and `cond_resched` stay
    /// calls.
    Unknown,
    /// Only while the byte at this offset is non-zero; while it is zero,
    /// [`Port::cond_resched`](crate::Port::cond_resched) and
    /// [`Port::preempt_check_resched`](crate::Port::preempt_check_resched)
    /// do nothing (the testkernel).
    Flag(u32),
    /// Never: a re-enable only lowers the count (a port without kernel
    /// preemption: Redox). Its `cond_resched` may do more (Redox opens an
    /// interrupt window there), so it stays a call.
    Never,
}

// Each offset is stored plus one: 0 means no layout, and one load answers
// both "installed?" and "where?". The two mode bytes below are stored after
// the offsets their paths read (release) and loaded with acquire: other
// CPUs may already take locks while the boot CPU installs the layout.
static CPU_ID: AtomicU32 = AtomicU32::new(0);
static PREEMPT: AtomicU32 = AtomicU32::new(0);
static IRQ_DEPTH: AtomicU32 = AtomicU32::new(0);
/// [`Resched`]: 0 unknown, [`NEVER`], else the flag's offset plus one.
static NEED_RESCHED: AtomicU32 = AtomicU32::new(0);
static IRQ_OFF: AtomicU32 = AtomicU32::new(0);
const NEVER: u32 = u32::MAX;

/// How `irq_save`/`irq_restore` go: the port's calls, the processor's flag
/// alone, or the flag and a count of sections ([`GsLayout::irq_off_count`]).
static IRQ_MODE: AtomicU8 = AtomicU8::new(IRQ_PORT);
const IRQ_PORT: u8 = 0;
const IRQ_NATIVE: u8 = 1;
const IRQ_COUNTED: u8 = 2;

/// How a lock section is entered and left, decided once at install so the
/// hot paths test one byte: the port's calls, the testkernel's form
/// (native flag, preemption count, need-resched byte) or Redox's (native
/// flag with its count of sections, preemption count, never a
/// reschedule). Other combinations keep the port's calls.
static SECTION_MODE: AtomicU8 = AtomicU8::new(SECTION_PORT);
const SECTION_PORT: u8 = 0;
const SECTION_FLAG: u8 = 1;
const SECTION_NEVER: u8 = 2;

/// Tell this module where the calling port keeps its per-CPU words.
///
/// # Safety
/// On every CPU that runs subsystem code from now on, the GS base must
/// point at that CPU's block before any of it runs, and the offsets must
/// be those of aligned `u32` fields (the need-resched flag: a byte) that
/// mean what [`GsLayout`] says. The
/// port's [`bh_word`](crate::Port::bh_word) must be the default one (one
/// word per CPU), and each CPU must run one context at a time.
///
/// Context: boot, on the boot CPU, after [`crate::install`].
#[cfg(target_arch = "x86_64")]
pub unsafe fn install_gs_layout(layout: GsLayout) {
    let plus_one = |o: Option<u32>| o.map_or(0, |o| o + 1);
    let resched = match layout.resched {
        Resched::Unknown => 0,
        Resched::Flag(o) => o + 1,
        Resched::Never => NEVER,
    };
    // The offsets first: each is whole by itself, and the modes below
    // promise the ones their paths read.
    NEED_RESCHED.store(resched, Ordering::Relaxed);
    IRQ_OFF.store(plus_one(layout.irq_off_count), Ordering::Relaxed);
    IRQ_DEPTH.store(plus_one(layout.irq_depth), Ordering::Relaxed);
    PREEMPT.store(plus_one(layout.preempt_count), Ordering::Relaxed);
    CPU_ID.store(layout.cpu_id + 1, Ordering::Relaxed);
    let irq = match (layout.native_irq_flag, layout.irq_off_count) {
        (false, _) => IRQ_PORT,
        (true, None) => IRQ_NATIVE,
        (true, Some(_)) => IRQ_COUNTED,
    };
    IRQ_MODE.store(irq, Ordering::Release);
    let section = match (irq, layout.preempt_count, layout.resched) {
        (IRQ_NATIVE, Some(_), Resched::Flag(_)) => SECTION_FLAG,
        (IRQ_COUNTED, Some(_), Resched::Never) => SECTION_NEVER,
        _ => SECTION_PORT,
    };
    SECTION_MODE.store(section, Ordering::Release);
}

#[cfg(target_arch = "x86_64")]
mod gs {
    use core::arch::asm;

    /// The `u32` at GS base + `off1` - 1.
    #[inline(always)]
    pub(super) fn read(off1: u32) -> u32 {
        let v: u32;
        // SAFETY: install_gs_layout's contract: GS points at this CPU's
        // block and `off1 - 1` is an aligned u32 field of it, read whole.
        unsafe {
            asm!("mov {v:e}, dword ptr gs:[{o} - 1]", o = in(reg) off1 as u64, v = out(reg) v,
                 options(nostack, readonly, preserves_flags));
        }
        v
    }

    /// The byte at GS base + `off1` - 1.
    #[inline(always)]
    pub(super) fn read_u8(off1: u32) -> u8 {
        let v: u8;
        // SAFETY: as in `read`, for a byte field.
        unsafe {
            asm!("mov {v}, byte ptr gs:[{o} - 1]", o = in(reg) off1 as u64, v = out(reg_byte) v,
                 options(nostack, readonly, preserves_flags));
        }
        v
    }

    /// Subtract one from the `u32` at GS base + `off1` - 1 (as [`inc`]).
    #[inline(always)]
    pub(super) fn dec(off1: u32) {
        // SAFETY: as in `inc`.
        unsafe {
            asm!("sub dword ptr gs:[{o} - 1], 1", o = in(reg) off1 as u64, options(nostack));
        }
    }

    /// Add one to the `u32` at GS base + `off1` - 1 in one instruction
    /// (no `lock`: only its own CPU writes it, and an interrupt between
    /// two instructions puts back what it raised).
    #[inline(always)]
    pub(super) fn inc(off1: u32) {
        // SAFETY: as in `read`; one `add` is whole against this CPU's
        // interrupts, and other CPUs only read the field.
        unsafe {
            asm!("add dword ptr gs:[{o} - 1], 1", o = in(reg) off1 as u64, options(nostack));
        }
    }

    /// Read the interrupt flag, then clear it.
    #[inline(always)]
    pub(super) fn irq_save() -> bool {
        let flags: u64;
        // SAFETY: pushes and pops one word of the stack and clears the
        // interrupt flag, which install_gs_layout's caller said is how the
        // port disables interrupts; no `nomem`: memory accesses must not
        // move across the `cli`.
        unsafe {
            asm!("pushfq", "pop {f}", "cli", f = out(reg) flags);
        }
        flags & (1 << 9) != 0
    }

    /// Set the interrupt flag.
    #[inline(always)]
    pub(super) fn sti() {
        // SAFETY: enables interrupts, as the port's own irq_restore does
        // (install_gs_layout's contract); a compiler barrier like `cli`.
        unsafe {
            asm!("sti", options(nostack));
        }
    }
}

/// The calling CPU's number (the port's [`cpu_id`](crate::Port::cpu_id)).
///
/// Context: any; with preemption enabled the answer may be stale at once.
#[inline(always)]
pub fn cpu_id() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let o = CPU_ID.load(Ordering::Relaxed);
        if o != 0 {
            return gs::read(o) as usize;
        }
    }
    port().cpu_id()
}

/// Is the caller a hard interrupt handler (the port's
/// [`in_irq`](crate::Port::in_irq))?
///
/// Context: any.
#[inline(always)]
pub fn in_irq() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let o = IRQ_DEPTH.load(Ordering::Relaxed);
        if o != 0 {
            return gs::read(o) != 0;
        }
    }
    port().in_irq()
}

/// The calling context's bottom-half word (the port's
/// [`bh_word`](crate::Port::bh_word)).
///
/// Context: any.
#[inline(always)]
pub fn bh_word() -> &'static AtomicU32 {
    #[cfg(target_arch = "x86_64")]
    {
        let o = CPU_ID.load(Ordering::Relaxed);
        if o != 0 {
            return crate::irq::per_cpu_bh_word(gs::read(o) as usize);
        }
    }
    port().bh_word()
}

/// Disable preemption (the port's
/// [`preempt_disable`](crate::Port::preempt_disable)).
///
/// Context: any.
#[inline(always)]
pub fn preempt_disable() {
    #[cfg(target_arch = "x86_64")]
    {
        let o = PREEMPT.load(Ordering::Relaxed);
        if o != 0 {
            gs::inc(o);
            return;
        }
    }
    port().preempt_disable()
}

/// Disable interrupts, returning whether they were enabled (the port's
/// [`irq_save`](crate::Port::irq_save)).
///
/// Context: any.
#[inline(always)]
pub fn irq_save() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let m = IRQ_MODE.load(Ordering::Acquire);
        if m != IRQ_PORT {
            let on = gs::irq_save();
            if m == IRQ_COUNTED {
                gs::inc(IRQ_OFF.load(Ordering::Relaxed));
            }
            return on;
        }
    }
    port().irq_save()
}

/// Restore the interrupt state [`irq_save`] returned (the port's
/// [`irq_restore`](crate::Port::irq_restore)).
///
/// Context: after the matching [`irq_save`].
#[inline(always)]
pub fn irq_restore(was_enabled: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let m = IRQ_MODE.load(Ordering::Acquire);
        if m != IRQ_PORT {
            if m == IRQ_COUNTED {
                gs::dec(IRQ_OFF.load(Ordering::Relaxed));
            }
            if was_enabled {
                gs::sti();
            }
            return;
        }
    }
    port().irq_restore(was_enabled)
}

/// Enter a spinlock's section: interrupts and preemption off, returning
/// whether interrupts were on (the port's
/// [`lock_enter`](crate::Port::lock_enter)). Left with [`lock_exit`].
///
/// Context: any.
#[inline(always)]
pub fn lock_enter() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let m = SECTION_MODE.load(Ordering::Acquire);
        if m == SECTION_FLAG {
            let on = gs::irq_save();
            gs::inc(PREEMPT.load(Ordering::Relaxed));
            return on;
        }
        if m == SECTION_NEVER {
            let on = gs::irq_save();
            gs::inc(IRQ_OFF.load(Ordering::Relaxed));
            gs::inc(PREEMPT.load(Ordering::Relaxed));
            return on;
        }
    }
    port().lock_enter()
}

/// The port's reschedule check, out of line: the inline paths reach it
/// only when the port's flag is set.
#[cold]
#[inline(never)]
fn check_resched() {
    port().preempt_check_resched();
}

/// Re-enable preemption (the port's
/// [`preempt_enable`](crate::Port::preempt_enable)): the count goes down
/// inline, and the port is asked to reschedule only if its flag says so.
///
/// Context: after the matching [`preempt_disable`].
#[inline(always)]
pub fn preempt_enable() {
    #[cfg(target_arch = "x86_64")]
    {
        let o = PREEMPT.load(Ordering::Relaxed);
        let nr = NEED_RESCHED.load(Ordering::Relaxed);
        if o != 0 && nr != 0 {
            gs::dec(o);
            if nr != NEVER && gs::read_u8(nr) != 0 {
                check_resched();
            }
            return;
        }
    }
    port().preempt_enable()
}

/// Leave a section entered with [`lock_enter`] (the port's
/// [`lock_exit`](crate::Port::lock_exit)): interrupts back on if they
/// were and the preemption count down, then the port's reschedule check if
/// its flag is set.
///
/// Context: after the matching [`lock_enter`].
#[inline(always)]
pub fn lock_exit(irqs_were_on: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let m = SECTION_MODE.load(Ordering::Acquire);
        if m == SECTION_FLAG {
            // The count first: with interrupts back on, the check below
            // is the only reschedule point.
            gs::dec(PREEMPT.load(Ordering::Relaxed));
            if irqs_were_on {
                gs::sti();
                if gs::read_u8(NEED_RESCHED.load(Ordering::Relaxed)) != 0 {
                    check_resched();
                }
            }
            return;
        }
        if m == SECTION_NEVER {
            // The port's default order: interrupts, then preemption.
            gs::dec(IRQ_OFF.load(Ordering::Relaxed));
            if irqs_were_on {
                gs::sti();
            }
            gs::dec(PREEMPT.load(Ordering::Relaxed));
            return;
        }
    }
    port().lock_exit(irqs_were_on)
}

/// Give the CPU away if a reschedule is due (the port's
/// [`cond_resched`](crate::Port::cond_resched)); with a layout, the port is
/// called only when its flag is set.
///
/// Context: task context that may sleep.
#[inline(always)]
pub fn cond_resched() {
    #[cfg(target_arch = "x86_64")]
    {
        let nr = NEED_RESCHED.load(Ordering::Relaxed);
        if nr != 0 && nr != NEVER && gs::read_u8(nr) == 0 {
            return;
        }
    }
    port().cond_resched()
}
