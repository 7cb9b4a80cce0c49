//! Device interrupt lines: the port's [`IrqChip`] over the IOAPIC (Linux's
//! `kernel/irq/chip.c` flow handlers and `arch/x86/kernel/apic/io_apic.c`,
//! reduced), and the test interrupt ([`TestIrq`]) on PIT channel 0.
//!
//! * **Lines** are Linux's legacy IRQ numbers. Lines 0..15 are the ISA
//!   IRQs: each goes to the IOAPIC pin of its GSI, through the MADT's
//!   interrupt source overrides, with the override's trigger mode and
//!   polarity (ISA's default, edge and active high, without one). QEMU maps
//!   IRQ 0 to GSI 2 and makes its PCI lines (5, 9, 10, 11) level-triggered.
//!   Lines from 16 on are the remaining pins' GSIs (PCI: level, active low).
//!   Line n has IDT vector [`VEC_IRQ_BASE`] + n; at boot every usable line
//!   is programmed with its vector, trigger mode, polarity and CPU, masked.
//! * **Message-signalled lines** ([`MSI_LINES`] of them) follow the
//!   IOAPIC's: `msi_alloc` hands one out, aimed at a CPU's local APIC,
//!   with the message a device writes (MSI-X); then it is attached like
//!   any line. They are edge lines with no pin, so masking is lazy.
//! * **Refused lines** (`EINVAL` from `attach`): a line without a pin (ISA
//!   IRQ 2, whose GSI 2 serves IRQ 0; a GSI that an override took), and
//!   line 4, COM1's, which is the kernel's console (it writes with
//!   interrupts off and owns the device). The LAPIC timer and the IPIs are
//!   LAPIC vectors, not lines, so no line is the kernel's timer.
//! * **One CPU**: every line is delivered to the boot CPU, as Redox
//!   delivers legacy IRQs and as Linux does for a line until `irqbalance`
//!   moves it. A line's handler then runs on one CPU at a time by
//!   construction; the flow below still copes with a delivery on a second
//!   CPU (an edge that comes while the handler runs elsewhere is run again
//!   by that CPU).
//! * **Flow** of a device vector, in hard-IRQ context (interrupts off): the
//!   line's lock; no handler, or the line masked: mark it pending, mask
//!   the pin, EOI, done; else count the delivery, run the handler without
//!   the lock, again while an edge came meanwhile; then EOI, then (in
//!   `arch::interrupts`) `irq_exit`. The EOI comes after the handler, as
//!   for Linux's `fasteoi` lines, and before `irq_exit`, so softirqs never
//!   run with the LAPIC's in-service bit of a device vector set.
//! * **Masking**: a level line is masked at the pin, and the IOAPIC holds
//!   the level until it is unmasked. An edge line cannot be masked there:
//!   the IOAPIC drops edges on a masked pin. So [`IrqChip::mask`] of an
//!   edge line only marks it masked (Linux's lazy disable); an edge that
//!   then arrives is latched as pending and the pin masked, and
//!   [`IrqChip::unmask`] sends it again, as an IPI of the line's vector to
//!   the line's CPU (Linux's `irq_retrigger`). Several edges while masked
//!   are one pending interrupt.
//! * **Detach** masks the pin, forgets the handler and waits until no CPU
//!   runs it (Linux's `synchronize_irq`).
//!
//! Lock order: a line's lock, then the IOAPIC's window lock.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kport::irq::{IrqChip, IrqHandler, TestIrq};
use kport::{EBUSY, EINVAL, Error, Result};

use crate::arch::acpi::Madt;
use crate::arch::interrupts::{self, InterruptFrame, VEC_IRQ_BASE};
use crate::arch::{apic, cpu, ioapic, pit};
use crate::percpu::{self, MAX_CPUS, PERCPU};
use crate::sync::{IrqSpinLock, SpinLock};
use crate::time;

/// Most lines (the device vectors reserved after [`VEC_IRQ_BASE`]).
pub const MAX_LINES: u32 = ioapic::MAX_PINS;
/// ISA lines (the first 16).
const ISA_LINES: u32 = 16;
/// COM1's ISA line: the console's.
const CONSOLE_LINE: u32 = 4;
/// The PIT's ISA line: the test interrupt's.
pub const PIT_LINE: u32 = 0;
/// The CPU every line is delivered to.
pub const IRQ_CPU: usize = 0;

