//! The physical frame allocator: a binary buddy allocator over orders
//! `0..=MAX_ORDER` (4 KiB .. 4 MiB blocks), Linux's `alloc_pages` /
//! `__free_pages`.
//!
//! Free blocks are kept on one doubly linked list per order; the list nodes
//! live inside the free frames themselves (through the direct map). A byte per
//! frame records whether the frame heads a free block and of which order, so a
//! freed block finds and merges with its buddy in O(1) per order.
//!
//! Counters are kept at all times: `total` frames of usable RAM in the boot
//! memory map = `free` + `used` (handed out) + `reserved` (kernel image, the
//! allocator's own map, memory below 1 MiB and boot data). kswapd's watermarks
//! read them.

use core::sync::atomic::{AtomicU64, Ordering};

use kport::mm::{self, Gfp};

use super::{PAGE_SIZE, phys_to_virt};
use crate::sync::IrqSpinLock;

/// Largest block order (2^10 frames = 4 MiB), as Linux's `MAX_PAGE_ORDER`.
pub const MAX_ORDER: usize = 10;
const NOT_FREE: u8 = 0xFF;
const NIL: u64 = u64::MAX;

/// A snapshot of the frame counters, in frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCounters {
    /// Usable RAM frames in the boot memory map.
    pub total: u64,
    /// Frames on the free lists.
    pub free: u64,
    /// Frames handed out by [`alloc`].
    pub used: u64,
    /// Usable frames never given to the allocator.
    pub reserved: u64,
}

struct Buddy<'a> {
    base_pfn: u64,
    nr_frames: u64,
    /// One byte per frame: the order of the free block it heads, or NOT_FREE.
    state: &'a mut [u8],
    heads: [u64; MAX_ORDER + 1],
    free: u64,
    used: u64,
}

#[repr(C)]
struct Node {
    next: u64,
    prev: u64,
}

impl Buddy<'_> {
    fn node(&self, pfn: u64) -> &'static mut Node {
        // SAFETY: pfn heads a free block inside the managed range; free frames
        // belong to the allocator, which keeps its list node in the first bytes.
        unsafe { &mut *(phys_to_virt(pfn * PAGE_SIZE) as *mut Node) }
    }

    fn idx(&self, pfn: u64) -> usize {
        (pfn - self.base_pfn) as usize
    }

    fn push(&mut self, pfn: u64, order: usize) {
        let head = self.heads[order];
        let n = self.node(pfn);
        n.next = head;
        n.prev = NIL;
        if head != NIL {
            self.node(head).prev = pfn;
        }
        self.heads[order] = pfn;
        let i = self.idx(pfn);
        self.state[i] = order as u8;
    }

    fn remove(&mut self, pfn: u64, order: usize) {
        let (next, prev) = {
            let n = self.node(pfn);
            (n.next, n.prev)
        };
        if prev == NIL {
            self.heads[order] = next;
        } else {
            self.node(prev).next = next;
        }
        if next != NIL {
            self.node(next).prev = prev;
        }
        let i = self.idx(pfn);
        self.state[i] = NOT_FREE;
    }

    fn alloc(&mut self, order: usize) -> Option<u64> {
        let k = (order..=MAX_ORDER).find(|&k| self.heads[k] != NIL)?;
        let pfn = self.heads[k];
        self.remove(pfn, k);
        for j in (order..k).rev() {
            self.push(pfn + (1 << j), j);
        }
        self.free -= 1 << order;
        self.used += 1 << order;
        Some(pfn)
    }

    fn release(&mut self, mut pfn: u64, mut order: usize) {
        let n = 1u64 << order;
        while order < MAX_ORDER {
            let buddy = pfn ^ (1 << order);
            if buddy < self.base_pfn || buddy + (1 << order) > self.base_pfn + self.nr_frames {
                break;
            }
            if self.state[self.idx(buddy)] != order as u8 {
                break;
            }
            self.remove(buddy, order);
            pfn = pfn.min(buddy);
            order += 1;
        }
        self.push(pfn, order);
        self.free += n;
    }

    /// Add `[start, end)` (frame numbers) as free memory, in the largest
    /// aligned blocks that fit.
    fn add_range(&mut self, mut start: u64, end: u64) {
        while start < end {
            let mut order = MAX_ORDER;
            while order > 0 && (start & ((1 << order) - 1) != 0 || start + (1 << order) > end) {
                order -= 1;
            }
            self.release(start, order);
            start += 1 << order;
        }
    }
}

