//! PCI: enumeration of the functions on the port's buses, their BARs and
//! capability lists, and MSI-X tables (Linux `drivers/pci/probe.c`,
//! `pci_read_bases`, `pci_find_capability`, `drivers/pci/msi/`).
//!
//! Configuration space is reached through the port's
//! [`kport::bus::DeviceBus`] (the testkernel: ports 0xCF8/0xCFC, or ECAM
//! where the ACPI MCFG table gives one), so this module is plain logic and
//! its host tests run against a simulated configuration space.

use alloc::vec::Vec;

use kport::bus::{DeviceBus, PciAddress};

/// Configuration-space offsets of a type-0 header.
pub mod reg {
    /// Vendor ID (16 bits) and device ID (16 bits).
    pub const ID: u16 = 0x00;
    /// Command (16 bits) and status (16 bits).
    pub const COMMAND: u16 = 0x04;
    /// Revision, programming interface, subclass, class.
    pub const CLASS: u16 = 0x08;
    /// Cache line, latency timer, header type, BIST.
    pub const HEADER: u16 = 0x0c;
    /// First base address register.
    pub const BAR0: u16 = 0x10;
    /// Subsystem vendor and subsystem ID.
    pub const SUBSYSTEM: u16 = 0x2c;
    /// Capabilities pointer.
    pub const CAP_PTR: u16 = 0x34;
    /// Interrupt line and pin.
    pub const INTERRUPT: u16 = 0x3c;
}

/// Command register: decode I/O space.
pub const CMD_IO: u16 = 1 << 0;
/// Command register: decode memory space.
pub const CMD_MEMORY: u16 = 1 << 1;
/// Command register: the function may master the bus (DMA, MSI).
pub const CMD_BUS_MASTER: u16 = 1 << 2;
/// Command register: legacy INTx disabled.
pub const CMD_INTX_DISABLE: u16 = 1 << 10;
/// Status register: a capability list exists.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// Capability ID of MSI.
pub const CAP_MSI: u8 = 0x05;
/// Capability ID of a vendor-specific capability (virtio's).
pub const CAP_VENDOR: u8 = 0x09;
/// Capability ID of MSI-X.
pub const CAP_MSIX: u8 = 0x11;

/// A base address register, decoded and sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar {
    /// Memory space.
    Memory {
        /// Bus address.
        base: u64,
        /// Size in bytes.
        size: u64,
        /// A 64-bit BAR (it also takes the next BAR slot).
        is_64: bool,
        /// Prefetchable.
        prefetchable: bool,
    },
    /// I/O space.
    Io {
        /// First port.
        port: u32,
        /// Number of ports.
        size: u32,
    },
}

impl Bar {
    /// The bus address of a memory BAR.
    pub fn memory_base(&self) -> Option<(u64, u64)> {
        match *self {
            Bar::Memory { base, size, .. } => Some((base, size)),
            Bar::Io { .. } => None,
        }
    }
}

/// One PCI function, as enumeration found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    /// Where it is.
    pub addr: PciAddress,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class, subclass, programming interface.
    pub class: [u8; 3],
    /// Revision.
    pub revision: u8,
    /// Subsystem vendor and ID.
    pub subsystem: (u16, u16),
    /// Its six BARs (a 64-bit BAR fills its slot; the next slot is `None`).
    pub bars: [Option<Bar>; 6],
    /// The capability list: (ID, offset) in list order.
    pub capabilities: Vec<(u8, u16)>,
    /// Legacy interrupt pin (1 = INTA .. 4 = INTD, 0: none).
    pub interrupt_pin: u8,
}

impl PciFunction {
    /// The first capability with ID `id`.
    pub fn find_capability(&self, id: u8) -> Option<u16> {
        self.capabilities.iter().find(|c| c.0 == id).map(|c| c.1)
    }
    /// Every capability with ID `id`, in list order.
    pub fn capabilities_with(&self, id: u8) -> impl Iterator<Item = u16> + '_ {
        self.capabilities.iter().filter(move |c| c.0 == id).map(|c| c.1)
    }
}