/// Message-signalled lines after the IOAPIC's ([`IrqChip::msi_alloc`]).
pub const MSI_LINES: u32 = 32;

/// What a line's lock protects.
struct LineState {
    /// A message-signalled line handed out by `msi_alloc`.
    allocated: bool,
    /// The attached handler.
    handler: Option<&'static dyn IrqHandler>,
    /// `mask` was called (and `unmask` not yet).
    masked: bool,
    /// An interrupt came while masked, without a handler, or while the
    /// handler ran on another CPU.
    pending: bool,
    /// The pin is masked at the IOAPIC.
    pin_masked: bool,
    /// A message-signalled line's CPU from `msi_alloc` (it returns there
    /// when that CPU comes back online).
    home: usize,
    /// How the driver rewrites the line's message in its device.
    writer: Option<alloc::sync::Arc<dyn Fn(u64, u32) + Send + Sync>>,
}

/// One line. I: set at boot; L: the line's lock; A: atomic.
struct Line {
    /// I: the line's IOAPIC pin, if it has one.
    pin: Option<u32>,
    /// I: a message-signalled line (no pin; edge).
    msi: bool,
    /// A: the CPU its interrupts go to (a message-signalled line's is set
    /// by `msi_alloc`; the others' is [`IRQ_CPU`]).
    cpu: core::sync::atomic::AtomicUsize,
    /// I: level-triggered (else edge).
    level: bool,
    /// I: active low.
    active_low: bool,
    /// I: why `attach` refuses it, if it does.
    refused: Option<&'static str>,
    /// I: `IO-APIC 2-edge`, as Linux's `/proc/interrupts`.
    describe: &'static str,
    /// L: handler and mask state.
    state: IrqSpinLock<LineState>,
    /// A: CPUs running the handler now (raised under the lock).
    running: AtomicU32,
    /// A: every delivery of the vector, taken or latched (the test
    /// interrupt waits for its last one before it fires again).
    arrivals: AtomicU64,
    /// A: handler runs per CPU ([`IrqChip::count`]).
    counts: [AtomicU64; MAX_CPUS],
}

impl Line {
    /// A line on `pin` (or none), edge, active high, accepted, masked, with
    /// no handler and no message; callers set what differs.
    fn new(pin: Option<u32>) -> Self {
        Line {
            pin,
            msi: false,
            cpu: core::sync::atomic::AtomicUsize::new(IRQ_CPU),
            level: false,
            active_low: false,
            refused: None,
            describe: "none",
            state: IrqSpinLock::named(
                "irq line",
                LineState {
                    allocated: false,
                    handler: None,
                    masked: false,
                    pending: false,
                    pin_masked: true,
                    home: IRQ_CPU,
                    writer: None,
                },
            ),
            running: AtomicU32::new(0),
            arrivals: AtomicU64::new(0),
            counts: [const { AtomicU64::new(0) }; MAX_CPUS],
        }
    }

    fn route(&self, line: u32) -> ioapic::Route {
        ioapic::Route {
            vector: VEC_IRQ_BASE + line as u8,
            level: self.level,
            active_low: self.active_low,
            dest_apic: PERCPU[IRQ_CPU].apic_id.load(Ordering::Relaxed),
        }
    }
}

static LINES: spin::Once<Vec<Line>> = spin::Once::new();
/// The MADT the lines were built from (for the machine tests).
static MADT: spin::Once<Madt> = spin::Once::new();

fn lines() -> &'static [Line] {
    LINES.get().map_or(&[], Vec::as_slice)
}

/// Line `irq`, if it exists.
fn line(irq: u32) -> Option<&'static Line> {
    lines().get(irq as usize)
}

/// Polarity and trigger mode from MPS INTI flags (0: the bus's default).
fn polarity_trigger(flags: u16, default_level: bool, default_low: bool) -> (bool, bool) {
    let level = match (flags >> 2) & 3 {
        1 => false,
        3 => true,
        _ => default_level,
    };
    let low = match flags & 3 {
        1 => false,
        3 => true,
        _ => default_low,
    };
    (level, low)
}

