//! The block layer: requests (read, write, flush) on a device's hardware
//! queues, completion the blk-mq way, and per-device counters like
//! `iostat`'s. Linux: `block/blk-mq.c`, `block/blk-core.c`,
//! `block/genhd.c`'s `diskstats`.
//!
//! # Completion (Linux `blk_mq_complete_request`)
//! A driver calls [`complete`] from its interrupt handler. The request
//! then finishes:
//! 1. in the interrupt, at once, when the completing CPU is the submitting
//!    CPU and the hardware queue serves that CPU alone;
//! 2. on the submitting CPU, in its `BLOCK` softirq, reached by an IPI,
//!    when the two CPUs differ and share no cache (Linux's `rq_affinity`
//!    1, its default; `QUEUE_FLAG_SAME_COMP`), or differ at all with
//!    `rq_affinity` 2 (`QUEUE_FLAG_SAME_FORCE`), and the submitter is
//!    online ([`BlockDevice::set_rq_affinity`]; 0 turns this rule off);
//! 3. in this CPU's `BLOCK` softirq when the device has one hardware queue;
//! 4. in the interrupt otherwise.
//!
//! "Finishes" means: the counters are updated and the submitter's callback
//! runs (in that context), or its waiter is woken.
//!
//! # Locking
//! `A:` atomic; `L:` under the device's `stats` lock (rank
//! [`RANK_BLOCK_STATS`], a leaf); `P:` under a CPU's done-list lock
//! (rank [`RANK_BLOCK_DONE`], a leaf). Drivers call [`complete`] without
//! their queue locks.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use kport::bus::DmaRegion;
use kport::sync::{Completion, SpinLock, WaitQueue};
use kport::{EAGAIN, EINVAL, EIO, ENODEV, EROFS, Error, Result, port};
use softirq::softirq::{Vector, open_softirq, raise_softirq_irqoff};

/// Rank of a device's counters lock.
pub const RANK_BLOCK_STATS: u8 = 26;
/// Rank of a CPU's list of requests to finish in its `BLOCK` softirq.
pub const RANK_BLOCK_DONE: u8 = 27;

/// Bytes in a sector, the unit of [`Request::sector`] whatever the
/// device's logical block size.
pub const SECTOR_SIZE: usize = 512;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read into the buffer.
    Read,
    /// Write the buffer.
    Write,
    /// Make earlier completed writes durable (the device's volatile cache).
    Flush,
}

/// A buffer the device reaches by DMA (Linux: a page of a bio). Freed when
/// dropped.
pub struct BlockBuf {
    region: DmaRegion,
    len: usize,
}

impl BlockBuf {
    /// A zeroed buffer of `len` bytes.
    ///
    /// Return: `ENODEV` when the port has no device bus, `EINVAL` for 0
    /// bytes, `ENOMEM`.
    ///
    /// Context: may sleep.
    pub fn new(len: usize) -> Result<Self> {
        kport::might_sleep();
        if len == 0 {
            return Err(Error::new(EINVAL));
        }
        let bus = port().device_bus().ok_or(Error::new(ENODEV))?;
        Ok(BlockBuf { region: bus.dma_alloc(len)?, len })
    }
    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Is it empty? (Never: see [`BlockBuf::new`].)
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Its bus address.
    pub fn phys(&self) -> u64 {
        self.region.phys
    }
    /// Its bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the region is `len` mapped bytes we own; the device
        // writes it only while a request holds the buffer.
        unsafe { core::slice::from_raw_parts(self.region.virt as *const u8, self.len) }
    }
    /// Its bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`, and `&mut self` is the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.region.virt as *mut u8, self.len) }
    }
}

impl Drop for BlockBuf {
    fn drop(&mut self) {
        if let Some(bus) = port().device_bus() {
            bus.dma_free(self.region);
        }
    }
}

impl core::fmt::Debug for BlockBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "BlockBuf({:#x}, {} bytes)", self.region.phys, self.len)
    }
}

/// Called once a request finishes: its result and its buffer back.
pub type DoneFn = Box<dyn FnOnce(Result<()>, Option<BlockBuf>) + Send>;

