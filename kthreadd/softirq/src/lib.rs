//! Bottom halves with Linux's semantics: layer 2 of the subsystem, between
//! kernel threads and the workqueue (see `docs/architecture.md`).
//!
//! | module | Linux |
//! |---|---|
//! | [`softirq`] | `kernel/softirq.c`: vectors, `raise_softirq`, the run at interrupt exit with its restart budget, `ksoftirqd/N`, `local_bh_disable`/`local_bh_enable`, `/proc/softirqs` |
//! | [`tasklet`] | `tasklet_schedule`, `tasklet_hi_schedule`, `tasklet_disable`, `tasklet_enable`, `tasklet_kill` |
//! | [`timer`] | `timer_list`: callbacks in the `TIMER` softirq |
//! | [`irq`] | `kernel/irq/manage.c`: `request_threaded_irq`, `free_irq`, `IRQF_ONESHOT`, `IRQF_SHARED`, `/proc/interrupts` |
//!
//! The crate is `no_std` + `alloc`; it reaches the machine through the
//! port: [`kport::irq::irq_exit`] (ports call it at interrupt exit; this
//! crate runs pending softirqs there), the bottom-half word
//! ([`kport::irq::bh_count`]) that `might_sleep` reads, and the port's
//! device interrupt lines ([`kport::irq::IrqChip`]).
//!
//! # Locking
//! Field tags as in the other crates: `I:` set at creation, `A:` atomic
//! (protocol in the field's comment), `O:` set once. The lock order,
//! checked in debug builds:
//!
//! 1. an interrupt line's action list ([`RANK_IRQ_DESC`]), taken in
//!    hard-IRQ context around the hard handlers;
//! 2. leaves ([`RANK_LEAF`]): each CPU's tasklet and expired-timer lists.
//!
//! Request and free of interrupt lines are serialized by a sleeping mutex
//! and take no spinlock while they sleep.
#![no_std]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod irq;
pub mod softirq;
pub mod tasklet;
pub mod timer;

pub use irq::{IrqAction, IrqFlags, IrqReturn, free_irq, request_irq, request_threaded_irq};
pub use softirq::{
    BhGuard, MAX_SOFTIRQ_RESTART, MAX_SOFTIRQ_TIME_NS, NR_SOFTIRQS, Vector, in_hardirq, in_interrupt,
    in_serving_softirq, in_softirq, local_bh_disable, open_softirq, raise_softirq, raise_softirq_irqoff,
};
pub use tasklet::Tasklet;
pub use timer::SoftTimer;

/// Lock rank of an interrupt line's action list (the crate's band is
/// 16–19, under the workqueue's).
pub const RANK_IRQ_DESC: u8 = 16;
/// Lock rank of the crate's leaf locks.
pub const RANK_LEAF: u8 = 28;

/// Start the bottom halves (once, at boot, after kthreadd): the interrupt
/// exit hook, the tasklet and timer vectors, and `ksoftirqd/N`.
///
/// Context: may sleep.
#[track_caller]
pub fn init() -> kport::Result<()> {
    kport::might_sleep();
    tasklet::init();
    timer::init();
    softirq::init()?;
    irq::alloc_descs();
    static INSTALLED: spin::Once<()> = spin::Once::new();
    INSTALLED.call_once(|| kport::port().add_hotplug_hooks(&HOTPLUG));
    Ok(())
}

/// CPU hot-plug: what a dead CPU left queued moves to the CPU that took it
/// down (Linux `takeover_tasklets`, and `timers_dead_cpu` for the expired
/// timer list): its tasklets, its expired timers, and its pending vectors,
/// raised again here. `ksoftirqd/N` parks and unparks with the other
/// smpboot threads.
struct Hotplug;

impl kport::HotplugHooks for Hotplug {
    fn cpu_going_down(&self, _cpu: usize) {}

    fn cpu_dead(&self, cpu: usize) {
        // Interrupts off: this CPU stays the one taking over.
        let was = kport::local::irq_save();
        let here = kport::local::cpu_id();
        if here != cpu {
            let mut pending = tasklet::take_over(cpu, here);
            pending |= timer::take_over(cpu, here);
            pending |= softirq::take_pending(cpu);
            for v in Vector::ALL {
                if pending & (1 << v as u32) != 0 {
                    raise_softirq_irqoff(v);
                }
            }
        }
        kport::local::irq_restore(was);
    }

    fn cpu_came_up(&self, _cpu: usize) {}
}

static HOTPLUG: Hotplug = Hotplug;
