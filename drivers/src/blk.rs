//! virtio-blk (virtio 1.x, section 5.2) on the modern PCI transport, a
//! [`BlockDriver`] of the block layer. Linux: `drivers/block/virtio_blk.c`.
//!
//! * **Features** negotiated: `VERSION_1`, `SIZE_MAX`, `SEG_MAX`,
//!   `BLK_SIZE`, `RO`, `FLUSH`, `MQ`.
//! * **Queues**: one split virtqueue per hardware queue (`MQ`'s
//!   `num_queues`, else one); CPU `c` submits on queue `c % queues`.
//!   A request is a chain of header (device reads), data (split at
//!   `size_max`), and status byte (device writes); each queue has a slot
//!   of header and status per descriptor head, in one DMA block, so
//!   nothing is allocated per request. Many requests are in flight per
//!   queue, up to its descriptors.
//! * **Interrupts**: MSI-X where the port has message-signalled lines
//!   (`IrqChip::msi_alloc`) and the device a table big enough: entry 0
//!   for configuration changes (on CPU 0), entry `1 + i` for queue `i`,
//!   aimed at CPU `i % cpus`, the first CPU the queue serves (Linux's
//!   managed affinity spreads queues the same way). Otherwise the legacy
//!   INTx line, shared, where the ISR register says whether it was this
//!   device. A hard handler only drains its used rings and hands each
//!   request to [`block::complete`], which finishes it by blk-mq's rule;
//!   submitters waiting for descriptors are woken.
//! * **Errors**: status `IOERR` is `EIO`, `UNSUPP` is `EOPNOTSUPP`.
//!
//! # Locking
//! `Q:` under the queue's lock (rank [`RANK_VIRTQUEUE`]), taken from task
//! context and from the hard handler; nothing else is taken under it.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use kport::bus::{DeviceBus, DmaRegion};
use kport::sync::SpinLock;
use kport::{EAGAIN, EINVAL, EIO, ENODEV, Error, Result, port};
use softirq::{IrqAction, IrqFlags, IrqReturn, request_irq};

use crate::block::{self, BlockDevice, BlockDriver, DiskInfo, Op, Request};
use crate::mmio::Regs;
use crate::pci::{self, MsixCapability, PciFunction};
use crate::virtio::queue::{Buffer, SplitQueue};
use crate::virtio::{NO_VECTOR, Notifier, VirtioPci};

/// Rank of a virtqueue's lock (below the block layer's leaves).
pub const RANK_VIRTQUEUE: u8 = 24;

/// Feature: `size_max` is valid.
pub const F_SIZE_MAX: u64 = 1 << 1;
/// Feature: `seg_max` is valid.
pub const F_SEG_MAX: u64 = 1 << 2;
/// Feature: the device is read-only.
pub const F_RO: u64 = 1 << 5;
/// Feature: `blk_size` is valid.
pub const F_BLK_SIZE: u64 = 1 << 6;
/// Feature: flush is supported (the device has a volatile cache).
pub const F_FLUSH: u64 = 1 << 9;
/// Feature: several queues (`num_queues`).
pub const F_MQ: u64 = 1 << 12;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;

/// Bytes of header + status slot per descriptor head.
const SLOT: usize = 32;
/// Largest queue this driver sets up.
const MAX_QUEUE_SIZE: u16 = 128;

/// The virtio device type of a block device.
pub const VIRTIO_TYPE_BLK: u16 = 2;

struct HwQueue {
    /// Q: the ring.
    vq: SplitQueue,
    /// I: the queue's notify register.
    notifier: Notifier,
    /// I: header and status slots, one per head.
    slots: DmaRegion,
    /// Q: the request at each head.
    inflight: Vec<Option<Request>>,
    /// Q: chains the device was not told about (a plug's).
    unkicked: bool,
}

