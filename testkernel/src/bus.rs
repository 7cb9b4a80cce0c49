//! The port's device bus ([`kport::bus::DeviceBus`]): PCI configuration
//! space through the ECAM window of the ACPI MCFG table where the machine
//! has one (QEMU's `q35`; all 4096 bytes of each function), else through
//! the legacy mechanism (ports 0xCF8/0xCFC, 256 bytes; QEMU's `pc`),
//! register windows from the direct map (below 4 GiB) or page by page above
//! it, and DMA memory from the buddy allocator.

use kport::bus::{DeviceBus, DmaRegion, PciAddress};
use kport::{EINVAL, ENOMEM, Error, Result};

use crate::arch::acpi::Ecam;
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

/// The ECAM window (its virtual base) if the MCFG gave one below 4 GiB.
static ECAM: spin::Once<Option<(u64, Ecam)>> = spin::Once::new();

/// Take the MCFG's window (boot CPU, before the PCI scan). A window the
/// direct map does not cover is not used (the legacy ports still work).
pub fn init(ecam: Option<Ecam>) {
    ECAM.call_once(|| {
        let e = ecam?;
        let len = (u64::from(e.end_bus - e.start_bus) + 1) << 20;
        if e.base.checked_add(len)? > mem::DIRECT_MAP_SIZE {
            crate::kprintln!(
                "# WARNING: the MCFG's ECAM window {:#x} is above the direct map: using 0xCF8/0xCFC",
                e.base
            );
            return None;
        }
        Some((mem::phys_to_virt(e.base), e))
    });
}

/// The ECAM address of `offset` in `addr`'s configuration space, if the
/// window decodes that bus.
fn ecam_addr(addr: PciAddress, offset: u16) -> Option<u64> {
    let (virt, e) = (*ECAM.get()?)?;
    if addr.bus < e.start_bus || addr.bus > e.end_bus || offset >= 4096 {
        return None;
    }
    Some(
        virt + (u64::from(addr.bus - e.start_bus) << 20)
            + (u64::from(addr.device & 31) << 15)
            + (u64::from(addr.function & 7) << 12)
            + u64::from(offset & !3),
    )
}

/// Read through ports 0xCF8/0xCFC whatever the window (the machine test
/// compares the two mechanisms).
pub fn legacy_read(addr: PciAddress, offset: u16) -> u32 {
    let _g = BUS.config.lock();
    cpu::outl(CONFIG_ADDRESS, addr.cf8_word(offset));
    cpu::inl(CONFIG_DATA)
}

/// Is configuration space reached through ECAM?
pub fn uses_ecam() -> bool {
    matches!(ECAM.get(), Some(Some(_)))
}

impl DeviceBus for TestkernelBus {
    fn config_read(&self, addr: PciAddress, offset: u16) -> u32 {
        if let Some(va) = ecam_addr(addr, offset) {
            // SAFETY: inside the ECAM window, direct-mapped; a configuration
            // read has no side effect on memory.
            return unsafe { core::ptr::read_volatile(va as *const u32) };
        }
        if offset >= 256 {
            return u32::MAX;
        }
        let _g = self.config.lock();
        cpu::outl(CONFIG_ADDRESS, addr.cf8_word(offset));
        cpu::inl(CONFIG_DATA)
    }

    fn config_write(&self, addr: PciAddress, offset: u16, value: u32) {
        if let Some(va) = ecam_addr(addr, offset) {
            // SAFETY: inside the ECAM window, direct-mapped; configuration
            // registers, not memory Rust knows about.
            unsafe { core::ptr::write_volatile(va as *mut u32, value) };
            return;
        }
        if offset >= 256 {
            return;
        }
        let _g = self.config.lock();
        cpu::outl(CONFIG_ADDRESS, addr.cf8_word(offset));
        cpu::outl(CONFIG_DATA, value);
    }

    fn last_bus(&self) -> u8 {
        // With ECAM every bus the window decodes; QEMU's pc machine has one
        // root bus and no bridges here.
        match ECAM.get() {
            Some(Some((_, e))) => e.end_bus,
            _ => 0,
        }
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
        // A caller that may sleep: above `low`, else wake kswapd and go down
        // to `min`, else reclaim directly (then the out-of-memory report
        // and ENOMEM).
        let phys = kport::mm::alloc_slowpath(1 << order, |gfp| frames::alloc_gfp(order, gfp))?;
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
