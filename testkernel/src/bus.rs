//! The port's device bus ([`kport::bus::DeviceBus`]): PCI configuration
//! space through the legacy mechanism (ports 0xCF8/0xCFC), register
//! windows from the direct map (below 4 GiB) or page by page above it, and
//! DMA memory from the buddy allocator.

use kport::bus::{DeviceBus, DmaRegion, PciAddress};
use kport::{EINVAL, ENOMEM, Error, Result};

use crate::arch::cpu;
use crate::mem::{self, PAGE_SIZE, frames, paging};
use crate::sync::IrqSpinLock;

/// Configuration address port.
const CONFIG_ADDRESS: u16 = 0xcf8;
/// Configuration data port.
const CONFIG_DATA: u16 = 0xcfc;

/// Where register windows above the direct map are mapped, page by page.
const MMIO_WINDOW: u64 = 0xffff_c000_0000_0000;

/// The testkernel's device bus.
pub struct TestkernelBus {
    /// Serializes the address/data port pair; also the next free page of
    /// the register window.
    config: IrqSpinLock<u64>,
}

/// The one bus.
pub static BUS: TestkernelBus = TestkernelBus { config: IrqSpinLock::named("pci config", 0) };

fn address(addr: PciAddress, offset: u16) -> u32 {
    0x8000_0000
        | (u32::from(addr.bus) << 16)
        | (u32::from(addr.device & 31) << 11)
        | (u32::from(addr.function & 7) << 8)
        | u32::from(offset & 0xfc)
}

impl DeviceBus for TestkernelBus {
    fn config_read(&self, addr: PciAddress, offset: u16) -> u32 {
        if offset >= 256 {
            return u32::MAX;
        }
        let _g = self.config.lock();
        cpu::outl(CONFIG_ADDRESS, address(addr, offset));
        cpu::inl(CONFIG_DATA)
    }

    fn config_write(&self, addr: PciAddress, offset: u16, value: u32) {
        if offset >= 256 {
            return;
        }
        let _g = self.config.lock();
        cpu::outl(CONFIG_ADDRESS, address(addr, offset));
        cpu::outl(CONFIG_DATA, value);
    }

    fn last_bus(&self) -> u8 {
        // QEMU's pc machine has one root bus and no bridges here.
        0
    }

    fn map_registers(&self, phys: u64, len: usize) -> Result<usize> {
        kport::might_sleep();
        let end = phys.checked_add(len as u64).ok_or(Error::new(EINVAL))?;
        if len == 0 {
            return Err(Error::new(EINVAL));
        }
        if end <= mem::DIRECT_MAP_SIZE {
            return Ok(mem::phys_to_virt(phys) as usize);
        }
        let first = phys & !(PAGE_SIZE - 1);
        let pages = (end - first).div_ceil(PAGE_SIZE);
        let base = {
            let mut next = self.config.lock();
            let base = MMIO_WINDOW + *next * PAGE_SIZE;
            *next += pages;
            base
        };
        for i in 0..pages {
            // Uncached (PCD | PWT): device registers.
            paging::map(base + i * PAGE_SIZE, first + i * PAGE_SIZE, paging::W | paging::NX | (1 << 4) | (1 << 3))
                .map_err(|_| Error::new(ENOMEM))?;
        }
        Ok((base + (phys - first)) as usize)
    }

    fn dma_alloc(&self, len: usize) -> Result<DmaRegion> {
        kport::might_sleep();
        if len == 0 {
            return Err(Error::new(EINVAL));
        }
        let pages = (len as u64).div_ceil(PAGE_SIZE);
        let order = pages.next_power_of_two().trailing_zeros() as usize;
        let phys = frames::alloc(order).ok_or(Error::new(ENOMEM))?;
        let bytes = (PAGE_SIZE << order) as usize;
        let virt = mem::phys_to_virt(phys) as usize;
        // SAFETY: the block was just allocated to us and is direct-mapped.
        unsafe { core::ptr::write_bytes(virt as *mut u8, 0, bytes) };
        Ok(DmaRegion { virt, phys, len: bytes })
    }

    fn dma_free(&self, region: DmaRegion) {
        let order = (region.len as u64 / PAGE_SIZE).trailing_zeros() as usize;
        frames::free(region.phys, order);
    }
}