/// A virtio-blk device.
pub struct VirtioBlk {
    dev: VirtioPci,
    queues: Vec<SpinLock<HwQueue>>,
    /// I: largest data segment (`size_max`), bytes.
    size_max: usize,
    /// I: most data segments per request (`seg_max`).
    seg_max: usize,
    /// I: the block layer's device (set once it exists).
    block: spin::Once<Weak<BlockDevice>>,
    /// A: interrupts that were this device's.
    interrupts: AtomicU64,
}

fn slot_regs(slots: &DmaRegion, head: u16) -> Regs {
    // SAFETY: the slot region is this queue's own DMA memory, alive as
    // long as the queue.
    unsafe { Regs::new(slots.virt + usize::from(head) * SLOT, SLOT) }
}

impl VirtioBlk {
    fn with_queue<T>(&self, i: usize, f: impl FnOnce(&mut HwQueue) -> T) -> T {
        f(&mut self.queues[i].lock())
    }

    /// Put `rq` on its queue, and tell the device unless more follow
    /// (`last` false). The caller holds no lock.
    fn start(&self, rq: Request, last: bool) -> core::result::Result<(), (Error, Request)> {
        let (ty, writes) = match rq.op {
            Op::Read => (T_IN, true),
            Op::Write => (T_OUT, false),
            Op::Flush => (T_FLUSH, false),
        };
        let mut bufs: Vec<Buffer> = Vec::with_capacity(4);
        bufs.push(Buffer { phys: 0, len: 16, device_writes: false });
        if let Some(b) = rq.buf.as_ref() {
            let mut off = 0;
            while off < b.len() {
                let n = (b.len() - off).min(self.size_max);
                bufs.push(Buffer { phys: b.phys() + off as u64, len: n as u32, device_writes: writes });
                off += n;
            }
            if bufs.len() - 1 > self.seg_max {
                return Err((Error::new(EINVAL), rq));
            }
        }
        bufs.push(Buffer { phys: 0, len: 1, device_writes: true });
        let q = rq.hwq().min(self.queues.len() - 1);
        let mut g = self.queues[q].lock();
        if usize::from(g.vq.num_free()) < bufs.len() {
            return Err((Error::new(EAGAIN), rq));
        }
        // The head is the free list's head: write its slot before adding.
        let head = g.peek_head();
        let slot = slot_regs(&g.slots, head);
        slot.write32(0, ty);
        slot.write32(4, 0);
        slot.write64(8, if rq.op == Op::Flush { 0 } else { rq.sector });
        slot.write8(16, 0xff);
        let slot_phys = g.slots.phys + usize::from(head) as u64 * SLOT as u64;
        bufs[0].phys = slot_phys;
        let status = bufs.len() - 1;
        bufs[status].phys = slot_phys + 16;
        let got = match g.vq.add(&bufs) {
            Ok(h) => h,
            Err(e) => return Err((e, rq)),
        };
        debug_assert_eq!(got, head);
        g.inflight[usize::from(head)] = Some(rq);
        if !last {
            g.unkicked = true;
            return Ok(());
        }
        g.unkicked = false;
        let quiet = g.vq.notify_suppressed();
        let notifier = g.notifier;
        drop(g);
        if !quiet {
            notifier.notify();
        }
        Ok(())
    }

    /// Tell the device about queue `q`'s held-back chains.
    fn kick(&self, q: usize) {
        let Some(queue) = self.queues.get(q) else { return };
        let mut g = queue.lock();
        if !core::mem::take(&mut g.unkicked) {
            return;
        }
        let quiet = g.vq.notify_suppressed();
        let notifier = g.notifier;
        drop(g);
        if !quiet {
            notifier.notify();
        }
    }

    /// The INTx hard handler: was it this device (the ISR, read to clear)?
    /// Then drain every queue.
    fn interrupt(&self) -> IrqReturn {
        let isr = self.dev.read_isr();
        if isr == 0 {
            return IrqReturn::None;
        }
        self.interrupts.fetch_add(1, Ordering::Relaxed);
        self.drain(0..self.queues.len());
        IrqReturn::Handled
    }