/// Where a request finished (for the counters and the suites).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishedIn {
    /// In the interrupt, on the submitting CPU (rule 1).
    IrqLocal,
    /// In the submitting CPU's softirq, after an IPI (rule 2).
    Ipi,
    /// In the completing CPU's softirq (rule 3).
    Softirq,
    /// In the interrupt on another CPU (rule 4).
    IrqRemote,
}

/// A request in flight: what the driver needs, and what the layer needs
/// to finish it.
pub struct Request {
    /// What it does.
    pub op: Op,
    /// First sector (512 bytes).
    pub sector: u64,
    /// The data (none for a flush).
    pub buf: Option<BlockBuf>,
    done: Option<DoneFn>,
    dev: Arc<BlockDevice>,
    cpu: usize,
    hwq: usize,
    start_ns: u64,
    result: Result<()>,
}

impl Request {
    /// The hardware queue the layer chose for it.
    pub fn hwq(&self) -> usize {
        self.hwq
    }
    /// The CPU that submitted it.
    pub fn cpu(&self) -> usize {
        self.cpu
    }
    /// Its length in bytes (0 for a flush).
    pub fn len(&self) -> usize {
        self.buf.as_ref().map_or(0, BlockBuf::len)
    }
    /// Is it a request without data (a flush)?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a driver tells the layer about its disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// Name for listings (`vda`).
    pub name: String,
    /// The device's serial number or ID string.
    pub serial: String,
    /// Size in 512-byte sectors.
    pub capacity: u64,
    /// Logical block size in bytes (a multiple of 512): requests are
    /// multiples of it and aligned to it.
    pub block_size: u32,
    /// Writes are refused.
    pub read_only: bool,
    /// The device has a volatile cache a flush empties.
    pub flush: bool,
    /// Hardware queues.
    pub nr_hw_queues: usize,
    /// Largest request in bytes.
    pub max_bytes: usize,
}

/// A block driver: takes requests onto a hardware queue.
pub trait BlockDriver: Send + Sync {
    /// Start `rq` on hardware queue `rq.hwq()`. On `EAGAIN` (queue full)
    /// the request comes back and the layer retries once the driver calls
    /// [`BlockDevice::queue_space`]; any other error finishes the request
    /// with it. With `last` false more requests follow at once (a plug):
    /// the driver may wait for them, or for [`BlockDriver::commit`], before
    /// it tells the device (Linux `bd->last`).
    ///
    /// Context: any (the driver takes its queue's spinlock).
    fn queue_rq(&self, rq: Request, last: bool) -> core::result::Result<(), (Error, Request)>;
    /// Tell the device about requests queued on `hwq` with `last` false
    /// (Linux `commit_rqs`).
    ///
    /// Context: any.
    fn commit(&self, hwq: usize) {
        let _ = hwq;
    }
}

/// `iostat`-like counters of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Completed reads, writes, flushes.
    pub ios: [u64; 3],
    /// Sectors read and written.
    pub sectors: [u64; 2],
    /// Nanoseconds spent by completed reads, writes, flushes (submit to
    /// finish).
    pub ns: [u64; 3],
    /// Requests that finished with an error.
    pub errors: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Nanoseconds with at least one request in flight (`io_ticks`).
    pub busy_ns: u64,
    /// Sum over requests of their time in flight (`time_in_queue`); divided
    /// by an interval it is the average queue size over it.
    pub queue_ns: u64,
    /// Where requests finished: [`FinishedIn`] in order.
    pub finished_in: [u64; 4],
}

impl IoStats {
    /// Average service time in nanoseconds of the completed requests.
    pub fn avg_service_ns(&self) -> u64 {
        let n: u64 = self.ios.iter().sum();
        self.ns.iter().sum::<u64>().checked_div(n).unwrap_or(0)
    }
}

#[derive(Default)]
struct StatsState {
    s: IoStats,
    /// When `in_flight` last changed (for `busy_ns` and `queue_ns`).
    stamp_ns: u64,
}

