//! The port's device bus inside Redox (`kport::bus::DeviceBus`), for the in-kernel virtio-blk
//! driver of the `drivers` crate. Off unless Redox's env has the word `kblk=virtio`: a normal
//! boot leaves every PCI device to `pcid` and the user-space drivers (virtio-blkd), and the
//! kernel touches no configuration space.
//!
//! * **Configuration space** through mechanism #1 (ports 0xCF8/0xCFC), under a lock of the
//!   glue's. Redox's kernel has no PCI code; `pcid` in user space uses the same ports with a lock
//!   of its own process, so the two must not run together: with `kblk=virtio` the disk is the
//!   kernel's (`docs/redox.md`).
//! * **Registers**: `map_registers` maps BAR pages into the kernel's linear map (physical offset),
//!   uncached (Redox's `device_memory` page attribute, UC-), each page once.
//! * **DMA memory**: `allocate_p2frame` blocks (zeroed, physically contiguous, up to 4 MiB), seen
//!   through the linear map; freed with `deallocate_p2frame`.
//! * **Interrupts**: the INTx line from the configuration header (a legacy PIC line, 10 or 11
//!   under QEMU), or MSI-X through the glue's `IrqChip::msi_alloc` (`irq.rs`).

use kport::{
    bus::{DeviceBus, DmaRegion, PciAddress},
    Error, Result, EINVAL, ENOMEM,
};
use spin::{Mutex, Once};

use crate::{
    memory::{
        allocate_p2frame, deallocate_p2frame, Frame, KernelMapper, PageFlags, PhysicalAddress,
        RmmA, RmmArch, PAGE_SIZE,
    },
    syscall::io::{Io, Pio},
};

/// The glue's device bus.
pub struct RedoxBus {
    /// Serializes the address/data port pair.
    config: Mutex<()>,
}

/// The one bus.
pub static BUS: RedoxBus = RedoxBus {
    config: Mutex::new(()),
};

static ENABLED: Once<bool> = Once::new();

/// Is the in-kernel driver asked for (`kblk=virtio` in Redox's env)?
pub fn enabled() -> bool {
    *ENABLED.call_once(|| super::irq::env_word("kblk=virtio"))
}

/// Pages of `len` bytes from `phys` up: the block's order for `allocate_p2frame`.
fn order_of(len: usize) -> u32 {
    len.div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros()
}

impl DeviceBus for RedoxBus {
    fn config_read(&self, addr: PciAddress, offset: u16) -> u32 {
        if offset >= 256 {
            return u32::MAX;
        }
        let _g = self.config.lock();
        Pio::<u32>::new(0xcf8).write(addr.cf8_word(offset));
        Pio::<u32>::new(0xcfc).read()
    }

    fn config_write(&self, addr: PciAddress, offset: u16, value: u32) {
        if offset >= 256 {
            return;
        }
        let _g = self.config.lock();
        Pio::<u32>::new(0xcf8).write(addr.cf8_word(offset));
        Pio::<u32>::new(0xcfc).write(value);
    }

    fn map_registers(&self, phys: u64, len: usize) -> Result<usize> {
        if len == 0 || phys.checked_add(len as u64).is_none() {
            return Err(Error::new(EINVAL));
        }
        let first = phys as usize & !(PAGE_SIZE - 1);
        let end = (phys as usize + len).next_multiple_of(PAGE_SIZE);
        let mut mapper = KernelMapper::lock_rw();
        for page in (first..end).step_by(PAGE_SIZE) {
            let pa = PhysicalAddress::new(page);
            // SAFETY: the physical-offset view of a device page: only mapped here (RAM pages are
            // never BAR pages), and already-mapped pages are left as they are.
            unsafe {
                if mapper.translate(RmmA::phys_to_virt(pa)).is_some() {
                    continue;
                }
                let (_, flush) = mapper
                    .map_linearly(pa, PageFlags::new().write(true).device_memory(true))
                    .ok_or(Error::new(ENOMEM))?;
                // A page no CPU had mapped: no other TLB holds it.
                flush.flush();
            }
        }
        drop(mapper);
        Ok(RmmA::phys_to_virt(PhysicalAddress::new(phys as usize)).data())
    }

    fn dma_alloc(&self, len: usize) -> Result<DmaRegion> {
        if len == 0 {
            return Err(Error::new(EINVAL));
        }
        let order = order_of(len);
        // A sleeping allocation: above `low`, else kswapd and down to `min`, else direct reclaim
        // of the page cache, else the out-of-memory report and ENOMEM (`kport::mm`).
        let frame = kport::mm::alloc_slowpath(1 << order, |gfp| {
            if super::mm::allowed(1 << order, gfp) {
                allocate_p2frame(order)
            } else {
                None
            }
        })?;
        let phys = frame.base();
        Ok(DmaRegion {
            // The allocator hands out zeroed frames, seen at the physical offset.
            virt: RmmA::phys_to_virt(phys).data(),
            phys: phys.data() as u64,
            len: PAGE_SIZE << order,
        })
    }

    fn dma_free(&self, region: DmaRegion) {
        let order = order_of(region.len);
        // SAFETY: a block from `dma_alloc` of this order, which the device no longer uses.
        unsafe {
            deallocate_p2frame(
                Frame::containing(PhysicalAddress::new(region.phys as usize)),
                order,
            )
        }
    }
}