    /// Queue `i`'s MSI-X hard handler.
    fn queue_interrupt(&self, i: usize) -> IrqReturn {
        self.interrupts.fetch_add(1, Ordering::Relaxed);
        self.drain(i..i + 1);
        IrqReturn::Handled
    }

    /// Take the used chains of `queues` and complete their requests, with
    /// no queue lock held while completing.
    fn drain(&self, queues: core::ops::Range<usize>) {
        let mut done = Vec::new();
        for i in queues {
            self.with_queue(i, |q| {
                while let Some((head, _len)) = q.vq.pop_used() {
                    let status = slot_regs(&q.slots, head).read8(16);
                    if let Some(rq) = q.inflight[usize::from(head)].take() {
                        done.push((rq, status));
                    }
                }
            });
        }
        let any = !done.is_empty();
        for (rq, status) in done {
            let r = match status {
                S_OK => Ok(()),
                S_IOERR => Err(Error::new(EIO)),
                _ => Err(Error::new(kport::EOPNOTSUPP)),
            };
            block::complete(rq, r);
        }
        if any && let Some(b) = self.block.get().and_then(Weak::upgrade) {
            b.queue_space();
        }
    }

    /// Interrupts that were this device's so far.
    pub fn interrupts(&self) -> u64 {
        self.interrupts.load(Ordering::Relaxed)
    }

    /// Read the device's ID string (`GET_ID`) by polling queue 0, before
    /// interrupts are on.
    fn get_id(&self, bus: &dyn DeviceBus) -> Result<String> {
        let buf = bus.dma_alloc(20)?;
        let r = (|| {
            let mut g = self.queues[0].lock();
            let head = g.peek_head();
            let slot = slot_regs(&g.slots, head);
            slot.write32(0, T_GET_ID);
            slot.write32(4, 0);
            slot.write64(8, 0);
            slot.write8(16, 0xff);
            let sp = g.slots.phys + usize::from(head) as u64 * SLOT as u64;
            g.vq.add(&[
                Buffer { phys: sp, len: 16, device_writes: false },
                Buffer { phys: buf.phys, len: 20, device_writes: true },
                Buffer { phys: sp + 16, len: 1, device_writes: true },
            ])?;
            g.notifier.notify();
            let deadline = port().now_ns() + 2_000_000_000;
            loop {
                if let Some((h, _)) = g.vq.pop_used() {
                    if h != head || slot.read8(16) != S_OK {
                        return Err(Error::new(EIO));
                    }
                    break;
                }
                if port().now_ns() > deadline {
                    return Err(Error::new(EIO));
                }
                core::hint::spin_loop();
            }
            // SAFETY: the 20 bytes of the DMA buffer the device wrote.
            let bytes = unsafe { core::slice::from_raw_parts(buf.virt as *const u8, 20) };
            let end = bytes.iter().position(|b| *b == 0).unwrap_or(20);
            Ok(String::from_utf8_lossy(&bytes[..end]).into())
        })();
        // The device is done with the buffer (or reset on the error path by
        // the caller before memory is reused).
        bus.dma_free(buf);
        r
    }
}

impl HwQueue {
    /// The head the next `add` will use.
    fn peek_head(&self) -> u16 {
        self.vq.next_head()
    }
}

impl BlockDriver for VirtioBlk {
    fn queue_rq(&self, rq: Request, last: bool) -> core::result::Result<(), (Error, Request)> {
        self.start(rq, last)
    }

    fn commit(&self, hwq: usize) {
        self.kick(hwq.min(self.queues.len() - 1));
    }
}

/// How a disk's interrupts arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupts {
    /// MSI-X: one line per queue, each aimed at the first CPU the queue
    /// serves, and one for configuration changes (its first entry).
    Msix {
        /// The configuration line.
        config: u32,
        /// Queue `i`'s line.
        queues: Vec<u32>,
    },
    /// The legacy INTx line, shared, for every queue.
    Intx(u32),
}