static BUDDY: IrqSpinLock<Option<Buddy<'static>>> = IrqSpinLock::named("frames", None);
static TOTAL: AtomicU64 = AtomicU64::new(0);
static RESERVED: AtomicU64 = AtomicU64::new(0);

/// A usable RAM range `[start, end)` in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Build the allocator from the usable RAM ranges, leaving out `holes`
/// (kernel image, boot data). Memory below 1 MiB and above the direct map is
/// never used.
pub fn init(ram: &[Range], holes: &[Range]) {
    let total: u64 = ram.iter().map(|r| (r.end / PAGE_SIZE).saturating_sub(r.start.div_ceil(PAGE_SIZE))).sum();
    let lo_pfn = (1 << 20) / PAGE_SIZE;
    let hi_pfn = ram.iter().map(|r| r.end / PAGE_SIZE).max().unwrap_or(0).min(super::DIRECT_MAP_SIZE / PAGE_SIZE);
    let nr_frames = hi_pfn.saturating_sub(lo_pfn);

    // Place the state map in the first usable spot above every hole.
    let map_bytes = nr_frames.next_multiple_of(PAGE_SIZE);
    let mut map_at = None;
    'outer: for r in ram {
        let mut s = r.start.max(1 << 20).next_multiple_of(PAGE_SIZE);
        loop {
            if s + map_bytes > r.end {
                continue 'outer;
            }
            match holes.iter().find(|h| s < h.end && h.start < s + map_bytes) {
                Some(h) => s = h.end.next_multiple_of(PAGE_SIZE),
                None => {
                    map_at = Some(s);
                    break 'outer;
                }
            }
        }
    }
    let map_at = map_at.expect("no room for the frame map");
    // SAFETY: the map's frames are usable RAM outside every hole, reserved
    // below, and direct-mapped; nothing else refers to them.
    let state = unsafe { core::slice::from_raw_parts_mut(phys_to_virt(map_at) as *mut u8, nr_frames as usize) };
    state.fill(NOT_FREE);
    let mut b = Buddy { base_pfn: lo_pfn, nr_frames, state, heads: [NIL; MAX_ORDER + 1], free: 0, used: 0 };

    let map_hole = Range { start: map_at, end: map_at + map_bytes };
    for r in ram {
        // Split the range around every hole and add the pieces.
        let mut pieces: [(u64, u64); 16] = [(0, 0); 16];
        let mut n = 1;
        pieces[0] = (r.start.max(lo_pfn * PAGE_SIZE), r.end.min(hi_pfn * PAGE_SIZE));
        for h in holes.iter().chain(core::iter::once(&map_hole)) {
            let mut out: [(u64, u64); 16] = [(0, 0); 16];
            let mut m = 0;
            for &(s, e) in &pieces[..n] {
                if h.end <= s || h.start >= e {
                    out[m] = (s, e);
                    m += 1;
                } else {
                    if h.start > s {
                        out[m] = (s, h.start);
                        m += 1;
                    }
                    if h.end < e {
                        out[m] = (h.end, e);
                        m += 1;
                    }
                }
            }
            pieces = out;
            n = m;
        }
        for &(s, e) in &pieces[..n] {
            let (sp, ep) = (s.div_ceil(PAGE_SIZE), e / PAGE_SIZE);
            if sp < ep {
                b.add_range(sp, ep);
            }
        }
    }
    TOTAL.store(total, Ordering::Relaxed);
    RESERVED.store(total - b.free, Ordering::Relaxed);
    let managed = b.free;
    *BUDDY.lock() = Some(b);
    // The watermarks of the one zone: everything the allocator manages.
    mm::init(managed, managed);
}