/// Read a byte of configuration space.
pub fn read8(bus: &dyn DeviceBus, addr: PciAddress, off: u16) -> u8 {
    (bus.config_read(addr, off & !3) >> ((off & 3) * 8)) as u8
}

/// Read a 16-bit word of configuration space (`off` even).
pub fn read16(bus: &dyn DeviceBus, addr: PciAddress, off: u16) -> u16 {
    (bus.config_read(addr, off & !3) >> ((off & 2) * 8)) as u16
}

/// Write a 16-bit word of configuration space (`off` even), keeping the
/// other half of its dword. The halves of the command/status dword need
/// care: status bits are write-one-to-clear, so they are written as zero.
pub fn write16(bus: &dyn DeviceBus, addr: PciAddress, off: u16, value: u16) {
    let shift = (off & 2) * 8;
    let mut old = bus.config_read(addr, off & !3);
    if off & !3 == reg::COMMAND {
        old &= 0x0000_ffff;
    }
    let new = (old & !(0xffff << shift)) | (u32::from(value) << shift);
    bus.config_write(addr, off & !3, new);
}

/// Set and clear bits of the command register.
pub fn update_command(bus: &dyn DeviceBus, addr: PciAddress, set: u16, clear: u16) {
    let cmd = read16(bus, addr, reg::COMMAND);
    write16(bus, addr, reg::COMMAND, (cmd | set) & !clear);
}

/// Decode and size BAR `index` of a type-0 function (Linux
/// `__pci_read_base`): write all ones with decoding off, read back the
/// size mask, restore. Returns the BAR and how many slots it took (2 for a
/// 64-bit BAR).
fn read_bar(bus: &dyn DeviceBus, addr: PciAddress, index: usize) -> (Option<Bar>, usize) {
    let off = reg::BAR0 + 4 * index as u16;
    let low = bus.config_read(addr, off);
    let is_io = low & 1 == 1;
    let is_64 = !is_io && (low >> 1) & 3 == 2 && index < 5;
    bus.config_write(addr, off, u32::MAX);
    let low_mask = bus.config_read(addr, off);
    bus.config_write(addr, off, low);
    let (high, high_mask) = if is_64 {
        let high = bus.config_read(addr, off + 4);
        bus.config_write(addr, off + 4, u32::MAX);
        let mask = bus.config_read(addr, off + 4);
        bus.config_write(addr, off + 4, high);
        (high, mask)
    } else {
        (0, 0)
    };
    let slots = if is_64 { 2 } else { 1 };
    if is_io {
        let mask = low_mask & !3;
        if mask == 0 {
            return (None, 1);
        }
        // I/O BARs decode 16 bits on x86; the upper bits may read as zero.
        let size = (!(mask | 0xffff_0000)).wrapping_add(1) & 0xffff;
        return (Some(Bar::Io { port: low & !3, size }), 1);
    }
    let mask = (u64::from(high_mask) << 32) | u64::from(low_mask & !0xf);
    let mask = if is_64 { mask } else { mask | 0xffff_ffff_0000_0000 };
    if mask & 0xffff_ffff == 0 && (!is_64 || high_mask == 0) {
        return (None, slots);
    }
    let size = (!mask).wrapping_add(1);
    let base = (u64::from(high) << 32) | u64::from(low & !0xf);
    (Some(Bar::Memory { base, size, is_64, prefetchable: low & 8 != 0 }), slots)
}

/// Walk the capability list (at most 48 entries, as Linux's
/// `PCI_FIND_CAP_TTL`, so a looping list ends).
fn read_capabilities(bus: &dyn DeviceBus, addr: PciAddress) -> Vec<(u8, u16)> {
    let mut caps = Vec::new();
    if read16(bus, addr, reg::COMMAND + 2) & STATUS_CAP_LIST == 0 {
        return caps;
    }
    let mut pos = u16::from(read8(bus, addr, reg::CAP_PTR)) & !3;
    let mut ttl = 48;
    while pos >= 0x40 && ttl > 0 {
        let word = read16(bus, addr, pos);
        let id = word as u8;
        if id == 0xff {
            break;
        }
        caps.push((id, pos));
        pos = (word >> 8) & !3;
        ttl -= 1;
    }
    caps
}