/// A probed disk: the driver, its block device, its interrupt actions.
pub struct Disk {
    /// The driver.
    pub driver: Arc<VirtioBlk>,
    /// The block layer's device.
    pub block: Arc<BlockDevice>,
    /// The interrupt lines.
    pub interrupts: Interrupts,
    /// The actions on them.
    pub actions: Vec<IrqAction>,
}

/// Write one MSI-X table entry, masked while it changes (PCI: the
/// message of an unmasked entry must not be changed in place).
fn write_msix_entry(table: &Regs, off: usize, address: u64, data: u32) {
    table.write32(off + 12, 1);
    table.write32(off, address as u32);
    table.write32(off + 4, (address >> 32) as u32);
    table.write32(off + 8, data);
    table.write32(off + 12, 0);
}

/// MSI-X set-up: a line per queue (aimed at CPU `i % cpus`) plus one for
/// configuration, each written into the device's table, MSI-X enabled
/// with INTx off. On any failure everything is undone and `None` returned
/// (the caller falls back to INTx).
fn setup_msix(bus: &dyn DeviceBus, dev: &VirtioPci, nq: u16) -> Option<(u32, Vec<u32>)> {
    let chip = port().irq_chip()?;
    let cap = MsixCapability::read(bus, &dev.func)?;
    if cap.table_size < nq + 1 {
        return None;
    }
    let (base, size) = dev.func.bars[usize::from(cap.table.0)]?.memory_base()?;
    let table_len = 16 * usize::from(cap.table_size);
    if u64::from(cap.table.1) + table_len as u64 > size {
        return None;
    }
    let table_virt = bus.map_registers(base + u64::from(cap.table.1), table_len).ok()?;
    // SAFETY: the port mapped the MSI-X table for the kernel's life.
    let table = unsafe { Regs::new(table_virt, table_len) };
    let cpus = port().cpu_count().max(1);
    let mut lines = Vec::new();
    for entry in 0..=nq {
        // Entry 0: configuration (CPU 0); entry 1 + i: queue i.
        let cpu = if entry == 0 { 0 } else { usize::from(entry - 1) % cpus };
        match chip.msi_alloc(cpu) {
            Ok(m) => {
                let off = 16 * usize::from(entry);
                write_msix_entry(&table, off, m.address, m.data);
                // The port may aim the line elsewhere while its CPU is
                // offline: the entry is rewritten the same way.
                chip.msi_set_writer(
                    m.irq,
                    Arc::new(move |address, data| {
                        // SAFETY: the port mapped the MSI-X table for the
                        // kernel's life (above); `off` is inside it.
                        let table = unsafe { Regs::new(table_virt, table_len) };
                        write_msix_entry(&table, off, address, data);
                    }),
                );
                lines.push(m.irq);
            }
            Err(_) => {
                for l in lines {
                    chip.msi_free(l);
                }
                return None;
            }
        }
    }
    cap.set_enabled(bus, dev.func.addr, true, false);
    let config = lines.remove(0);
    if dev.set_config_vector(0).is_err() {
        cap.set_enabled(bus, dev.func.addr, false, false);
        chip.msi_free(config);
        for l in lines {
            chip.msi_free(l);
        }
        return None;
    }
    Some((config, lines))
}