/// Find the IOAPIC, build the lines from the MADT, program every usable
/// pin (masked, to the boot CPU) and install the device vectors (boot CPU,
/// once, after the LAPIC and before interrupts are enabled). Also quiets
/// PIT channel 0, the test interrupt's device.
pub fn init(madt: &Madt) {
    MADT.call_once(|| *madt);
    let pins = ioapic::init(madt.ioapic_addr, madt.ioapic_gsi_base);
    pit::init();
    if pins == 0 {
        crate::kprintln!("# WARNING: no IOAPIC in the MADT: no device interrupt lines");
        LINES.call_once(Vec::new);
        return;
    }
    // GSIs an ISA IRQ was moved to by an override: no other line may use
    // their pins (ISA IRQ 2 loses GSI 2 to IRQ 0 that way).
    let isa_gsis: [u32; ISA_LINES as usize] = madt.isa_gsi;
    let moved_to = |gsi: u32, except: u32| {
        (0..ISA_LINES).find(|&o| o != except && madt.isa_overridden[o as usize] && isa_gsis[o as usize] == gsi)
    };
    let nr = (madt.ioapic_gsi_base + pins).clamp(ISA_LINES, MAX_LINES);
    let mut v = Vec::with_capacity(nr as usize);
    for irq in 0..nr {
        let (gsi, level, low) = if irq < ISA_LINES {
            let (level, low) = polarity_trigger(madt.isa_flags[irq as usize], false, false);
            (isa_gsis[irq as usize], level, low)
        } else {
            (irq, true, true)
        };
        // An override of this very line wins over another line's.
        let own = irq < ISA_LINES && madt.isa_overridden[irq as usize];
        let taken_by = if own { None } else { moved_to(gsi, irq) };
        let pin = ioapic::pin_of(gsi).filter(|_| taken_by.is_none());
        let refused = match (pin, taken_by) {
            (_, Some(_)) => Some("its GSI serves another ISA IRQ"),
            (None, None) => Some("no IOAPIC pin serves its GSI"),
            (Some(_), None) if irq == CONSOLE_LINE => Some("COM1 is the kernel's console"),
            _ => None,
        };
        let describe: &'static str = match (pin, taken_by) {
            (Some(_), _) => Box::leak(
                format!(
                    "IO-APIC {gsi}-{}{}",
                    if level { "fasteoi" } else { "edge" },
                    if refused.is_some() { " (kernel)" } else { "" }
                )
                .into_boxed_str(),
            ),
            (None, Some(o)) => Box::leak(format!("none (GSI {gsi} is IRQ {o}'s)").into_boxed_str()),
            (None, None) => "none",
        };
        v.push(Line { level, active_low: low, refused, describe, ..Line::new(pin) });
    }
    for _ in 0..MSI_LINES {
        v.push(Line { msi: true, describe: "PCI-MSI-X-edge", ..Line::new(None) });
    }
    let v = LINES.call_once(|| v);
    for (irq, l) in v.iter().enumerate() {
        if let Some(pin) = l.pin
            && l.refused.is_none()
        {
            ioapic::route(pin, l.route(irq as u32), true);
        }
        interrupts::set_handler(VEC_IRQ_BASE + irq as u8, device_interrupt);
    }
    // The console's own line: its receive interrupt brings SysRq keys.
    if let Some(pin) = v.get(CONSOLE_LINE as usize).and_then(|l| l.pin) {
        interrupts::set_handler(VEC_IRQ_BASE + CONSOLE_LINE as u8, console_interrupt);
        ioapic::route(pin, v[CONSOLE_LINE as usize].route(CONSOLE_LINE), false);
        crate::console::enable_input();
    }
}

/// The key of a SysRq request from the console, for the work item that
/// acts on it (0: none).
static SYSRQ_KEY: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
static SYSRQ_WORK: spin::Once<workqueue::Work> = spin::Once::new();

/// COM1's interrupt: a BREAK then a key is a SysRq request, handled in a
/// work item (the keys print stacks and may wait for other CPUs).
fn console_interrupt(_frame: &mut InterruptFrame) {
    let key = crate::console::receive();
    apic::eoi();
    let Some(key) = key else {
        return;
    };
    SYSRQ_KEY.store(key, Ordering::Relaxed);
    if !workqueue::system::started() {
        return;
    }
    let w = SYSRQ_WORK.call_once(|| {
        workqueue::Work::new(|| {
            let k = SYSRQ_KEY.swap(0, Ordering::Relaxed);
            if k != 0 {
                crate::kprintln!("sysrq: key '{}' from the console", k as char);
                let _ = kthreadd::sysrq::handle(k as char);
            }
        })
    });
    workqueue::system::wq().queue(w);
}

