//! Interrupts for the bottom-half layer (crate `softirq`): the interrupt-exit hook, device lines
//! kernel code can attach handlers to (kport's `IrqChip`), a test line, and the option that moves
//! the `irq:` scheme's event delivery out of hard-IRQ context.
//!
//! * **Interrupt exit.** Every `interrupt!` handler of Redox ends with [`interrupt_exit`] (the
//!   series adds the call to the macro), `generic_irq` with [`irq_exit`], and the PIT's `tick()`
//!   path calls it from the glue's tick hook before `tick()` decides to switch. It runs the
//!   pending softirqs as Linux's `irq_exit` does, but with interrupts still off: Redox has no
//!   separate interrupt stacks and its handlers run on the interrupted context's stack, so a
//!   nested interrupt there is not an option (the one deviation from Linux, see
//!   `docs/redox.md`). A kernel thread's yield points run them too ([`yield_point`]), after the
//!   interrupt window they open.
//! * **Lines** are Redox's IRQ numbers: 0..15 the legacy ISA lines (the PIC, delivered to CPU 0)
//!   and 16..223 the vectors 48..255 of `generic_irq`, where MSI-style devices and the test line
//!   arrive. The legacy lines Redox handles itself (0 PIT, 1 keyboard, 2 cascade, 3 and 4 serial,
//!   12 mouse) are refused (`EINVAL`); the others go to a kernel handler, when one is attached,
//!   instead of the `irq:` scheme: `trigger()` and `generic_irq` ask [`irq_dispatch`] first. A
//!   vector line is reserved on every CPU while attached, so the `irq:` scheme does not hand it to
//!   a user driver.
//! * **Masking.** A legacy line is masked at the PIC, whose request register keeps one edge for
//!   the unmask. A vector line has no mask: masking is lazy, as Linux's for edge lines, and a fire
//!   while masked is latched and sent again (an IPI of its vector) at unmask; several fires while
//!   masked are one interrupt. An interrupt already on its way when a legacy line is masked is
//!   latched too and, at unmask, handed to the handler from there (Linux's software resend).
//! * **The test line** is the highest vector free on every CPU when the workqueues start,
//!   reserved for good. [`TEST_IRQ`] fires it with a fixed IPI to the last CPU (not CPU 0, whose PIT
//!   interrupt is every CPU's clock); it waits for the previous fire to arrive first, since the local APIC
//!   merges two requests of one vector.
//! * **`irq:` delivery in a softirq.** With the env word `irq_softirq=1` (or
//!   [`set_scheme_deferral`]), [`irq_deliver`] does not call the `irq:` scheme's trigger in the
//!   hard interrupt: it marks the line and schedules a HI tasklet, which delivers the marked
//!   lines' events. The counters in `sys:interrupts` show the cycles the deliveries took in each
//!   place, and what marking cost in the hard interrupt.

use alloc::{boxed::Box, string::String, vec::Vec};
use core::{
    fmt::Write,
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
};

// The subsystem's API (the only lines to adapt when its crates change).
use kport::{
    irq::{IrqChip, IrqHandler, TestIrq},
    Error, Port as _, Result, EBUSY, EINVAL, MAX_CPUS,
};
use softirq::Tasklet;
use spin::{Mutex, Once};

use super::{lend, percpu_of, port::PORT};
use crate::{cpu_set::LogicalCpuId, sync::CleanLockToken};

/// Redox's IRQ numbers: vector = line + 32.
const NR_LINES: u32 = 224;
/// Lines below this are the legacy ISA lines.
const LEGACY_LINES: u32 = 16;
/// The first vector of line 0.
const VECTOR_BASE: u32 = 32;

/// What a line's lock protects.
struct LineState {
    handler: Option<&'static dyn IrqHandler>,
    masked: bool,
    pending: bool,
    /// The line's vector is reserved because this glue reserved it: Redox's
    /// `set_reserved(.., false)` ORs the bit in and so never releases a
    /// vector, and a later `attach` of the same line must not take the
    /// glue's own reservation for a user driver's.
    reserved_by_glue: bool,
    /// Handed out by `msi_alloc` for a device's MSI-X message aimed at this CPU.
    msi_cpu: Option<usize>,
}