impl StatsState {
    fn account(&mut self, now: u64) {
        let dt = now.saturating_sub(self.stamp_ns);
        if self.s.in_flight > 0 {
            self.s.busy_ns += dt;
            self.s.queue_ns += dt * self.s.in_flight;
        }
        self.stamp_ns = now;
    }
}

/// A disk: its driver, its counters, and the waiters for queue space.
pub struct BlockDevice {
    /// I: what the driver said.
    info: DiskInfo,
    /// I: its name, made `'static` for trace records.
    trace_name: &'static str,
    /// I: the driver.
    driver: Arc<dyn BlockDriver>,
    /// L: the counters.
    stats: SpinLock<StatsState>,
    /// Submitters waiting for a hardware queue to have room.
    space: WaitQueue,
    /// A: bumped by [`BlockDevice::queue_space`], so a waiter sees room that
    /// came between its failed attempt and its sleep.
    space_seq: AtomicU64,
    /// A: Linux's `rq_affinity` (0, 1 or 2).
    rq_affinity: AtomicU8,
}

impl BlockDevice {
    /// Wrap a driver's disk.
    pub fn new(info: DiskInfo, driver: Arc<dyn BlockDriver>) -> Arc<Self> {
        Arc::new(BlockDevice {
            trace_name: kport::trace::intern(&info.name),
            info,
            driver,
            stats: SpinLock::ranked("block stats", RANK_BLOCK_STATS, StatsState::default()),
            space: WaitQueue::new(),
            space_seq: AtomicU64::new(0),
            rq_affinity: AtomicU8::new(1),
        })
    }

    /// Where completions go (Linux's `queue/rq_affinity`): 0 where the
    /// interrupt came, 1 (the default) to the submitting CPU unless the two
    /// share a cache, 2 always to the submitting CPU.
    ///
    /// Return: `EINVAL` for another value.
    pub fn set_rq_affinity(&self, value: u8) -> Result<()> {
        if value > 2 {
            return Err(Error::new(EINVAL));
        }
        self.rq_affinity.store(value, Ordering::Relaxed);
        Ok(())
    }

    /// The `rq_affinity` setting.
    pub fn rq_affinity(&self) -> u8 {
        self.rq_affinity.load(Ordering::Relaxed)
    }

    /// The disk's description.
    pub fn info(&self) -> &DiskInfo {
        &self.info
    }

    /// The counters now.
    pub fn stats(&self) -> IoStats {
        let mut st = self.stats.lock();
        st.account(port().now_ns());
        st.s
    }

    /// Called by the driver when a hardware queue has room again.
    ///
    /// Context: any.
    pub fn queue_space(&self) {
        self.space_seq.fetch_add(1, Ordering::AcqRel);
        self.space.wake_all();
    }

    fn check(&self, op: Op, sector: u64, buf: Option<&BlockBuf>) -> Result<()> {
        match (op, buf) {
            (Op::Flush, None) => Ok(()),
            (Op::Flush, Some(_)) | (Op::Read | Op::Write, None) => Err(Error::new(EINVAL)),
            (Op::Read | Op::Write, Some(b)) => {
                let bs = self.info.block_size as usize;
                let len = b.len();
                let aligned = len.is_multiple_of(bs) && (sector * SECTOR_SIZE as u64).is_multiple_of(bs as u64);
                let end = sector.checked_add((len / SECTOR_SIZE) as u64);
                if !aligned || len > self.info.max_bytes || end.is_none_or(|e| e > self.info.capacity) {
                    return Err(Error::new(EINVAL));
                }
                if op == Op::Write && self.info.read_only {
                    return Err(Error::new(EROFS));
                }
                Ok(())
            }
        }
    }

    /// Submit a request; `done` runs once it finishes, in the context the
    /// completion rule gives (see the module doc). Waits while the hardware
    /// queue is full.
    ///
    /// Return: the error and the buffer back, without calling `done`, for
    /// a request the layer refuses: `EINVAL` (a range past the end, not
    /// a whole number of blocks, too large, a flush with data or a
    /// read/write without), `EROFS` (a write to a read-only disk). Device
    /// errors (`EIO`) reach `done`.
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn submit(
        self: &Arc<Self>,
        op: Op,
        sector: u64,
        buf: Option<BlockBuf>,
        done: DoneFn,
    ) -> core::result::Result<(), (Error, Option<BlockBuf>)> {
        kport::might_sleep();
        self.submit_inner(op, sector, buf, done, true, None)
    }