/// A device vector: the flow described in the module documentation.
fn device_interrupt(frame: &mut InterruptFrame) {
    let irq = u32::from(frame.vector as u8 - VEC_IRQ_BASE);
    let Some(l) = line(irq) else {
        apic::eoi();
        return;
    };
    l.arrivals.fetch_add(1, Ordering::Relaxed);
    let me = percpu::cpu_id();
    let mut st = l.state.lock();
    let mut h = match st.handler {
        Some(h) if !st.masked && l.running.load(Ordering::Relaxed) == 0 => h,
        _ => {
            // Nobody may run it now: keep it for later (unmask, or the CPU
            // running the handler) and keep the pin quiet meanwhile. Without
            // a handler it is nobody's: attach starts afresh.
            st.pending = st.handler.is_some();
            mask_pin(l, &mut st);
            drop(st);
            apic::eoi();
            return;
        }
    };
    l.running.fetch_add(1, Ordering::Relaxed);
    loop {
        st.pending = false;
        drop(st);
        l.counts[me].fetch_add(1, Ordering::Relaxed);
        h.handle(irq);
        st = l.state.lock();
        match st.handler {
            Some(next) if st.pending && !st.masked => {
                // An edge came while it ran (on another CPU's delivery):
                // run it again here, with the pin open again.
                h = next;
                unmask_pin(l, &mut st);
            }
            _ => break,
        }
    }
    // A level line masked by its handler (a threaded handler's ONESHOT)
    // is masked at the pin before the EOI, or the IOAPIC would deliver the
    // still-asserted level again at once.
    if st.masked && l.level {
        mask_pin(l, &mut st);
    }
    l.running.fetch_sub(1, Ordering::Release);
    drop(st);
    apic::eoi();
}

fn mask_pin(l: &Line, st: &mut LineState) {
    if let Some(pin) = l.pin
        && !st.pin_masked
    {
        ioapic::set_masked(pin, true);
        st.pin_masked = true;
    }
}

fn unmask_pin(l: &Line, st: &mut LineState) {
    if let Some(pin) = l.pin
        && st.pin_masked
    {
        ioapic::set_masked(pin, false);
        st.pin_masked = false;
    }
}

/// The testkernel's device interrupt lines (the port's `irq_chip`).
pub struct IoApicChip;

/// The chip.
pub static CHIP: IoApicChip = IoApicChip;

impl IrqChip for IoApicChip {
    fn nr_irqs(&self) -> u32 {
        lines().len() as u32
    }

    /// Program the pin (vector, trigger mode, polarity, the boot CPU) and
    /// open it. Forgets an interrupt latched while no handler was attached.
    fn attach(&self, irq: u32, handler: &'static dyn IrqHandler) -> Result<()> {
        let l = line(irq).ok_or(Error::new(EINVAL))?;
        if l.msi {
            // A message-signalled line: only once allocated; the device's
            // message is its routing.
            let mut st = l.state.lock();
            if !st.allocated {
                return Err(Error::new(EINVAL));
            }
            if st.handler.is_some() {
                return Err(Error::new(EBUSY));
            }
            st.handler = Some(handler);
            st.masked = false;
            st.pending = false;
            st.pin_masked = true;
            return Ok(());
        }
        let pin = match (l.pin, l.refused) {
            (Some(pin), None) => pin,
            _ => return Err(Error::new(EINVAL)),
        };
        let mut st = l.state.lock();
        if st.handler.is_some() {
            return Err(Error::new(EBUSY));
        }
        st.allocated = false;
        st.handler = Some(handler);
        st.masked = false;
        st.pending = false;
        st.pin_masked = false;
        ioapic::route(pin, l.route(irq), false);
        Ok(())
    }

    /// Mask the pin, forget the handler, then wait (sleeping in 1 ms steps)
    /// until no CPU runs it.
    fn detach(&self, irq: u32) {
        kport::might_sleep();
        let Some(l) = line(irq) else { return };
        {
            let mut st = l.state.lock();
            mask_pin(l, &mut st);
            st.handler = None;
            st.masked = false;
            st.pending = false;
        }
        while l.running.load(Ordering::Acquire) != 0 {
            crate::sched::timer::sleep_until(time::now_ns() + 1_000_000);
        }
    }

