//! A split virtqueue (virtio 1.x, section 2.7): the descriptor table, the
//! driver ("available") ring and the device ("used") ring in one DMA
//! block. Linux: `drivers/virtio/virtio_ring.c`, split layout, without
//! indirect descriptors or event indices.
//!
//! Not synchronized: the driver keeps each queue under its own lock.

use core::sync::atomic::{Ordering, fence};

use kport::bus::{DeviceBus, DmaRegion};
use kport::{EAGAIN, EINVAL, Error, Result};

use crate::mmio::Regs;

/// Descriptor flag: the chain continues at `next`.
const DESC_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
const DESC_WRITE: u16 = 2;

/// One buffer of a chain: bus address, length, and whether the device
/// writes it (else reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Bus address.
    pub phys: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes it.
    pub device_writes: bool,
}

/// A split virtqueue of `size` entries.
pub struct SplitQueue {
    size: u16,
    mem: DmaRegion,
    ring: Regs,
    avail_off: usize,
    used_off: usize,
    /// Head of the free descriptor list (linked through `next`).
    free_head: u16,
    num_free: u16,
    /// Our copy of the available ring's index.
    avail_idx: u16,
    /// The used ring's index as far as we consumed it.
    last_used: u16,
    /// Length of the chain at each head (to free it).
    chain_len: alloc::vec::Vec<u16>,
}

impl SplitQueue {
    /// Bytes of DMA memory a queue of `size` needs, and the offsets of its
    /// available and used rings (the used ring on its own page, as the
    /// legacy layout asked; modern devices accept any 4-byte alignment).
    fn layout(size: u16) -> (usize, usize, usize) {
        let n = usize::from(size);
        let avail_off = 16 * n;
        let avail_end = avail_off + 6 + 2 * n;
        let used_off = avail_end.next_multiple_of(4096);
        let total = (used_off + 6 + 8 * n).next_multiple_of(4096);
        (total, avail_off, used_off)
    }

    /// A queue of `size` entries (a power of two, at most 32768) in fresh
    /// DMA memory from `bus`.
    ///
    /// Return: `EINVAL` for a bad size, `ENOMEM`.
    ///
    /// Context: may sleep.
    pub fn new(bus: &dyn DeviceBus, size: u16) -> Result<Self> {
        if size == 0 || !size.is_power_of_two() || size > 32768 {
            return Err(Error::new(EINVAL));
        }
        let (total, avail_off, used_off) = Self::layout(size);
        let mem = bus.dma_alloc(total)?;
        // SAFETY: the region was just allocated for this queue and stays
        // allocated until `free`.
        let ring = unsafe { Regs::new(mem.virt, mem.len) };
        let mut q = SplitQueue {
            size,
            mem,
            ring,
            avail_off,
            used_off,
            free_head: 0,
            num_free: size,
            avail_idx: 0,
            last_used: 0,
            chain_len: alloc::vec![0; usize::from(size)],
        };
        for i in 0..size {
            q.set_next(i, (i + 1) % size);
        }
        Ok(q)
    }