    /// Start a batch of submissions (Linux `blk_start_plug`): requests
    /// submitted through the [`Plug`] reach the device together when it is
    /// dropped (one notification per hardware queue instead of one per
    /// request), or earlier where a queue fills.
    pub fn plug(self: &Arc<Self>) -> Plug {
        Plug { dev: self.clone(), touched: 0 }
    }

    /// As [`BlockDevice::submit`], but from any context: `EAGAIN` (buffer
    /// back) when the hardware queue is full.
    ///
    /// Context: any.
    pub fn try_submit(
        self: &Arc<Self>,
        op: Op,
        sector: u64,
        buf: Option<BlockBuf>,
        done: DoneFn,
    ) -> core::result::Result<(), (Error, Option<BlockBuf>)> {
        self.submit_inner(op, sector, buf, done, false, None)
    }

    #[track_caller]
    fn submit_inner(
        self: &Arc<Self>,
        op: Op,
        sector: u64,
        buf: Option<BlockBuf>,
        done: DoneFn,
        may_wait: bool,
        mut plug: Option<&mut u64>,
    ) -> core::result::Result<(), (Error, Option<BlockBuf>)> {
        if let Err(e) = self.check(op, sector, buf.as_ref()) {
            return Err((e, buf));
        }
        if op == Op::Flush && !self.info.flush {
            // Nothing volatile to flush: done at once, as Linux ends an
            // empty preflush on a device without a write cache.
            self.count_start(port().now_ns());
            let rq = self.request(op, sector, None, done);
            finish(rq, FinishedIn::IrqLocal);
            return Ok(());
        }
        if kport::fault::FAIL_MAKE_REQUEST.should_fail(1, core::panic::Location::caller()) {
            // Injected failure (`fail_make_request`): the request ends with
            // EIO without reaching the device, as Linux ends the bio.
            self.count_start(port().now_ns());
            let mut rq = self.request(op, sector, buf, done);
            rq.result = Err(Error::new(EIO));
            finish(rq, FinishedIn::IrqLocal);
            return Ok(());
        }
        let mut rq = self.request(op, sector, buf, done);
        self.count_start(rq.start_ns);
        loop {
            let seq = self.space_seq.load(Ordering::Acquire);
            let hwq = rq.hwq;
            if kport::trace::on(kport::trace::Event::BlockRqIssue) {
                trace_rq(kport::trace::Event::BlockRqIssue, &rq);
            }
            match self.driver.queue_rq(rq, plug.is_none()) {
                Ok(()) => {
                    if let Some(touched) = plug.as_deref_mut() {
                        *touched |= 1 << (hwq % 64);
                    }
                    return Ok(());
                }
                Err((e, back)) if e.errno == EAGAIN => {
                    rq = back;
                    // A full queue: what the plug holds back goes to the
                    // device now, or nothing would free a slot.
                    if let Some(touched) = plug.as_deref_mut() {
                        self.commit(core::mem::take(touched));
                    }
                    if !may_wait {
                        self.count_abandon(port().now_ns());
                        return Err((e, rq.buf.take()));
                    }
                    self.space.wait_event("blk_queue_space", || self.space_seq.load(Ordering::Acquire) != seq);
                    // A submitter that waited may have moved CPU.
                    rq.cpu = port().cpu_id();
                    rq.hwq = rq.cpu % self.info.nr_hw_queues.max(1);
                }
                Err((e, mut back)) => {
                    back.result = Err(e);
                    finish(back, FinishedIn::IrqLocal);
                    return Ok(());
                }
            }
        }
    }

    fn request(self: &Arc<Self>, op: Op, sector: u64, buf: Option<BlockBuf>, done: DoneFn) -> Request {
        let cpu = port().cpu_id();
        Request {
            op,
            sector,
            buf,
            done: Some(done),
            dev: self.clone(),
            cpu,
            hwq: cpu % self.info.nr_hw_queues.max(1),
            start_ns: port().now_ns(),
            result: Ok(()),
        }
    }