/// One line. L: its lock; A: atomic.
struct Line {
    /// L: handler and mask state.
    state: Mutex<LineState>,
    /// A: CPUs running the handler now (raised under the lock).
    running: AtomicU32,
    /// A: interrupts that arrived at the line, taken, latched or passed on.
    arrivals: AtomicU64,
    /// A: handler runs per CPU (`IrqChip::count`), one counter per CPU present.
    handled: Box<[AtomicU64]>,
    /// A: deliveries to the `irq:` scheme per CPU, now or deferred.
    scheme: Box<[AtomicU64]>,
}

impl Line {
    fn new(cpus: usize) -> Self {
        Line {
            state: Mutex::new(LineState {
                handler: None,
                masked: false,
                pending: false,
                reserved_by_glue: false,
                msi_cpu: None,
            }),
            running: AtomicU32::new(0),
            arrivals: AtomicU64::new(0),
            handled: (0..cpus).map(|_| AtomicU64::new(0)).collect(),
            scheme: (0..cpus).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

static LINES: Once<Vec<Line>> = Once::new();
/// The test line, once chosen.
static TEST_LINE: Once<u32> = Once::new();

fn line(irq: u32) -> Option<&'static Line> {
    LINES.get().and_then(|l| l.get(irq as usize))
}

fn cpu_count() -> usize {
    (crate::cpu_count() as usize).min(MAX_CPUS)
}

/// Set up the lines, choose and reserve the test line, and read the `irq_softirq` env word. In
/// `[kthread-boot]`, once every CPU is up (their IDTs exist) and before user space asks the
/// `irq:` scheme for vectors.
pub fn init() {
    let cpus = cpu_count();
    LINES.call_once(|| (0..NR_LINES).map(|_| Line::new(cpus)).collect());
    let free = |vector: u32| {
        (0..cpus).all(|c| {
            !crate::arch::interrupt::is_reserved(LogicalCpuId::new(c as u32), vector as u8)
        })
    };
    if let Some(v) = (VECTOR_BASE + LEGACY_LINES..VECTOR_BASE + NR_LINES)
        .rev()
        .find(|&v| free(v))
    {
        reserve(v, true);
        TEST_LINE.call_once(|| v - VECTOR_BASE);
    }
    if env_word("irq_softirq=1") {
        set_scheme_deferral(true);
    }
}

/// Is `word` a line of Redox's env?
pub(super) fn env_word(word: &str) -> bool {
    core::str::from_utf8(crate::startup::init_env())
        .unwrap_or("")
        .lines()
        .any(|l| l.trim() == word)
}

fn reserve(vector: u32, on: bool) {
    for c in 0..cpu_count() {
        crate::arch::interrupt::set_reserved(LogicalCpuId::new(c as u32), vector as u8, on);
    }
}

/// The legacy lines Redox's own handlers keep: the PIT, the keyboard, the cascade, the two
/// serial ports, the mouse.
const REDOX_LEGACY_LINES: [u32; 6] = [0, 1, 2, 3, 4, 12];

/// Mask legacy line `irq` at the PIC.
fn pic_mask(irq: u32) {
    // SAFETY: a line below 16 that Redox's own handlers do not use; the PIC is initialised at
    // boot, and Redox's `trigger()` masks lines the same way from interrupt context.
    unsafe { crate::arch::interrupt::irq::mask(irq as usize) }
}

/// Unmask legacy line `irq` at the PIC.
fn pic_unmask(irq: u32) {
    // SAFETY: as `pic_mask`; this is what the `irq:` scheme does when a driver acknowledges.
    unsafe { crate::arch::interrupt::irq::acknowledge(irq as usize) }
}

/// Where the test line's interrupts (and resends at unmask) go: the last CPU. Not CPU 0, which
/// takes Redox's PIT interrupt and passes the tick on to the others: a handler that holds its
/// CPU in a test would stop every CPU's clock there.
fn target_cpu() -> usize {
    cpu_count().saturating_sub(1)
}

/// Send `vector` to CPU `cpu` as a fixed interrupt.
fn send_vector(cpu: usize, vector: u32) {
    let Some(apic_id) = percpu_of(cpu).misc_arch_info.apic_id_opt.get() else {
        return;
    };
    // SAFETY: the local APIC is mapped (Redox's own IPIs use it); a fixed, physical-destination
    // interrupt of a vector whose handler is `generic_irq` (the line is reserved, so no other
    // handler owns it).
    unsafe {
        let apic = crate::arch::device::local_apic::the_local_apic();
        let shift = if apic.x2 { 32 } else { 56 };
        apic.set_icr((u64::from(apic_id.get()) << shift) | u64::from(vector));
    }
}

/// Hook in `generic_irq`, before it delivers to the `irq:` scheme: a line with a kernel handler
/// is handled here (true: the caller skips the scheme). In hard-IRQ context, before the EOI.
pub fn irq_dispatch(irq: u8, token: &mut CleanLockToken) -> bool {
    let Some(l) = line(u32::from(irq)) else {
        return false;
    };
    l.arrivals.fetch_add(1, Ordering::AcqRel);
    let handler = {
        let mut st = l.state.lock();
        let Some(h) = st.handler else {
            return false;
        };
        if st.masked {
            st.pending = true;
            return true;
        }
        l.running.fetch_add(1, Ordering::AcqRel);
        h
    };
    if let Some(c) = l.handled.get(crate::cpu_id().get() as usize) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    lend(token, || {
        super::port::as_irq(|| handler.handle(u32::from(irq)))
    });
    l.running.fetch_sub(1, Ordering::AcqRel);
    true
}

/// The interrupt-exit hook, with the handler's token (`generic_irq`, the tick path): run the
/// pending softirqs (kport's `irq_exit`), with the port's interrupts-off count raised, as it
/// asks.
pub fn irq_exit(token: &mut CleanLockToken) {
    super::count_interrupt();
    lend(token, || {
        let was = PORT.irq_save();
        kport::irq::irq_exit();
        PORT.irq_restore(was);
    });
}

/// The interrupt-exit hook at the end of every `interrupt!` handler. Those handlers take a
/// token of their own the same way: interrupts reach kernel code only where it holds no lock
/// (user mode, the idle loop, a kernel thread's yield window).
pub fn interrupt_exit() {
    // SAFETY: see above; the handler's own token is gone by now.
    let mut token = unsafe { CleanLockToken::new() };
    irq_exit(&mut token);
}

/// At a kernel thread's yield point, after its interrupt window: run what the window's
/// interrupts left pending (a window's interrupt exits ran them already unless they came in
/// between).
pub fn yield_point() {
    // Interrupts are off: the caller closed its window with `cli`, and Redox's kernel code runs
    // with them off. Only the port's count of interrupts-off sections is kept, as `irq_save`
    // keeps it, without reading the flags back.
    super::port::count_irqs_off(true);
    kport::irq::softirq_point_on(crate::cpu_id().get() as usize);
    super::port::count_irqs_off(false);
}

// ------------------------------------------------------------------- irq: scheme delivery

static DEFER: AtomicBool = AtomicBool::new(false);
/// Lines whose `irq:` events wait for the tasklet.
static DEFERRED_LINES: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static DELIVER_TASKLET: Once<Tasklet> = Once::new();

/// Deliveries to the `irq:` scheme in hard-IRQ context, and the cycles they took there.
static DIRECT: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// Deliveries made by the tasklet, and their cycles (hard-IRQ time saved).
static DEFERRED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// Deferrals, and the cycles marking and scheduling took in hard-IRQ context.
static MARKED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Turn the deferral of `irq:` deliveries to a softirq on or off (the env word `irq_softirq=1`
/// turns it on at boot).
pub fn set_scheme_deferral(on: bool) {
    DELIVER_TASKLET.call_once(|| Tasklet::new(deliver_deferred));
    DEFER.store(on, Ordering::Release);
}

/// Is `irq:` delivery deferred to a softirq?
pub fn scheme_deferral() -> bool {
    DEFER.load(Ordering::Acquire)
}

/// `(count, cycles)` of the deliveries made in hard-IRQ context, of those made by the tasklet,
/// and of the deferrals' own work in hard-IRQ context.
pub fn scheme_counters() -> [(u64, u64); 3] {
    let get = |c: &[AtomicU64; 2]| (c[0].load(Ordering::Relaxed), c[1].load(Ordering::Relaxed));
    [get(&DIRECT), get(&DEFERRED), get(&MARKED)]
}

fn count_scheme(irq: u8) {
    if let Some(c) = line(u32::from(irq)).and_then(|l| l.scheme.get(crate::cpu_id().get() as usize))
    {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn add(c: &[AtomicU64; 2], cycles: u64) {
    c[0].fetch_add(1, Ordering::Relaxed);
    c[1].fetch_add(cycles, Ordering::Relaxed);
}

/// Redox's delivery of line `irq` to the `irq:` scheme (the series calls this where Redox called
/// `irq_trigger`): now, or, with the deferral on, from a HI tasklet. In hard-IRQ context.
pub fn irq_deliver(irq: u8, token: &mut CleanLockToken) {
    let t0 = super::clock::cycles();
    if scheme_deferral() && softirq_ready() {
        DEFERRED_LINES[usize::from(irq / 64)].fetch_or(1 << (irq % 64), Ordering::AcqRel);
        if let Some(t) = DELIVER_TASKLET.get() {
            lend(token, || t.hi_schedule());
        }
        add(&MARKED, super::clock::cycles().saturating_sub(t0));
        return;
    }
    count_scheme(irq);
    crate::scheme::irq::irq_trigger(irq, token);
    add(&DIRECT, super::clock::cycles().saturating_sub(t0));
}

/// The workqueues (and with them the softirq layer) are up: a tasklet would run.
fn softirq_ready() -> bool {
    softirq::softirq::started()
}

/// Deferred deliveries made outside softirq context (0 unless the tasklet is misused).
static OUTSIDE_SOFTIRQ: AtomicU64 = AtomicU64::new(0);

/// Deferred deliveries that ran outside softirq context so far (a bug if not 0).
pub fn deferred_outside_softirq() -> u64 {
    OUTSIDE_SOFTIRQ.load(Ordering::Relaxed)
}

/// The tasklet: deliver every marked line's events.
fn deliver_deferred() {
    if !softirq::in_serving_softirq() {
        OUTSIDE_SOFTIRQ.fetch_add(1, Ordering::Relaxed);
    }
    for (word, bits) in DEFERRED_LINES.iter().enumerate() {
        let mut pending = bits.swap(0, Ordering::AcqRel);
        while pending != 0 {
            let bit = pending.trailing_zeros();
            pending &= pending - 1;
            let irq = (word as u32 * 64 + bit) as u8;
            let t0 = super::clock::cycles();
            count_scheme(irq);
            super::token::with_token(|token| crate::scheme::irq::irq_trigger(irq, token));
            add(&DEFERRED, super::clock::cycles().saturating_sub(t0));
        }
    }
}

// ----------------------------------------------------------------------------- the chip

/// The port's `IrqChip`.
pub struct RedoxIrqChip;

/// The one chip.
pub static CHIP: RedoxIrqChip = RedoxIrqChip;

impl IrqChip for RedoxIrqChip {
    fn nr_irqs(&self) -> u32 {
        NR_LINES
    }

    fn attach(&self, irq: u32, handler: &'static dyn IrqHandler) -> Result<()> {
        if REDOX_LEGACY_LINES.contains(&irq) {
            return Err(Error::new(EINVAL));
        }
        let l = line(irq).ok_or(Error::new(EINVAL))?;
        let test = TEST_LINE.get() == Some(&irq);
        let mut st = l.state.lock();
        if st.handler.is_some() {
            return Err(Error::new(EBUSY));
        }
        if irq < LEGACY_LINES {
            st.handler = Some(handler);
            st.masked = false;
            st.pending = false;
            // The irq: scheme may have left it masked for a driver's acknowledgement.
            pic_unmask(irq);
            return Ok(());
        }
        if !test {
            let vector = irq + VECTOR_BASE;
            let taken = (0..cpu_count()).any(|c| {
                crate::arch::interrupt::is_reserved(LogicalCpuId::new(c as u32), vector as u8)
            });
            if taken && !st.reserved_by_glue {
                // A user driver (or Redox) has the vector.
                return Err(Error::new(EBUSY));
            }
            reserve(vector, true);
            st.reserved_by_glue = true;
        }
        st.handler = Some(handler);
        st.masked = false;
        st.pending = false;
        Ok(())
    }

    fn detach(&self, irq: u32) {
        let Some(l) = line(irq) else {
            return;
        };
        {
            let mut st = l.state.lock();
            if st.handler.take().is_none() {
                return;
            }
            st.pending = false;
        }
        while l.running.load(Ordering::Acquire) != 0 {
            PORT.yield_now();
        }
        if irq < LEGACY_LINES {
            // Back to the irq: scheme, unmasked as its flow expects.
            pic_unmask(irq);
        } else if TEST_LINE.get() != Some(&irq) {
            let vector = irq + VECTOR_BASE;
            reserve(vector, false);
            // Still reserved where Redox cannot release a vector: remember
            // that the reservation is the glue's own.
            l.state.lock().reserved_by_glue = (0..cpu_count()).any(|c| {
                crate::arch::interrupt::is_reserved(LogicalCpuId::new(c as u32), vector as u8)
            });
        }
    }

    fn mask(&self, irq: u32) {
        if let Some(l) = line(irq) {
            let mut st = l.state.lock();
            st.masked = true;
            if irq < LEGACY_LINES && st.handler.is_some() {
                pic_mask(irq);
            }
        }
    }

    fn unmask(&self, irq: u32) {
        let Some(l) = line(irq) else {
            return;
        };
        if irq < LEGACY_LINES {
            let resend = {
                let mut st = l.state.lock();
                st.masked = false;
                let pending = core::mem::take(&mut st.pending) && st.handler.is_some();
                if st.handler.is_some() {
                    pic_unmask(irq);
                }
                pending
            };
            if resend {
                // An interrupt taken while the line was masked: raise it again as the PIC would,
                // with an IPI of the line's vector to the boot CPU, where Redox's handler for the
                // line runs `trigger()` and the dispatch (Linux's software resend). Never from
                // here: the caller may hold the line's action lock (a one-shot release).
                send_vector(0, irq + VECTOR_BASE);
            }
            return;
        }
        let test = TEST_LINE.get() == Some(&irq);
        let mut to = target_cpu();
        let resend = {
            let mut st = l.state.lock();
            st.masked = false;
            if let Some(cpu) = st.msi_cpu {
                to = cpu;
            }
            let pending = core::mem::take(&mut st.pending) && st.handler.is_some();
            if pending && test {
                // A test fire still on its way arrives unmasked and is handled: no resend, or
                // the local APIC would merge the two and the fires' count would never catch up.
                // The resend claims its place in the count as a fire does (`fire` takes no line
                // lock): a fire that got in between is on its way and stands for this one.
                let sent = SENT.load(Ordering::Acquire);
                l.arrivals.load(Ordering::Acquire) >= sent
                    && SENT
                        .compare_exchange(sent, sent + 1, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
            } else {
                pending
            }
        };
        if resend {
            send_vector(to, irq + VECTOR_BASE);
        }
    }

    fn describe(&self, irq: u32) -> &'static str {
        if TEST_LINE.get() == Some(&irq) {
            "APIC-vector test"
        } else if irq < LEGACY_LINES {
            "XT-PIC"
        } else if line(irq).is_some_and(|l| l.state.lock().msi_cpu.is_some()) {
            "PCI-MSI-X"
        } else {
            "APIC-vector"
        }
    }

    fn count(&self, irq: u32, cpu: usize) -> u64 {
        line(irq)
            .and_then(|l| l.handled.get(cpu))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// A vector line free on every CPU (taken from the top, below the test line), reserved on
    /// every CPU as `attach` does, with the xAPIC message that raises it on `cpu`: address
    /// `0xFEE0_0000 | APIC ID << 12` (physical destination), data the vector (fixed, edge).
    /// Redox's x2APIC mode accepts the same message for APIC IDs below 256.
    fn msi_alloc(&self, cpu: usize) -> Result<kport::irq::MsiLine> {
        if cpu >= cpu_count() {
            return Err(Error::new(EINVAL));
        }
        let apic_id = percpu_of(cpu)
            .misc_arch_info
            .apic_id_opt
            .get()
            .map(|a| a.get())
            .filter(|a| *a < 256)
            .ok_or(Error::new(EINVAL))?;
        for irq in (LEGACY_LINES..NR_LINES).rev() {
            if TEST_LINE.get() == Some(&irq) {
                continue;
            }
            let Some(l) = line(irq) else { continue };
            let vector = irq + VECTOR_BASE;
            let mut st = l.state.lock();
            if st.handler.is_some() || st.msi_cpu.is_some() {
                continue;
            }
            let taken = (0..cpu_count()).any(|c| {
                crate::arch::interrupt::is_reserved(LogicalCpuId::new(c as u32), vector as u8)
            });
            if taken && !st.reserved_by_glue {
                continue;
            }
            reserve(vector, true);
            st.reserved_by_glue = true;
            st.msi_cpu = Some(cpu);
            return Ok(kport::irq::MsiLine {
                irq,
                address: 0xfee0_0000 | (u64::from(apic_id) << 12),
                data: vector,
            });
        }
        Err(Error::new(EBUSY))
    }

    /// Forget the message's CPU and release the vector (as far as Redox releases one).
    fn msi_free(&self, irq: u32) {
        let Some(l) = line(irq) else { return };
        let mut st = l.state.lock();
        if st.msi_cpu.is_none() || st.handler.is_some() {
            return;
        }
        st.msi_cpu = None;
        let vector = irq + VECTOR_BASE;
        reserve(vector, false);
        st.reserved_by_glue = (0..cpu_count()).any(|c| {
            crate::arch::interrupt::is_reserved(LogicalCpuId::new(c as u32), vector as u8)
        });
    }
}

/// The port's `TestIrq`: the test line, fired with a fixed IPI to the last CPU.
pub struct RedoxTestIrq;

/// The test interrupt (the harness's `test_irq`), if a vector was free.
pub static TEST_IRQ: RedoxTestIrq = RedoxTestIrq;

/// Interrupts of the test line's vector sent so far (fires and resends at unmask): every one
/// arrives, so the line's `arrivals` catches up with it.
static SENT: AtomicU64 = AtomicU64::new(0);

/// The test line, if one was reserved.
pub fn test_line() -> Option<u32> {
    TEST_LINE.get().copied()
}

impl TestIrq for RedoxTestIrq {
    fn line(&self) -> u32 {
        test_line().unwrap_or(NR_LINES)
    }

    fn fire(&self) {
        let (Some(irq), Some(l)) = (test_line(), test_line().and_then(line)) else {
            return;
        };
        // Every interrupt sent before must have arrived, or the local APIC would merge this
        // one with it.
        loop {
            let sent = SENT.load(Ordering::Acquire);
            if l.arrivals.load(Ordering::Acquire) >= sent
                && SENT
                    .compare_exchange(sent, sent + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                break;
            }
            if PORT.in_atomic() {
                core::hint::spin_loop();
            } else {
                PORT.yield_now();
            }
        }
        send_vector(target_cpu(), irq + VECTOR_BASE);
    }
}

// ------------------------------------------------------------------------ sys: files

/// `sys:softirqs`: Linux's `/proc/softirqs` table.
pub fn sys_softirqs(token: &mut CleanLockToken) -> crate::syscall::error::Result<Vec<u8>> {
    Ok(lend(token, softirq::softirq::softirqs_text).into_bytes())
}

/// `sys:interrupts`: Linux's `/proc/interrupts` table of the lines with kernel handlers, then
/// the lines delivered to the `irq:` scheme, then how that delivery was made.
pub fn sys_interrupts(token: &mut CleanLockToken) -> crate::syscall::error::Result<Vec<u8>> {
    Ok(lend(token, interrupts_text).into_bytes())
}

pub(super) fn interrupts_text() -> String {
    let mut s = softirq::irq::interrupts_text();
    let cpus = cpu_count();
    for (irq, l) in LINES
        .get()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .enumerate()
    {
        let counts: Vec<u64> = l
            .scheme
            .iter()
            .take(cpus)
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        if counts.iter().all(|&c| c == 0) {
            continue;
        }
        let _ = write!(s, "{irq:>3}:");
        for c in counts {
            let _ = write!(s, "{c:>11}");
        }
        let _ = writeln!(s, "  {:<16} irq-scheme", CHIP.describe(irq as u32));
    }
    let [(dn, dc), (fn_, fc), (mn, mc)] = scheme_counters();
    let _ = writeln!(
        s,
        "irq-scheme delivery: {} (irq_softirq={})",
        if scheme_deferral() {
            "softirq"
        } else {
            "hard-irq"
        },
        u8::from(scheme_deferral())
    );
    let _ = writeln!(s, "  in hard IRQ: {dn} deliveries, {dc} cycles");
    let _ = writeln!(
        s,
        "  in softirq:  {fn_} deliveries, {fc} cycles moved out of hard IRQ"
    );
    let _ = writeln!(s, "  deferring:   {mn} marks, {mc} cycles in hard IRQ");
    s
}

/// Line `irq`'s `irq:` scheme deliveries on every CPU so far.
pub fn scheme_deliveries(irq: u32) -> u64 {
    line(irq).map_or(0, |l| {
        l.scheme.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    })
}

/// Line `irq`'s state, for a test's failure message: masked, pending, a handler attached, CPUs
/// running the handler, arrivals.
pub fn line_state(irq: u32) -> Option<(bool, bool, bool, u32, u64)> {
    line(irq).map(|l| {
        let st = l.state.lock();
        (
            st.masked,
            st.pending,
            st.handler.is_some(),
            l.running.load(Ordering::Relaxed),
            l.arrivals.load(Ordering::Relaxed),
        )
    })
}