/// Set up one virtio-blk function as disk `name`: negotiate, route its
/// interrupts (MSI-X where the port and the device have it, else INTx),
/// build its queues, read its ID, attach its handlers, register it with
/// the block layer.
///
/// Return: `ENODEV` for a function that is not a virtio-blk device (or
/// has no interrupt at all), the transport's and `request_irq`'s errors,
/// `ENOMEM`.
///
/// Context: may sleep.
pub fn probe(bus: &'static dyn DeviceBus, func: PciFunction, name: &str) -> Result<Disk> {
    kport::might_sleep();
    if crate::virtio::device_type(&func) != Some(VIRTIO_TYPE_BLK) {
        return Err(Error::new(ENODEV));
    }
    let intx = bus.intx_line(func.addr, func.interrupt_pin);
    let addr = func.addr;
    let dev = VirtioPci::probe(bus, func)?;
    let features = dev.negotiate(F_SIZE_MAX | F_SEG_MAX | F_RO | F_BLK_SIZE | F_FLUSH | F_MQ)?;
    let (capacity, size_max, seg_max, blk_size, nq) =
        dev.read_config(|c| (c.read64(0), c.read32(8), c.read32(12), c.read32(20), c.read16(34)));
    let nq = if features & F_MQ != 0 { nq.max(1) } else { 1 }.min(dev.num_queues().max(1));
    let size_max = if features & F_SIZE_MAX != 0 && size_max > 0 { size_max as usize } else { usize::MAX >> 1 };
    let seg_max = if features & F_SEG_MAX != 0 && seg_max > 0 { seg_max as usize } else { 1 };
    let block_size =
        if features & F_BLK_SIZE != 0 && blk_size >= 512 && blk_size.is_power_of_two() { blk_size } else { 512 };
    let interrupts = match setup_msix(bus, &dev, nq) {
        Some((config, queues)) => Interrupts::Msix { config, queues },
        None => match intx {
            Some(line) => Interrupts::Intx(line),
            None => {
                dev.add_status(crate::virtio::STATUS_FAILED);
                return Err(Error::new(ENODEV));
            }
        },
    };
    let func = dev.func.clone();
    let release_msix = |interrupts: &Interrupts| {
        if let (Interrupts::Msix { config, queues }, Some(chip)) = (interrupts, port().irq_chip()) {
            if let Some(cap) = MsixCapability::read(bus, &func) {
                cap.set_enabled(bus, addr, false, false);
            }
            chip.msi_free(*config);
            for l in queues {
                chip.msi_free(*l);
            }
        }
    };
    let mut queues = Vec::new();
    let fail = |dev: &VirtioPci, queues: Vec<SpinLock<HwQueue>>, e: Error| {
        dev.reset();
        dev.add_status(crate::virtio::STATUS_FAILED);
        for q in queues {
            let q = q.into_inner();
            bus.dma_free(q.slots);
            q.vq.free(bus);
        }
        release_msix(&interrupts);
        e
    };
    for i in 0..nq {
        let size = dev.max_queue_size(i).min(MAX_QUEUE_SIZE);
        let size = if size.is_power_of_two() { size } else { size.next_power_of_two() >> 1 };
        let vq = match SplitQueue::new(bus, size) {
            Ok(q) => q,
            Err(e) => return Err(fail(&dev, queues, e)),
        };
        let slots = match bus.dma_alloc(usize::from(size) * SLOT) {
            Ok(s) => s,
            Err(e) => {
                vq.free(bus);
                return Err(fail(&dev, queues, e));
            }
        };
        let vector = if matches!(interrupts, Interrupts::Msix { .. }) { 1 + i } else { NO_VECTOR };
        let notifier = match dev.setup_queue(i, &vq, vector) {
            Ok(n) => n,
            Err(e) => {
                vq.free(bus);
                bus.dma_free(slots);
                return Err(fail(&dev, queues, e));
            }
        };
        let inflight = (0..size).map(|_| None).collect();
        queues.push(SpinLock::ranked(
            "virtqueue",
            RANK_VIRTQUEUE,
            HwQueue { vq, notifier, slots, inflight, unkicked: false },
        ));
    }
    dev.driver_ok();
    let max_bytes = size_max.saturating_mul(seg_max).min(1 << 20);
    let blk =
        Arc::new(VirtioBlk { dev, queues, size_max, seg_max, block: spin::Once::new(), interrupts: AtomicU64::new(0) });
    let serial = blk.get_id(bus).unwrap_or_default();
    let info = DiskInfo {
        name: String::from(name),
        serial,
        capacity,
        block_size,
        read_only: features & F_RO != 0,
        flush: features & F_FLUSH != 0,
        nr_hw_queues: usize::from(nq),
        max_bytes,
    };
    block::init();
    let bdev = BlockDevice::new(info, blk.clone());
    blk.block.call_once(|| Arc::downgrade(&bdev));
    let mut actions = Vec::new();
    let attached = (|| {
        match &interrupts {
            Interrupts::Msix { config, queues } => {
                let d = blk.clone();
                actions.push(request_irq(
                    *config,
                    Box::new(move |_| {
                        d.interrupts.fetch_add(1, Ordering::Relaxed);
                        IrqReturn::Handled
                    }),
                    IrqFlags::empty(),
                    &format!("virtio-blk {addr} config"),
                )?);
                for (i, line) in queues.iter().enumerate() {
                    let d = blk.clone();
                    actions.push(request_irq(
                        *line,
                        Box::new(move |_| d.queue_interrupt(i)),
                        IrqFlags::empty(),
                        &format!("virtio-blk {addr} q{i}"),
                    )?);
                }
            }
            Interrupts::Intx(line) => {
                let d = blk.clone();
                actions.push(request_irq(
                    *line,
                    Box::new(move |_| d.interrupt()),
                    IrqFlags::SHARED,
                    &format!("virtio-blk {addr}"),
                )?);
                pci::update_command(bus, addr, 0, pci::CMD_INTX_DISABLE);
            }
        }
        Ok::<(), Error>(())
    })();
    if let Err(e) = attached {
        for a in actions {
            let _ = softirq::free_irq(a);
        }
        blk.dev.reset();
        release_msix(&interrupts);
        return Err(e);
    }
    block::register(bdev.clone());
    Ok(Disk { driver: blk, block: bdev, interrupts, actions })
}

