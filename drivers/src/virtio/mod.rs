//! Virtio over PCI, the modern transport (virtio 1.x, section 4.1): the
//! device's configuration structures found through its vendor-specific
//! capabilities, the status handshake, feature negotiation and queue
//! set-up. Linux: `drivers/virtio/virtio_pci_modern.c`.
//!
//! Modern-only devices (`1af4:1040 + type`) and transitional ones
//! (`1af4:1000..103f`) are driven the same way: a transitional device
//! also carries the modern capabilities, and this transport uses only
//! those (the legacy I/O BAR is left alone).

pub mod queue;

use kport::bus::DeviceBus;
use kport::{EINVAL, EIO, ENODEV, Error, Result};

use crate::mmio::Regs;
use crate::pci::{self, Bar, CAP_VENDOR, PciFunction};
use queue::SplitQueue;

/// Device status: the guest noticed the device.
pub const STATUS_ACKNOWLEDGE: u8 = 1;
/// Device status: the guest has a driver for it.
pub const STATUS_DRIVER: u8 = 2;
/// Device status: the driver is ready.
pub const STATUS_DRIVER_OK: u8 = 4;
/// Device status: feature negotiation is complete.
pub const STATUS_FEATURES_OK: u8 = 8;
/// Device status: the device needs a reset.
pub const STATUS_NEEDS_RESET: u8 = 64;
/// Device status: the driver gave up on the device.
pub const STATUS_FAILED: u8 = 128;

/// Feature: the device follows virtio 1.x (required of a modern device).
pub const F_VERSION_1: u64 = 1 << 32;

/// "No MSI-X vector" in the queue and config vector registers.
pub const NO_VECTOR: u16 = 0xffff;

/// Virtio's PCI vendor.
pub const VIRTIO_VENDOR: u16 = 0x1af4;

/// The virtio device type of a PCI function (2 for a block device), if it
/// is a virtio device.
pub fn device_type(func: &PciFunction) -> Option<u16> {
    if func.vendor != VIRTIO_VENDOR {
        return None;
    }
    match func.device {
        // Transitional devices: the type is the subsystem ID.
        0x1000..=0x103f => Some(func.subsystem.1),
        0x1040..=0x107f => Some(func.device - 0x1040),
        _ => None,
    }
}

// Common configuration (4.1.4.3) offsets.
const DEVICE_FEATURE_SELECT: usize = 0x00;
const DEVICE_FEATURE: usize = 0x04;
const DRIVER_FEATURE_SELECT: usize = 0x08;
const DRIVER_FEATURE: usize = 0x0c;
const MSIX_CONFIG: usize = 0x10;
const NUM_QUEUES: usize = 0x12;
const DEVICE_STATUS: usize = 0x14;
const CONFIG_GENERATION: usize = 0x15;
const QUEUE_SELECT: usize = 0x16;
const QUEUE_SIZE: usize = 0x18;
const QUEUE_MSIX_VECTOR: usize = 0x1a;
const QUEUE_ENABLE: usize = 0x1c;
const QUEUE_NOTIFY_OFF: usize = 0x1e;
const QUEUE_DESC: usize = 0x20;
const QUEUE_DRIVER: usize = 0x28;
const QUEUE_DEVICE: usize = 0x30;

/// A virtio device on the modern PCI transport.
pub struct VirtioPci {
    /// The PCI function.
    pub func: PciFunction,
    common: Regs,
    notify: Regs,
    notify_multiplier: u32,
    isr: Regs,
    device: Regs,
}

/// Write a 64-bit common-configuration field as two 32-bit halves, low
/// first (the spec lets a device require it).
fn write64(r: &Regs, off: usize, v: u64) {
    r.write32(off, v as u32);
    r.write32(off + 4, (v >> 32) as u32);
}