/// Read one function: `None` if nothing answers there.
pub fn probe(bus: &dyn DeviceBus, addr: PciAddress) -> Option<PciFunction> {
    let id = bus.config_read(addr, reg::ID);
    let vendor = id as u16;
    if vendor == 0xffff || vendor == 0 {
        return None;
    }
    let class = bus.config_read(addr, reg::CLASS);
    let header = read8(bus, addr, reg::HEADER + 2) & 0x7f;
    let mut bars = [None; 6];
    if header == 0 {
        // Decoding off while the BARs are sized, as Linux does, so a
        // half-written BAR never claims an address.
        let cmd = read16(bus, addr, reg::COMMAND);
        write16(bus, addr, reg::COMMAND, cmd & !(CMD_IO | CMD_MEMORY));
        let mut i = 0;
        while i < 6 {
            let (bar, slots) = read_bar(bus, addr, i);
            bars[i] = bar;
            i += slots;
        }
        write16(bus, addr, reg::COMMAND, cmd);
    }
    let sub = if header == 0 { bus.config_read(addr, reg::SUBSYSTEM) } else { 0 };
    Some(PciFunction {
        addr,
        vendor,
        device: (id >> 16) as u16,
        class: [(class >> 24) as u8, (class >> 16) as u8, (class >> 8) as u8],
        revision: class as u8,
        subsystem: (sub as u16, (sub >> 16) as u16),
        bars,
        capabilities: read_capabilities(bus, addr),
        interrupt_pin: if header == 0 { read8(bus, addr, reg::INTERRUPT + 1) } else { 0 },
    })
}

/// The functions found by [`boot_scan`], if the port ran it.
static BOOT_SCAN: spin::Once<Vec<PciFunction>> = spin::Once::new();

/// Every function on the port's buses: the list [`boot_scan`] made at
/// boot if the port ran it, else a fresh [`scan`].
pub fn enumerate(bus: &dyn DeviceBus) -> Vec<PciFunction> {
    match BOOT_SCAN.get() {
        Some(list) => list.clone(),
        None => scan(bus),
    }
}

/// Scan the buses once at boot, before the other CPUs start, and keep the
/// list for [`enumerate`]; turn on memory decoding and bus mastering of
/// every function that is not a bridge and has a memory BAR, as firmware
/// leaves a device ready for its driver.
///
/// Why at boot: sizing a BAR turns the function's decoding off and on,
/// and bus mastering is a mapping too; each changes the machine's memory
/// map. QEMU 7.2's multi-threaded TCG can crash (a NULL memory region in
/// `memory_region_dispatch_write`) when a memory map change races another
/// vCPU's MMIO access (here: a LAPIC timer write), so the testkernel makes
/// every such change while it runs on one CPU (`docs/drivers.md`). Later
/// writes by the drivers set bits that are already set, which changes no
/// mapping.
pub fn boot_scan(bus: &dyn DeviceBus) -> usize {
    let list = scan(bus);
    for f in &list {
        let has_memory = f.bars.iter().flatten().any(|b| matches!(b, Bar::Memory { .. }));
        if f.class[0] != 0x06 && has_memory {
            update_command(bus, f.addr, CMD_MEMORY | CMD_BUS_MASTER, 0);
        }
    }
    let n = list.len();
    BOOT_SCAN.call_once(|| list);
    n
}

/// Every function on buses `0..=bus.last_bus()`, in address order
/// (functions 1..7 only where function 0 says it is multi-function),
/// with its BARs sized.
pub fn scan(bus: &dyn DeviceBus) -> Vec<PciFunction> {
    let mut found = Vec::new();
    for b in 0..=bus.last_bus() {
        for d in 0..32u8 {
            let f0 = PciAddress { bus: b, device: d, function: 0 };
            let Some(first) = probe(bus, f0) else {
                continue;
            };
            let multi = read8(bus, f0, reg::HEADER + 2) & 0x80 != 0;
            found.push(first);
            if multi {
                for f in 1..8u8 {
                    if let Some(func) = probe(bus, PciAddress { bus: b, device: d, function: f }) {
                        found.push(func);
                    }
                }
            }
        }
    }
    found
}