static PROBED: SpinLock<Vec<Disk>> = SpinLock::ranked("virtio-blk disks", crate::block::RANK_BLOCK_STATS, Vec::new());

/// Find every virtio-blk function on the port's buses and set each up as
/// `vda`, `vdb`, ... (once: later calls return the disks already found).
/// Returns the block devices.
///
/// Return: `ENODEV` when the port has no device bus.
///
/// Context: may sleep.
pub fn probe_all() -> Result<Vec<Arc<BlockDevice>>> {
    kport::might_sleep();
    static ONCE: kport::sync::Mutex<bool> = kport::sync::Mutex::new(false);
    let mut done = ONCE.lock();
    let bus = port().device_bus().ok_or(Error::new(ENODEV))?;
    if !*done {
        *done = true;
        let mut n = 0u8;
        for func in pci::enumerate(bus) {
            if crate::virtio::device_type(&func) != Some(VIRTIO_TYPE_BLK) {
                continue;
            }
            let addr = func.addr;
            let name = format!("vd{}", (b'a' + n) as char);
            match probe(bus, func, &name) {
                Ok(d) => {
                    n += 1;
                    PROBED.lock().push(d);
                }
                Err(e) => port().console_line(&format!("virtio-blk {addr}: not set up: {e:?}")),
            }
        }
    }
    Ok(PROBED.lock().iter().map(|d| d.block.clone()).collect())
}

/// How the probed disk with serial `serial` takes its interrupts.
pub fn interrupts_of(serial: &str) -> Option<Interrupts> {
    PROBED.lock().iter().find(|d| d.block.info().serial == serial).map(|d| d.interrupts.clone())
}

/// Interrupts taken by each probed disk, by name.
pub fn interrupt_counts() -> Vec<(String, u64)> {
    PROBED.lock().iter().map(|d| (d.block.info().name.clone(), d.driver.interrupts())).collect()
}