impl VirtioPci {
    /// Find the configuration structures of `func` (common, notify, ISR,
    /// device-specific), map them, and turn on memory decoding and bus
    /// mastering.
    ///
    /// Return: `ENODEV` if `func` is not a virtio device with the modern
    /// capabilities, `EINVAL` if a capability points outside its BAR, the
    /// port's error from mapping.
    ///
    /// Context: may sleep.
    pub fn probe(bus: &dyn DeviceBus, func: PciFunction) -> Result<Self> {
        kport::might_sleep();
        if device_type(&func).is_none() {
            return Err(Error::new(ENODEV));
        }
        let mut found: [Option<(Regs, u32)>; 5] = [None; 5];
        for cap in func.capabilities_with(CAP_VENDOR) {
            let head = bus.config_read(func.addr, cap);
            let cfg_type = (head >> 24) as u8;
            let bar = pci::read8(bus, func.addr, cap + 4);
            let offset = bus.config_read(func.addr, cap + 8);
            let length = bus.config_read(func.addr, cap + 12);
            if !(1..=4).contains(&cfg_type) || found[usize::from(cfg_type)].is_some() || bar > 5 {
                // Types 5 (PCI access), 8 (shared memory) and repeats: the
                // first of each is the one to use (4.1.4.1).
                continue;
            }
            let Some(Bar::Memory { base, size, .. }) = func.bars[usize::from(bar)] else {
                continue;
            };
            if u64::from(offset) + u64::from(length) > size || length == 0 {
                return Err(Error::new(EINVAL));
            }
            let virt = bus.map_registers(base + u64::from(offset), length as usize)?;
            let multiplier = if cfg_type == 2 { bus.config_read(func.addr, cap + 16) } else { 0 };
            // SAFETY: the port mapped these registers for the kernel's life.
            found[usize::from(cfg_type)] = Some((unsafe { Regs::new(virt, length as usize) }, multiplier));
        }
        let (Some(common), Some(notify), Some(isr)) = (found[1], found[2], found[3]) else {
            return Err(Error::new(ENODEV));
        };
        // SAFETY: an empty window is never accessed.
        let device = found[4].map_or(unsafe { Regs::new(0, 0) }, |d| d.0);
        pci::update_command(bus, func.addr, pci::CMD_MEMORY | pci::CMD_BUS_MASTER, 0);
        Ok(VirtioPci { func, common: common.0, notify: notify.0, notify_multiplier: notify.1, isr: isr.0, device })
    }

    /// Reset the device and wait until it says it is reset.
    pub fn reset(&self) {
        self.common.write8(DEVICE_STATUS, 0);
        while self.common.read8(DEVICE_STATUS) != 0 {
            core::hint::spin_loop();
        }
    }

    /// The device status.
    pub fn status(&self) -> u8 {
        self.common.read8(DEVICE_STATUS)
    }

    /// Add `bits` to the device status.
    pub fn add_status(&self, bits: u8) {
        self.common.write8(DEVICE_STATUS, self.status() | bits);
    }

    /// The 64 feature bits the device offers.
    pub fn device_features(&self) -> u64 {
        self.common.write32(DEVICE_FEATURE_SELECT, 0);
        let low = self.common.read32(DEVICE_FEATURE);
        self.common.write32(DEVICE_FEATURE_SELECT, 1);
        let high = self.common.read32(DEVICE_FEATURE);
        (u64::from(high) << 32) | u64::from(low)
    }