/// An MSI-X capability: where its table and pending-bit array live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixCapability {
    /// Offset of the capability in configuration space.
    pub cap: u16,
    /// Number of table entries.
    pub table_size: u16,
    /// BAR index and offset of the table.
    pub table: (u8, u32),
    /// BAR index and offset of the pending-bit array.
    pub pba: (u8, u32),
}

impl MsixCapability {
    /// Read the MSI-X capability of `func`, if it has one.
    pub fn read(bus: &dyn DeviceBus, func: &PciFunction) -> Option<Self> {
        let cap = func.find_capability(CAP_MSIX)?;
        let control = read16(bus, func.addr, cap + 2);
        let table = bus.config_read(func.addr, cap + 4);
        let pba = bus.config_read(func.addr, cap + 8);
        Some(MsixCapability {
            cap,
            table_size: (control & 0x7ff) + 1,
            table: ((table & 7) as u8, table & !7),
            pba: ((pba & 7) as u8, pba & !7),
        })
    }

    /// Turn MSI-X on or off for the function (and mask all its vectors
    /// with the function mask while `masked`).
    pub fn set_enabled(&self, bus: &dyn DeviceBus, addr: PciAddress, enabled: bool, masked: bool) {
        let mut control = read16(bus, addr, self.cap + 2);
        control = if enabled { control | 0x8000 } else { control & !0x8000 };
        control = if masked { control | 0x4000 } else { control & !0x4000 };
        write16(bus, addr, self.cap + 2, control);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use kport::bus::DmaRegion;
    use kport::{EINVAL, Error, Result};
    use spin::Mutex;

    /// A simulated configuration space: functions with fixed registers and
    /// BARs that answer sizing.
    struct FakeBus {
        funcs: Mutex<Vec<FakeFunction>>,
    }

    /// A function: its address, its 64 configuration dwords, its BAR sizes.
    type FakeFunction = (PciAddress, [u32; 64], [u64; 6]);

    impl DeviceBus for FakeBus {
        fn config_read(&self, addr: PciAddress, offset: u16) -> u32 {
            let f = self.funcs.lock();
            f.iter().find(|x| x.0 == addr).map_or(u32::MAX, |x| x.1[offset as usize / 4])
        }
        fn config_write(&self, addr: PciAddress, offset: u16, value: u32) {
            let mut f = self.funcs.lock();
            let Some(x) = f.iter_mut().find(|x| x.0 == addr) else {
                return;
            };
            let i = offset as usize / 4;
            if (4..10).contains(&i) {
                // A BAR keeps its low flag bits and answers with its size mask.
                // Sizes: 0 an absent BAR, u64::MAX the upper half of a 64-bit
                // BAR below 4 GiB (every bit writable).
                let size = x.2[i - 4];
                let flags = x.1[i] & 0xf;
                x.1[i] = match size {
                    0 => 0,
                    u64::MAX => value,
                    _ => (value & !(size as u32 - 1) & !0xf) | flags,
                };
                return;
            }
            if i == 1 {
                // Every status bit acts as write-one-to-clear here, so a
                // test sees a stray 1 written to the status half.
                x.1[1] = (x.1[1] & 0xffff_0000 & !(value & 0xffff_0000)) | (value & 0xffff);
                return;
            }
            x.1[i] = value;
        }
        fn map_registers(&self, _phys: u64, _len: usize) -> Result<usize> {
            Err(Error::new(EINVAL))
        }
        fn dma_alloc(&self, _len: usize) -> Result<DmaRegion> {
            Err(Error::new(EINVAL))
        }
        fn dma_free(&self, _region: DmaRegion) {}
    }

    fn virtio_like(addr: PciAddress, multi: bool) -> FakeFunction {
        let mut c = [0u32; 64];
        c[0] = 0x1042_1af4;
        c[1] = (u32::from(STATUS_CAP_LIST) << 16) | u32::from(CMD_MEMORY);
        c[2] = 0x0100_0001;
        c[3] = if multi { 0x0080_0000 } else { 0 };
        c[4] = 0xc001; // I/O BAR 0 at 0xc000, 64 ports
        c[5] = 0xfeb0_0000; // 32-bit memory BAR 1, 4 KiB
        c[8] = 0xfe00_000c; // 64-bit prefetchable BAR 4, 16 KiB
        c[9] = 0; // its upper half
        c[11] = 0x1100_1af4;
        c[13] = 0x40; // capabilities at 0x40
        c[15] = 0x0000_0100; // INTA
        // 0x40: MSI-X, 3 entries, table in BAR 1 at 0, PBA in BAR 1 at 0x800; next 0x50.
        c[16] = 0x0002_5011;
        c[17] = 1;
        c[18] = 0x801;
        // 0x50: vendor-specific, last.
        c[20] = 0x0000_0009;
        (addr, c, [64, 4096, 0, 0, 16384, u64::MAX])
    }

    #[test]
    fn enumeration_finds_functions_bars_and_capabilities() {
        let a = PciAddress { bus: 0, device: 3, function: 0 };
        let b = PciAddress { bus: 0, device: 3, function: 2 };
        let hidden = PciAddress { bus: 0, device: 4, function: 1 };
        let bus = FakeBus {
            funcs: Mutex::new(vec![virtio_like(a, true), virtio_like(b, false), virtio_like(hidden, false)]),
        };
        let found = enumerate(&bus);
        // Function 1 of device 4 is not seen: function 0 there does not exist.
        assert_eq!(found.iter().map(|f| f.addr).collect::<Vec<_>>(), vec![a, b]);
        let f = &found[0];
        assert_eq!((f.vendor, f.device, f.class), (0x1af4, 0x1042, [1, 0, 0]));
        assert_eq!(f.subsystem, (0x1af4, 0x1100));
        assert_eq!(f.bars[0], Some(Bar::Io { port: 0xc000, size: 64 }));
        assert_eq!(f.bars[1], Some(Bar::Memory { base: 0xfeb0_0000, size: 4096, is_64: false, prefetchable: false }));
        assert_eq!(f.bars[4], Some(Bar::Memory { base: 0xfe00_0000, size: 16384, is_64: true, prefetchable: true }));
        assert_eq!(f.bars[5], None);
        assert_eq!(f.capabilities, vec![(CAP_MSIX, 0x40), (CAP_VENDOR, 0x50)]);
        assert_eq!(f.interrupt_pin, 1);
        // Sizing restored the BARs and the command register.
        assert_eq!(bus.config_read(a, 0x14), 0xfeb0_0000);
        assert_eq!(read16(&bus, a, reg::COMMAND), CMD_MEMORY);
        let msix = MsixCapability::read(&bus, f).unwrap();
        assert_eq!(msix, MsixCapability { cap: 0x40, table_size: 3, table: (1, 0), pba: (1, 0x800) });
    }

    #[test]
    fn a_looping_capability_list_ends() {
        let a = PciAddress { bus: 0, device: 0, function: 0 };
        let mut f = virtio_like(a, false);
        f.1[20] = 0x0000_4009; // 0x50 points back to 0x40
        let bus = FakeBus { funcs: Mutex::new(vec![f]) };
        let found = probe(&bus, a).unwrap();
        assert_eq!(found.capabilities.len(), 48);
    }

    #[test]
    fn writing_the_command_word_clears_no_status_bit() {
        let a = PciAddress { bus: 0, device: 0, function: 0 };
        let bus = FakeBus { funcs: Mutex::new(vec![virtio_like(a, false)]) };
        update_command(&bus, a, CMD_BUS_MASTER, 0);
        assert_eq!(read16(&bus, a, reg::COMMAND), CMD_MEMORY | CMD_BUS_MASTER);
        assert_eq!(read16(&bus, a, reg::COMMAND + 2), STATUS_CAP_LIST);
    }
}