    /// Give the memory back (the device must have been reset).
    pub fn free(self, bus: &dyn DeviceBus) {
        bus.dma_free(self.mem);
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The head the next [`SplitQueue::add`] will return.
    pub fn next_head(&self) -> u16 {
        self.free_head
    }

    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Bus addresses of the descriptor table, the available ring and the
    /// used ring (for the transport's queue registers).
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.mem.phys, self.mem.phys + self.avail_off as u64, self.mem.phys + self.used_off as u64)
    }

    fn desc_off(&self, i: u16) -> usize {
        16 * usize::from(i)
    }

    fn set_next(&mut self, i: u16, next: u16) {
        self.ring.write16(self.desc_off(i) + 14, next);
    }

    fn next(&self, i: u16) -> u16 {
        self.ring.read16(self.desc_off(i) + 14)
    }

    /// Put a chain of `bufs` on the available ring; returns its head, the
    /// token [`SplitQueue::pop_used`] gives back. The device sees it after
    /// the caller notifies it.
    ///
    /// Return: `EAGAIN` when fewer than `bufs.len()` descriptors are free,
    /// `EINVAL` for an empty chain.
    pub fn add(&mut self, bufs: &[Buffer]) -> Result<u16> {
        if bufs.is_empty() || bufs.len() > usize::from(self.size) {
            return Err(Error::new(EINVAL));
        }
        if usize::from(self.num_free) < bufs.len() {
            return Err(Error::new(EAGAIN));
        }
        let head = self.free_head;
        let mut i = head;
        for (n, b) in bufs.iter().enumerate() {
            let off = self.desc_off(i);
            self.ring.write64(off, b.phys);
            self.ring.write32(off + 8, b.len);
            let last = n + 1 == bufs.len();
            let flags = if b.device_writes { DESC_WRITE } else { 0 } | if last { 0 } else { DESC_NEXT };
            self.ring.write16(off + 12, flags);
            if last {
                self.free_head = self.next(i);
            } else {
                i = self.next(i);
            }
        }
        self.num_free -= bufs.len() as u16;
        self.chain_len[usize::from(head)] = bufs.len() as u16;
        let slot = self.avail_off + 4 + 2 * usize::from(self.avail_idx % self.size);
        self.ring.write16(slot, head);
        // The descriptors and the ring entry before the index that
        // publishes them (virtio 1.x 2.7.13: a write barrier).
        fence(Ordering::Release);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.ring.write16(self.avail_off + 2, self.avail_idx);
        // The index before the caller's notify reads the device's flags.
        fence(Ordering::SeqCst);
        Ok(head)
    }

    /// Does the device ask not to be notified (`VIRTQ_USED_F_NO_NOTIFY`)?
    pub fn notify_suppressed(&self) -> bool {
        self.ring.read16(self.used_off) & 1 != 0
    }

    /// Is a used entry waiting?
    pub fn has_used(&self) -> bool {
        self.ring.read16(self.used_off + 2) != self.last_used
    }

    /// Take the next used chain: its head and the bytes the device wrote.
    /// Its descriptors return to the free list.
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        let used_idx = self.ring.read16(self.used_off + 2);
        if used_idx == self.last_used {
            return None;
        }
        // The entry after the index that published it.
        fence(Ordering::Acquire);
        let slot = self.used_off + 4 + 8 * usize::from(self.last_used % self.size);
        let id = self.ring.read32(slot);
        let len = self.ring.read32(slot + 4);
        self.last_used = self.last_used.wrapping_add(1);
        let head = u16::try_from(id).ok().filter(|h| *h < self.size)?;
        let n = self.chain_len[usize::from(head)];
        if n == 0 {
            // A head the device made up: nothing to free.
            return None;
        }
        self.chain_len[usize::from(head)] = 0;
        let mut last = head;
        for _ in 1..n {
            last = self.next(last);
        }
        self.set_next(last, self.free_head);
        self.free_head = head;
        self.num_free += n;
        Some((head, len))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use kport::ENOMEM;

    /// A bus whose DMA memory is host memory (bus address = virtual
    /// address), for the queue and driver tests.
    pub(crate) struct HostDma;

    impl DeviceBus for HostDma {
        fn config_read(&self, _: kport::bus::PciAddress, _: u16) -> u32 {
            u32::MAX
        }
        fn config_write(&self, _: kport::bus::PciAddress, _: u16, _: u32) {}
        fn map_registers(&self, _: u64, _: usize) -> Result<usize> {
            Err(Error::new(EINVAL))
        }
        fn dma_alloc(&self, len: usize) -> Result<DmaRegion> {
            let len = len.next_multiple_of(4096);
            let layout = core::alloc::Layout::from_size_align(len, 4096).map_err(|_| Error::new(EINVAL))?;
            // SAFETY: a non-zero size.
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            if p.is_null() {
                return Err(Error::new(ENOMEM));
            }
            Ok(DmaRegion { virt: p as usize, phys: p as u64, len })
        }
        fn dma_free(&self, r: DmaRegion) {
            // SAFETY: allocated by dma_alloc with this layout.
            unsafe {
                std::alloc::dealloc(r.virt as *mut u8, core::alloc::Layout::from_size_align(r.len, 4096).unwrap())
            }
        }
    }

    /// The device side of a queue in host memory: take available chains,
    /// return them used.
    pub(crate) struct FakeDevice {
        pub(crate) ring: Regs,
        pub(crate) size: u16,
        pub(crate) avail_off: usize,
        pub(crate) used_off: usize,
        pub(crate) seen: u16,
    }

    impl FakeDevice {
        pub(crate) fn of(q: &SplitQueue) -> Self {
            FakeDevice { ring: q.ring, size: q.size, avail_off: q.avail_off, used_off: q.used_off, seen: 0 }
        }
        /// Next available chain: its head and buffers.
        pub(crate) fn take(&mut self) -> Option<(u16, Vec<Buffer>)> {
            if self.ring.read16(self.avail_off + 2) == self.seen {
                return None;
            }
            let head = self.ring.read16(self.avail_off + 4 + 2 * usize::from(self.seen % self.size));
            self.seen = self.seen.wrapping_add(1);
            let mut bufs = Vec::new();
            let mut i = head;
            loop {
                let off = 16 * usize::from(i);
                let flags = self.ring.read16(off + 12);
                bufs.push(Buffer {
                    phys: self.ring.read64(off),
                    len: self.ring.read32(off + 8),
                    device_writes: flags & DESC_WRITE != 0,
                });
                if flags & DESC_NEXT == 0 {
                    break;
                }
                i = self.ring.read16(off + 14);
            }
            Some((head, bufs))
        }
        /// Return `head` used, with `len` bytes written.
        pub(crate) fn give(&mut self, head: u16, len: u32) {
            let idx = self.ring.read16(self.used_off + 2);
            let slot = self.used_off + 4 + 8 * usize::from(idx % self.size);
            self.ring.write32(slot, u32::from(head));
            self.ring.write32(slot + 4, len);
            self.ring.write16(self.used_off + 2, idx.wrapping_add(1));
        }
    }

    fn buf(phys: u64, len: u32, w: bool) -> Buffer {
        Buffer { phys, len, device_writes: w }
    }

    #[test]
    fn chains_go_round_and_come_back() {
        let mut q = SplitQueue::new(&HostDma, 8).unwrap();
        let mut dev = FakeDevice::of(&q);
        // 3 rounds of the index past u16's wrap and the ring's.
        for round in 0..30u32 {
            let a = q.add(&[buf(0x1000, 16, false), buf(0x2000, 512, true), buf(0x3000, 1, true)]).unwrap();
            let b = q.add(&[buf(0x4000, 16, false), buf(0x5000, 1, true)]).unwrap();
            assert_eq!(q.num_free(), 3);
            assert_eq!(q.add(&[buf(0, 1, false); 4]).map_err(|e| e.errno), Err(EAGAIN));
            let (h1, c1) = dev.take().unwrap();
            let (h2, c2) = dev.take().unwrap();
            assert!(dev.take().is_none());
            assert_eq!((h1, h2), (a, b));
            assert_eq!(c1, vec![buf(0x1000, 16, false), buf(0x2000, 512, true), buf(0x3000, 1, true)]);
            assert_eq!(c2, vec![buf(0x4000, 16, false), buf(0x5000, 1, true)]);
            // Completed out of order.
            dev.give(b, 1);
            dev.give(a, 513 + round);
            assert_eq!(q.pop_used(), Some((b, 1)));
            assert_eq!(q.pop_used(), Some((a, 513 + round)));
            assert_eq!(q.pop_used(), None);
            assert_eq!(q.num_free(), 8);
        }
        q.free(&HostDma);
    }

    #[test]
    fn bad_sizes_and_chains_are_refused() {
        assert_eq!(SplitQueue::new(&HostDma, 0).err().map(|e| e.errno), Some(EINVAL));
        assert_eq!(SplitQueue::new(&HostDma, 6).err().map(|e| e.errno), Some(EINVAL));
        let mut q = SplitQueue::new(&HostDma, 4).unwrap();
        assert_eq!(q.add(&[]).map_err(|e| e.errno), Err(EINVAL));
        assert_eq!(q.add(&[buf(0, 1, false); 5]).map_err(|e| e.errno), Err(EINVAL));
        // A used entry with a head the driver never gave is ignored.
        let mut dev = FakeDevice::of(&q);
        dev.give(3, 0);
        assert_eq!(q.pop_used(), None);
        assert_eq!(q.num_free(), 4);
        q.free(&HostDma);
    }
}
