//! Devices: what a driver needs from the host kernel to reach a PCI
//! device — configuration space, its registers, and memory the device can
//! reach by DMA ([`DeviceBus`], the port's [`crate::Port::device_bus`]).
//!
//! Linux splits this among `struct pci_ops` (configuration access),
//! `ioremap`/`pci_iomap` (register windows) and the DMA API
//! (`dma_alloc_coherent`); a port provides the three here, and the drivers
//! in `drivers/` build PCI enumeration, virtio and the block layer on them.

use crate::Result;

/// A PCI function's address: bus, device (0..32), function (0..8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// Bus number.
    pub bus: u8,
    /// Device number, below 32.
    pub device: u8,
    /// Function number, below 8.
    pub function: u8,
}

impl PciAddress {
    /// The word configuration mechanism #1 writes to port 0xCF8 to reach
    /// the aligned dword at `offset` (below 256) of this function.
    pub fn cf8_word(&self, offset: u16) -> u32 {
        0x8000_0000
            | (u32::from(self.bus) << 16)
            | (u32::from(self.device & 31) << 11)
            | (u32::from(self.function & 7) << 8)
            | u32::from(offset & 0xfc)
    }
}

impl core::fmt::Display for PciAddress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Memory a device reaches by DMA: physically contiguous, zeroed when
/// handed out, mapped at `virt` for the CPU (coherent: no cache
/// maintenance is needed on x86).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaRegion {
    /// Where the CPU reads and writes it.
    pub virt: usize,
    /// Where the device reads and writes it (a bus address).
    pub phys: u64,
    /// Its length in bytes (a whole number of pages).
    pub len: usize,
}

/// The host kernel's device access (Linux: `pci_ops`, `ioremap`, the DMA
/// API).
pub trait DeviceBus: Send + Sync {
    /// Read the aligned 32-bit word at `offset` (a multiple of 4, below
    /// 256, or 4096 where the port has extended configuration space) of
    /// `addr`'s configuration space. A function that does not exist reads
    /// as all ones, as on PCI.
    ///
    /// Context: any.
    fn config_read(&self, addr: PciAddress, offset: u16) -> u32;
    /// Write the aligned 32-bit word at `offset` of `addr`'s configuration
    /// space.
    ///
    /// Context: any.
    fn config_write(&self, addr: PciAddress, offset: u16, value: u32);
    /// Highest bus number to scan (inclusive).
    fn last_bus(&self) -> u8 {
        0
    }
    /// Make the `len` bytes of device registers at bus address `phys`
    /// reachable by the CPU; returns their virtual address (uncached where
    /// the machine distinguishes). Mappings last for the kernel's life.
    ///
    /// Return: `EINVAL` for an address the port cannot map, `ENOMEM`.
    ///
    /// Context: may sleep.
    fn map_registers(&self, phys: u64, len: usize) -> Result<usize>;
    /// Allocate `len` bytes (rounded up to pages) of zeroed DMA memory.
    ///
    /// Return: `ENOMEM` when no contiguous block is free.
    ///
    /// Context: may sleep.
    fn dma_alloc(&self, len: usize) -> Result<DmaRegion>;
    /// Free memory from [`DeviceBus::dma_alloc`]; the device must no
    /// longer use it.
    ///
    /// Context: may sleep.
    fn dma_free(&self, region: DmaRegion);
    /// The interrupt line (on the port's [`crate::irq::IrqChip`]) that a
    /// function's legacy interrupt pin `pin` (1 = INTA .. 4 = INTD) is
    /// routed to, if the port knows. The default reads the interrupt line
    /// register the firmware filled in (255: none).
    fn intx_line(&self, addr: PciAddress, pin: u8) -> Option<u32> {
        if pin == 0 || pin > 4 {
            return None;
        }
        match self.config_read(addr, 0x3c) & 0xff {
            0xff => None,
            line => Some(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PciAddress;
    use alloc::string::ToString;

    #[test]
    fn the_cf8_word_places_bus_device_function_and_dword() {
        let a = PciAddress { bus: 0x12, device: 0x1f, function: 7 };
        assert_eq!(a.cf8_word(0x3e), 0x8012_ff3c);
        assert_eq!(PciAddress { bus: 0, device: 3, function: 0 }.cf8_word(4), 0x8000_1804);
        assert_eq!(a.to_string(), "12:1f.7");
    }
}