    /// Level lines: at the pin. Edge lines: marked only (see the module
    /// documentation).
    fn mask(&self, irq: u32) {
        let Some(l) = line(irq) else { return };
        let mut st = l.state.lock();
        st.masked = true;
        if l.level {
            mask_pin(l, &mut st);
        }
    }

    /// Open the pin again; an edge latched meanwhile is sent again to the
    /// line's CPU (a level one the IOAPIC delivers by itself if the device
    /// still asserts it).
    fn unmask(&self, irq: u32) {
        let Some(l) = line(irq) else { return };
        let mut st = l.state.lock();
        st.masked = false;
        if st.handler.is_none() {
            return;
        }
        unmask_pin(l, &mut st);
        if core::mem::take(&mut st.pending) && !l.level {
            let cpu = l.cpu.load(Ordering::Relaxed);
            apic::send_ipi(PERCPU[cpu].apic_id.load(Ordering::Relaxed), VEC_IRQ_BASE + irq as u8);
        }
    }

    fn describe(&self, irq: u32) -> &'static str {
        line(irq).map_or("none", |l| l.describe)
    }

    fn count(&self, irq: u32, cpu: usize) -> u64 {
        match (line(irq), cpu < MAX_CPUS) {
            (Some(l), true) => l.counts[cpu].load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// A free message-signalled line, aimed at `cpu`'s local APIC: the
    /// message is the xAPIC's (address `0xFEE0_0000 | APIC ID << 12`,
    /// physical destination; data the line's vector, fixed delivery, edge).
    fn msi_alloc(&self, cpu: usize) -> Result<kport::irq::MsiLine> {
        if cpu >= percpu::cpus_up() {
            return Err(Error::new(EINVAL));
        }
        let apic_id = PERCPU[cpu].apic_id.load(Ordering::Relaxed);
        if apic_id > 255 {
            return Err(Error::new(EINVAL));
        }
        for (irq, l) in lines().iter().enumerate().filter(|(_, l)| l.msi) {
            let mut st = l.state.lock();
            if st.allocated {
                continue;
            }
            st.allocated = true;
            st.pending = false;
            st.home = cpu;
            st.writer = None;
            l.cpu.store(cpu, Ordering::Relaxed);
            return Ok(kport::irq::MsiLine {
                irq: irq as u32,
                address: 0xfee0_0000 | (u64::from(apic_id) << 12),
                data: u32::from(VEC_IRQ_BASE) + irq as u32,
            });
        }
        Err(Error::new(EBUSY))
    }

    /// Free the line if no handler is attached (else warn and keep it).
    fn msi_free(&self, irq: u32) {
        let Some(l) = line(irq).filter(|l| l.msi) else { return };
        let mut st = l.state.lock();
        if st.handler.is_some() {
            crate::kprintln!("# WARNING: msi_free of line {irq} with a handler attached: kept");
            return;
        }
        st.allocated = false;
        st.writer = None;
    }

    fn msi_set_writer(&self, irq: u32, write: alloc::sync::Arc<dyn Fn(u64, u32) + Send + Sync>) {
        let Some(l) = line(irq).filter(|l| l.msi) else { return };
        l.state.lock().writer = Some(write);
    }
}

/// Aim message-signalled line `irq` at `cpu` through its driver's writer;
/// false if it has none.
fn aim(irq: usize, l: &Line, cpu: usize) -> bool {
    let writer = l.state.lock().writer.clone();
    let Some(w) = writer else { return false };
    let apic_id = PERCPU[cpu].apic_id.load(Ordering::Relaxed);
    w(0xfee0_0000 | (u64::from(apic_id) << 12), u32::from(VEC_IRQ_BASE) + irq as u32);
    l.cpu.store(cpu, Ordering::Release);
    true
}

/// `cpu` is going offline: its message-signalled lines move to CPU
/// [`IRQ_CPU`] (which never goes offline). A line whose driver gave no
/// writer stays and warns: its interrupts wait until the CPU returns.
pub fn move_lines_off(cpu: usize) {
    for (irq, l) in lines().iter().enumerate().filter(|(_, l)| l.msi) {
        if !l.state.lock().allocated || l.cpu.load(Ordering::Acquire) != cpu {
            continue;
        }
        if !aim(irq, l, IRQ_CPU) {
            crate::kprintln!("# WARNING: irq {irq} stays on offline cpu {cpu}: its driver cannot move it");
        }
    }
}

/// `cpu` is back: the message-signalled lines allocated for it return.
pub fn move_lines_back(cpu: usize) {
    for (irq, l) in lines().iter().enumerate().filter(|(_, l)| l.msi) {
        let home = {
            let st = l.state.lock();
            st.allocated.then_some(st.home)
        };
        if home == Some(cpu) && l.cpu.load(Ordering::Acquire) != cpu {
            aim(irq, l, cpu);
        }
    }
}

/// Longest a fire waits for the last count to run out (it takes 50 µs).
const FIRE_COUNT_WAIT_NS: u64 = 50_000_000;
/// Longest a fire waits for the last interrupt to be taken: generous, as a
/// TCG vCPU may be held up for a while by the host.
const FIRE_TAKEN_WAIT_NS: u64 = 1_000_000_000;

/// The test interrupt: PIT channel 0 in one-shot mode on ISA line 0
/// (`arch::pit`). Each [`TestIrq::fire`] loads one count, one rising edge.
///
/// Why the PIT: it needs nothing the runner would have to add (QEMU's PC
/// always has it), the kernel does not use channel 0, and its interrupt
/// needs no acknowledgement at the device, so any handler attached to the
/// line works unchanged, and it never fires by itself. The RTC's periodic
/// interrupt needs its register C read in the handler, or it stops, and a
/// second 16550's transmit interrupt needs its IIR read and a second
/// serial port on the QEMU command line.
pub struct PitTestIrq {
    /// L(FIRE): the arrival count of line 0 the last fire is done at, 0 if
    /// it was not routed (its edge was dropped at a masked pin).
    expect: AtomicU64,
}

/// The test interrupt.
pub static TEST_IRQ: PitTestIrq = PitTestIrq { expect: AtomicU64::new(0) };

/// Serializes fires (channel 0's ports); preemption off while held, so
/// the firing context cannot leave its CPU halfway.
static FIRE: SpinLock<()> = SpinLock::named("pit test irq", ());

fn wait_until(max_ns: u64, mut cond: impl FnMut() -> bool) {
    let end = time::now_ns() + max_ns;
    while !cond() && time::now_ns() < end {
        cpu::pause();
    }
}

impl TestIrq for PitTestIrq {
    fn line(&self) -> u32 {
        PIT_LINE
    }

    /// Wait until the last fire's count ran out and its interrupt was taken
    /// (so two fires cannot merge into one pending interrupt in the LAPIC),
    /// then load a new count. Waiting for the interrupt is skipped where it
    /// cannot come: on the line's CPU with interrupts disabled.
    fn fire(&self) {
        let Some(l) = line(PIT_LINE) else { return };
        let _g = FIRE.lock();
        wait_until(FIRE_COUNT_WAIT_NS, pit::out_high);
        let expect = self.expect.load(Ordering::Relaxed);
        if expect != 0 && (percpu::cpu_id() != IRQ_CPU || cpu::irqs_enabled()) {
            wait_until(FIRE_TAKEN_WAIT_NS, || l.arrivals.load(Ordering::Relaxed) >= expect);
        }
        // The edge reaches the CPU only through an open pin.
        let routed = !l.state.lock().pin_masked;
        let next = if routed { l.arrivals.load(Ordering::Relaxed) + 1 } else { 0 };
        self.expect.store(next, Ordering::Relaxed);
        pit::oneshot(pit::ONESHOT_TICKS);
    }
}

/// How a line is set up (for the machine tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineConfig {
    /// Its IOAPIC pin.
    pub pin: Option<u32>,
    /// Level-triggered.
    pub level: bool,
    /// Active low.
    pub active_low: bool,
    /// `attach` refuses it.
    pub refused: bool,
}

/// Line `irq`'s setup, if the line exists.
pub fn line_config(irq: u32) -> Option<LineConfig> {
    line(irq).map(|l| LineConfig { pin: l.pin, level: l.level, active_low: l.active_low, refused: l.refused.is_some() })
}

/// The MADT the lines were built from.
pub fn madt() -> Option<&'static Madt> {
    MADT.get()
}