    /// Tell the device about the requests on the hardware queues in the
    /// bit mask `touched`.
    fn commit(&self, touched: u64) {
        for hwq in 0..self.info.nr_hw_queues.min(64) {
            if touched & (1 << hwq) != 0 {
                self.driver.commit(hwq);
            }
        }
    }

    fn count_start(&self, now: u64) {
        let mut st = self.stats.lock();
        st.account(now);
        st.s.in_flight += 1;
    }

    fn count_abandon(&self, now: u64) {
        let mut st = self.stats.lock();
        st.account(now);
        st.s.in_flight -= 1;
    }

    /// Submit and wait: returns the device's result and the buffer.
    ///
    /// Return: as [`BlockDevice::submit`]; a device error is `EIO`.
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn submit_wait(self: &Arc<Self>, op: Op, sector: u64, buf: Option<BlockBuf>) -> (Result<()>, Option<BlockBuf>) {
        kport::might_sleep();
        struct Slot {
            done: Completion,
            out: SpinLock<Option<(Result<()>, Option<BlockBuf>)>>,
        }
        let slot =
            Arc::new(Slot { done: Completion::new(), out: SpinLock::ranked("block wait slot", RANK_BLOCK_DONE, None) });
        let s2 = slot.clone();
        let done: DoneFn = Box::new(move |r, b| {
            *s2.out.lock() = Some((r, b));
            s2.done.complete_all();
        });
        if let Err((e, b)) = self.submit(op, sector, buf, done) {
            return (Err(e), b);
        }
        slot.done.wait("blk_wait");
        let out = slot.out.lock().take();
        out.expect("a finished request leaves its result")
    }

    /// Read `len` bytes from `sector` into a new buffer.
    ///
    /// Return: as [`BlockDevice::submit_wait`], `ENOMEM`.
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn read(self: &Arc<Self>, sector: u64, len: usize) -> Result<BlockBuf> {
        let buf = BlockBuf::new(len)?;
        match self.submit_wait(Op::Read, sector, Some(buf)) {
            (Ok(()), Some(b)) => Ok(b),
            (Ok(()), None) => Err(Error::new(EINVAL)),
            (Err(e), _) => Err(e),
        }
    }

    /// Write `buf` at `sector`; returns the buffer.
    ///
    /// Return: as [`BlockDevice::submit_wait`].
    ///
    /// Context: may sleep.
    pub fn write(
        self: &Arc<Self>,
        sector: u64,
        buf: BlockBuf,
    ) -> core::result::Result<BlockBuf, (Error, Option<BlockBuf>)> {
        match self.submit_wait(Op::Write, sector, Some(buf)) {
            (Ok(()), Some(b)) => Ok(b),
            (Ok(()), None) => Err((Error::new(EINVAL), None)),
            (Err(e), b) => Err((e, b)),
        }
    }

    /// Flush the device's volatile cache.
    ///
    /// Return: as [`BlockDevice::submit_wait`].
    ///
    /// Context: may sleep.
    pub fn flush(self: &Arc<Self>) -> Result<()> {
        self.submit_wait(Op::Flush, 0, None).0
    }
}

/// A batch of submissions ([`BlockDevice::plug`]); dropping it tells the
/// device about them.
pub struct Plug {
    dev: Arc<BlockDevice>,
    /// Bit mask of the hardware queues holding requests the device was not
    /// told about.
    touched: u64,
}

impl Plug {
    /// As [`BlockDevice::submit`], held back until the plug is dropped.
    ///
    /// Context: may sleep.
    #[track_caller]
    pub fn submit(
        &mut self,
        op: Op,
        sector: u64,
        buf: Option<BlockBuf>,
        done: DoneFn,
    ) -> core::result::Result<(), (Error, Option<BlockBuf>)> {
        kport::might_sleep();
        let dev = self.dev.clone();
        dev.submit_inner(op, sector, buf, done, true, Some(&mut self.touched))
    }
}

