//! Running a function on another CPU through an IPI (Linux
//! `smp_call_function_single`).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::arch::{apic, cpu, interrupts};
use crate::percpu::{self, MAX_CPUS, PERCPU};
use crate::sync::IrqSpinLock;

struct Call {
    f: Box<dyn FnOnce() + Send>,
    done: Option<Arc<AtomicBool>>,
}

struct CallQueue {
    calls: VecDeque<Call>,
    /// The CPU is hot-unplugged: calls to it are refused.
    closed: bool,
}

static QUEUES: [IrqSpinLock<CallQueue>; MAX_CPUS] =
    [const { IrqSpinLock::named("call queue", CallQueue { calls: VecDeque::new(), closed: false }) }; MAX_CPUS];
/// Calls queued per CPU, readable without the lock (the waiting caller polls
/// its own count instead of taking its queue's lock on every spin).
static QUEUED: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

fn run_queue(me: usize) {
    if QUEUED[me].load(Ordering::Acquire) == 0 {
        return;
    }
    loop {
        let c = QUEUES[me].lock().calls.pop_front();
        let Some(c) = c else { break };
        QUEUED[me].fetch_sub(1, Ordering::AcqRel);
        (c.f)();
        if let Some(d) = c.done {
            d.store(true, Ordering::Release);
        }
    }
}

/// Reserve room in `cpu`'s call queue (boot).
pub fn reserve(cpu: usize) {
    QUEUES[cpu].lock().calls.reserve(16);
}

/// This CPU stops (hot-unplug): refuse further calls and run the queued
/// ones. Interrupts are off.
pub fn close_here() {
    let me = percpu::cpu_id();
    QUEUES[me].lock().closed = true;
    run_queue(me);
}

/// This CPU runs again: accept calls.
pub fn open_here() {
    QUEUES[percpu::cpu_id()].lock().closed = false;
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// No such CPU.
    NoCpu,
    /// The CPU is offline (Linux's `-ENXIO`).
    Offline,
}

/// The call-function IPI.
pub fn ipi_handler(_f: &mut interrupts::InterruptFrame) {
    apic::eoi();
    run_queue(percpu::cpu_id());
}

/// Run `f` on `target` in interrupt context; if `wait`, return after it ran.
/// On the calling CPU it runs at once with interrupts off. While waiting, the
/// caller serves calls aimed at itself, so two CPUs calling each other with
/// interrupts off cannot deadlock.
pub fn call_on_cpu(target: usize, f: Box<dyn FnOnce() + Send>, wait: bool) -> Result<(), CallError> {
    if target >= percpu::cpus_up() {
        return Err(CallError::NoCpu);
    }
    let me = percpu::cpu_id();
    if target == me {
        let was = crate::sync::irq_save();
        f();
        crate::sync::irq_restore(was);
        return Ok(());
    }
    let done = wait.then(|| Arc::new(AtomicBool::new(false)));
    {
        let mut q = QUEUES[target].lock();
        if q.closed {
            return Err(CallError::Offline);
        }
        q.calls.push_back(Call { f, done: done.clone() });
        QUEUED[target].fetch_add(1, Ordering::AcqRel);
    }
    apic::send_ipi(PERCPU[target].apic_id.load(Ordering::Relaxed), interrupts::VEC_CALL);
    if let Some(d) = done {
        while !d.load(Ordering::Acquire) {
            run_queue(me);
            cpu::pause();
        }
    }
    Ok(())
}