/// Allocate a block of `2^order` frames for a caller that cannot sleep
/// (the heap's growth, page tables, stacks): it may use part of the reserve
/// below the `min` watermark ([`Gfp::Atomic`]). Returns its physical
/// address. Linux: `alloc_pages(GFP_ATOMIC)`.
pub fn alloc(order: usize) -> Option<u64> {
    alloc_gfp(order, Gfp::Atomic)
}

/// Allocate a block of `2^order` frames if the watermarks allow it for
/// `gfp` (`kport::mm::watermark_ok`); falling below `low` asks for kswapd
/// (a flag; the tick wakes it). No reclaim here: a caller that may sleep
/// goes through `kport::mm::alloc_slowpath`.
pub fn alloc_gfp(order: usize, gfp: Gfp) -> Option<u64> {
    if order > MAX_ORDER {
        return None;
    }
    let (pa, free) = {
        let mut g = BUDDY.lock();
        let b = g.as_mut()?;
        if !mm::watermark_ok(b.free, 1 << order, gfp) {
            return None;
        }
        let pa = b.alloc(order).map(|pfn| pfn * PAGE_SIZE);
        (pa, b.free)
    };
    mm::note_free(free);
    pa
}

/// Allocate one zeroed frame.
pub fn alloc_zeroed() -> Option<u64> {
    let pa = alloc(0)?;
    // SAFETY: the frame was just handed to us and is direct-mapped.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize) };
    Some(pa)
}

/// Return a block from [`alloc`] with the same order. Linux: `__free_pages`.
pub fn free(pa: u64, order: usize) {
    let mut g = BUDDY.lock();
    let b = g.as_mut().expect("frame allocator not initialised");
    let pfn = pa / PAGE_SIZE;
    assert!(
        pa.is_multiple_of(PAGE_SIZE << order) && pfn >= b.base_pfn && pfn + (1 << order) <= b.base_pfn + b.nr_frames,
        "freeing a frame block the allocator does not own: {pa:#x} order {order}"
    );
    assert!(b.state[b.idx(pfn)] == NOT_FREE, "double free of frame block {pa:#x} order {order}");
    b.used -= 1 << order;
    b.release(pfn, order);
    let free = b.free;
    drop(g);
    mm::note_free(free);
}

/// The counters right now.
pub fn counters() -> FrameCounters {
    let g = BUDDY.lock();
    let (free, used) = g.as_ref().map_or((0, 0), |b| (b.free, b.used));
    FrameCounters { total: TOTAL.load(Ordering::Relaxed), free, used, reserved: RESERVED.load(Ordering::Relaxed) }
}

/// Check the buddy logic on a private allocator over one block of `2^order`
/// frames taken from the global one: split it into single frames, free them
/// in the order `shuffle` gives, and return the free-block histogram after
/// (a fully merged allocator shows one block of `order`). Other CPUs cannot
/// disturb it. `None` if no block of that order is free.
pub fn self_test_merge(order: usize, shuffle: impl FnOnce(&mut [u64])) -> Option<[u64; MAX_ORDER + 1]> {
    let block = alloc(order)?;
    let n = 1u64 << order;
    let mut state = alloc::vec![NOT_FREE; n as usize];
    let base_pfn = block / PAGE_SIZE;
    let mut b = Buddy { base_pfn, nr_frames: n, state: &mut state, heads: [NIL; MAX_ORDER + 1], free: 0, used: 0 };
    b.add_range(base_pfn, base_pfn + n);
    let mut frames: alloc::vec::Vec<u64> = (0..n).filter_map(|_| b.alloc(0)).collect();
    shuffle(&mut frames);
    for pfn in frames {
        b.used -= 1;
        b.release(pfn, 0);
    }
    let mut hist = [0u64; MAX_ORDER + 1];
    for (k, h) in hist.iter_mut().enumerate() {
        let mut p = b.heads[k];
        while p != NIL {
            *h += 1;
            p = b.node(p).next;
        }
    }
    free(block, order);
    Some(hist)
}