impl Drop for Plug {
    fn drop(&mut self) {
        self.dev.commit(core::mem::take(&mut self.touched));
    }
}

/// One CPU's requests waiting for its `BLOCK` softirq.
struct DoneList {
    /// P: requests, with the rule that brought them.
    list: SpinLock<VecDeque<(Request, FinishedIn)>>,
}

static DONE: spin::Once<Vec<DoneList>> = spin::Once::new();
static SOFTIRQ_OPEN: AtomicBool = AtomicBool::new(false);

fn done_lists() -> &'static [DoneList] {
    DONE.call_once(|| {
        (0..port().cpu_count())
            .map(|_| DoneList { list: SpinLock::ranked("block done list", RANK_BLOCK_DONE, VecDeque::new()) })
            .collect()
    })
}

/// Open the `BLOCK` softirq (once). Drivers call it before their first
/// interrupt.
pub fn init() {
    done_lists();
    if !SOFTIRQ_OPEN.swap(true, Ordering::AcqRel) {
        open_softirq(Vector::Block, block_softirq);
        port().add_hotplug_hooks(&HOTPLUG);
    }
}

/// CPU hot-plug: a dead CPU's finished requests are finished by the CPU
/// that took it down (Linux `blk_softirq_cpu_dead`).
struct Hotplug;

impl kport::HotplugHooks for Hotplug {
    fn cpu_going_down(&self, _cpu: usize) {}

    fn cpu_dead(&self, cpu: usize) {
        let p = port();
        let was = p.irq_save();
        let here = p.cpu_id();
        let lists = done_lists();
        if here != cpu && cpu < lists.len() {
            let moved: Vec<_> = lists[cpu].list.lock().drain(..).collect();
            if !moved.is_empty() {
                lists[here].list.lock().extend(moved);
                raise_softirq_irqoff(Vector::Block);
            }
        }
        p.irq_restore(was);
    }

    fn cpu_came_up(&self, _cpu: usize) {}
}

static HOTPLUG: Hotplug = Hotplug;

/// The `BLOCK` softirq: finish this CPU's queued requests.
fn block_softirq() {
    let Some(l) = done_lists().get(port().cpu_id()) else {
        return;
    };
    loop {
        let next = l.list.lock().pop_front();
        let Some((rq, how)) = next else {
            break;
        };
        finish(rq, how);
    }
}

/// Do CPUs `a` and `b` share a last-level cache?
fn share_cache(a: usize, b: usize) -> bool {
    let (ta, tb) = (port().cpu_topology(a), port().cpu_topology(b));
    ta.package == tb.package && ta.llc == tb.llc
}

/// Queue `rq` on `cpu`'s done list; true if the list was empty (the caller
/// then raises or IPIs, once per batch, as Linux's `llist_add`).
fn queue_done(cpu: usize, rq: Request, how: FinishedIn) -> bool {
    let l = &done_lists()[cpu];
    let mut g = l.list.lock();
    let first = g.is_empty();
    g.push_back((rq, how));
    first
}

/// A driver's request came back from the device with `result` (`EIO` for
/// a device error): finish it by the blk-mq rule (see the module doc).
///
/// Context: hard IRQ (or any context with interrupts off).
pub fn complete(mut rq: Request, result: Result<()>) {
    rq.result = result;
    let here = port().cpu_id();
    let nr_hwq = rq.dev.info.nr_hw_queues.max(1);
    let cpus = port().cpu_count();
    // The hardware queue serves the submitter alone (Linux `nr_ctx == 1`).
    let hwq_alone = cpus <= nr_hwq;
    if here == rq.cpu && hwq_alone {
        return finish(rq, FinishedIn::IrqLocal);
    }
    let affinity = rq.dev.rq_affinity();
    let need_ipi = affinity > 0
        && here != rq.cpu
        && (affinity == 2 || !share_cache(here, rq.cpu))
        && port().online_mask().contains(rq.cpu);
    if need_ipi {
        let target = rq.cpu;
        if queue_done(target, rq, FinishedIn::Ipi) {
            let sent = port().call_on_cpu(target, Box::new(|| raise_softirq_irqoff(Vector::Block)), false);
            if sent.is_err() {
                // The CPU went away meanwhile: finish its requests here.
                raise_softirq_irqoff(Vector::Block);
                let moved: Vec<_> = done_lists()[target].list.lock().drain(..).collect();
                for (rq, _) in moved {
                    finish(rq, FinishedIn::IrqRemote);
                }
            }
        }
        return;
    }
    if nr_hwq == 1 {
        if queue_done(here, rq, FinishedIn::Softirq) {
            raise_softirq_irqoff(Vector::Block);
        }
        return;
    }
    let how = if here == rq.cpu { FinishedIn::IrqLocal } else { FinishedIn::IrqRemote };
    finish(rq, how)
}