    /// Reset, acknowledge, and negotiate: accept the offered features among
    /// `wanted` (plus `VERSION_1`, which a modern device must offer), set
    /// FEATURES_OK and check the device kept it (3.1.1 steps 1–6).
    /// Returns the accepted features.
    ///
    /// Return: `ENODEV` if the device does not offer `VERSION_1` or refuses
    /// the feature set (it is then marked FAILED).
    pub fn negotiate(&self, wanted: u64) -> Result<u64> {
        self.reset();
        self.add_status(STATUS_ACKNOWLEDGE);
        self.add_status(STATUS_DRIVER);
        let offered = self.device_features();
        if offered & F_VERSION_1 == 0 {
            self.add_status(STATUS_FAILED);
            return Err(Error::new(ENODEV));
        }
        let accepted = offered & (wanted | F_VERSION_1);
        self.common.write32(DRIVER_FEATURE_SELECT, 0);
        self.common.write32(DRIVER_FEATURE, accepted as u32);
        self.common.write32(DRIVER_FEATURE_SELECT, 1);
        self.common.write32(DRIVER_FEATURE, (accepted >> 32) as u32);
        self.add_status(STATUS_FEATURES_OK);
        if self.status() & STATUS_FEATURES_OK == 0 {
            self.add_status(STATUS_FAILED);
            return Err(Error::new(ENODEV));
        }
        Ok(accepted)
    }

    /// Queues the device has.
    pub fn num_queues(&self) -> u16 {
        self.common.read16(NUM_QUEUES)
    }

    /// The largest size of queue `index` the device takes (0: no such queue).
    pub fn max_queue_size(&self, index: u16) -> u16 {
        self.common.write16(QUEUE_SELECT, index);
        self.common.read16(QUEUE_SIZE)
    }

    /// Hand queue `index` to the device: its size, its rings' addresses, its
    /// MSI-X vector ([`NO_VECTOR`] for none), then enable it. Returns the
    /// queue's notify register.
    ///
    /// Return: `EINVAL` if the queue does not exist or is larger than the
    /// device takes; `EIO` if the device refused the vector.
    pub fn setup_queue(&self, index: u16, q: &SplitQueue, vector: u16) -> Result<Notifier> {
        self.common.write16(QUEUE_SELECT, index);
        let max = self.common.read16(QUEUE_SIZE);
        if max == 0 || q.size() > max {
            return Err(Error::new(EINVAL));
        }
        self.common.write16(QUEUE_SIZE, q.size());
        let (desc, driver, device) = q.addresses();
        write64(&self.common, QUEUE_DESC, desc);
        write64(&self.common, QUEUE_DRIVER, driver);
        write64(&self.common, QUEUE_DEVICE, device);
        self.common.write16(QUEUE_MSIX_VECTOR, vector);
        if self.common.read16(QUEUE_MSIX_VECTOR) != vector {
            return Err(Error::new(EIO));
        }
        let off = usize::from(self.common.read16(QUEUE_NOTIFY_OFF)) * self.notify_multiplier as usize;
        let reg = self.notify.slice(off, 2);
        self.common.write16(QUEUE_ENABLE, 1);
        Ok(Notifier { reg, index })
    }

    /// Set the configuration-change MSI-X vector.
    ///
    /// Return: `EIO` if the device refused it.
    pub fn set_config_vector(&self, vector: u16) -> Result<()> {
        self.common.write16(MSIX_CONFIG, vector);
        if self.common.read16(MSIX_CONFIG) != vector {
            return Err(Error::new(EIO));
        }
        Ok(())
    }

    /// Tell the device the driver is ready (3.1.1 step 8).
    pub fn driver_ok(&self) {
        self.add_status(STATUS_DRIVER_OK);
    }

    /// Read and clear the ISR status (bit 0: a queue interrupt, bit 1: a
    /// configuration change). Only meaningful for INTx.
    pub fn read_isr(&self) -> u8 {
        self.isr.read8(0)
    }

    /// Read the device-specific configuration with `f`, again while the
    /// configuration generation changed underneath (4.1.4.3.1).
    pub fn read_config<T>(&self, mut f: impl FnMut(&Regs) -> T) -> T {
        loop {
            let before = self.common.read8(CONFIG_GENERATION);
            let v = f(&self.device);
            if self.common.read8(CONFIG_GENERATION) == before {
                return v;
            }
        }
    }
}

/// A queue's notify register.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    reg: Regs,
    index: u16,
}

impl Notifier {
    /// Tell the device that the queue has new buffers.
    pub fn notify(&self) {
        self.reg.write16(0, self.index);
    }
}
