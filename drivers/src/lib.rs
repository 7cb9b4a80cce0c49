//! Drivers: the top layer of the subsystem below the tests (see
//! `docs/architecture.md`): the block path the writeback flusher and
//! kswapd write through.
//!
//! | module | Linux |
//! |---|---|
//! | [`pci`] | `drivers/pci/probe.c`: enumeration, BAR sizing, capability lists, MSI-X capability |
//! | [`virtio`] | `drivers/virtio/virtio_pci_modern.c`, `virtio_ring.c` (split rings) |
//! | [`blk`] | `drivers/block/virtio_blk.c` |
//! | [`block`] | `block/blk-mq.c`: requests, `blk_mq_complete_request`'s rule, `diskstats` |
//! | [`pagecache`] | `mm/filemap.c`, `lib/errseq.c`: cached pages, dirtying, `fsync`/`sync`, LRU second chance |
//!
//! The crate is `no_std` + `alloc` and reaches the machine through the
//! port's [`kport::bus::DeviceBus`] (configuration space, register
//! windows, DMA memory) and [`kport::irq::IrqChip`] (through
//! `softirq::request_irq`). Unsafe code is confined to [`mmio`] (volatile
//! register and ring access) and [`block::BlockBuf`] (DMA buffers as
//! slices).
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod blk;
pub mod block;
pub mod mmio;
pub mod pagecache;
pub mod pci;
pub mod virtio;
pub mod vmscan;
pub mod writeback;