/// The `block_rq_issue` and `block_rq_complete` tracepoints (`rwbs`: `R`,
/// `W` or `F`; the length in bytes and sectors; the error as a negative
/// errno).
#[cold]
#[inline(never)]
fn trace_rq(e: kport::trace::Event, rq: &Request) {
    let rwbs = match rq.op {
        Op::Read => b'R',
        Op::Write => b'W',
        Op::Flush => b'F',
    };
    let err = match &rq.result {
        Ok(()) => 0i64,
        Err(x) => -(x.errno as i64),
    };
    let bytes = rq.len() as u64;
    kport::trace::emit(
        e,
        [rq.sector, bytes / SECTOR_SIZE as u64, bytes, rwbs as u64, err as u64],
        rq.dev.trace_name,
        "",
    );
}

/// Count `rq` and hand its result and buffer to its submitter.
fn finish(mut rq: Request, how: FinishedIn) {
    if kport::trace::on(kport::trace::Event::BlockRqComplete) {
        trace_rq(kport::trace::Event::BlockRqComplete, &rq);
    }
    let now = port().now_ns();
    {
        let mut st = rq.dev.stats.lock();
        st.account(now);
        st.s.in_flight -= 1;
        let i = match rq.op {
            Op::Read => 0,
            Op::Write => 1,
            Op::Flush => 2,
        };
        if rq.result.is_ok() {
            st.s.ios[i] += 1;
            st.s.ns[i] += now.saturating_sub(rq.start_ns);
            if i < 2 {
                st.s.sectors[i] += (rq.len() / SECTOR_SIZE) as u64;
            }
        } else {
            st.s.errors += 1;
        }
        st.s.finished_in[how as usize] += 1;
    }
    if let Some(done) = rq.done.take() {
        done(rq.result, rq.buf.take());
    }
}

static DEVICES: SpinLock<Vec<Arc<BlockDevice>>> = SpinLock::ranked("block devices", RANK_BLOCK_STATS, Vec::new());

/// Make a disk known (`vda`, ...).
pub fn register(dev: Arc<BlockDevice>) {
    DEVICES.lock().push(dev);
}

/// Every registered disk.
pub fn devices() -> Vec<Arc<BlockDevice>> {
    DEVICES.lock().clone()
}

/// The disk with serial `serial`.
pub fn find(serial: &str) -> Option<Arc<BlockDevice>> {
    DEVICES.lock().iter().find(|d| d.info.serial == serial).cloned()
}

/// The counters of every disk, like `/proc/diskstats` reduced to what
/// `iostat -x` prints: name, reads, sectors read, writes, sectors written,
/// flushes, in flight, busy ms, average queue size ×100 since boot,
/// average service µs, errors.
pub fn diskstats() -> String {
    use core::fmt::Write;
    let mut out = String::new();
    let now = port().now_ns().max(1);
    for d in devices() {
        let s = d.stats();
        let _ = writeln!(
            out,
            "{:<6} {:>8} {:>10} {:>8} {:>10} {:>6} {:>4} {:>8} {:>6} {:>8} {:>4}  {}",
            d.info.name,
            s.ios[0],
            s.sectors[0],
            s.ios[1],
            s.sectors[1],
            s.ios[2],
            s.in_flight,
            s.busy_ns / 1_000_000,
            s.queue_ns.saturating_mul(100) / now,
            s.avg_service_ns() / 1000,
            s.errors,
            d.info.serial
        );
    }
    out
}
