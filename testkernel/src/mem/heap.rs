//! The kernel heap: `linked_list_allocator` over a virtual region that grows
//! a page at a time from the frame allocator when an allocation does not fit.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use linked_list_allocator::Heap;

use super::{PAGE_SIZE, frames, paging};
use crate::sync::IrqSpinLock;

/// Start of the heap's virtual region.
pub const HEAP_BASE: u64 = 0xffff_c000_0000_0000;
/// Largest the heap may grow (virtual space only; frames come on demand).
pub const HEAP_MAX: u64 = 16 << 30;
/// Initial size: enough for boot without growing.
const HEAP_INITIAL: u64 = 4 << 20;
/// Smallest growth step: growing is a page-table walk per page, so grow in
/// chunks to keep it off most allocation paths.
const HEAP_GROW_MIN: u64 = 1 << 20;

struct KernelHeap {
    heap: Heap,
    /// Bytes of the region mapped so far.
    mapped: u64,
}

/// The global allocator (lock level: leaf apart from the frame and page-table
/// locks it takes while growing).
pub struct LockedHeap(IrqSpinLock<Option<KernelHeap>>);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap(IrqSpinLock::named("heap", None));

static GROW_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Map `bytes` more at `from`; all or nothing (a partial growth is undone,
/// so the next attempt finds the range unmapped).
fn map_more(from: u64, bytes: u64) -> bool {
    let mut off = 0;
    while off < bytes {
        let mapped = frames::alloc(0)
            .and_then(|pa| paging::map(from + off, pa, paging::W | paging::NX).map_err(|_| frames::free(pa, 0)).ok());
        if mapped.is_none() {
            // Nothing reached these pages yet (the heap did not extend over
            // them): unmap and free what was mapped.
            while off > 0 {
                off -= PAGE_SIZE;
                if let Some(pa) = paging::unmap(from + off) {
                    frames::free(pa, 0);
                }
            }
            return false;
        }
        off += PAGE_SIZE;
    }
    true
}

/// Map the initial heap. Runs once on the boot CPU after the frame allocator.
pub fn init() {
    assert!(map_more(HEAP_BASE, HEAP_INITIAL), "cannot map the initial kernel heap");
    let mut heap = Heap::empty();
    // SAFETY: the region was just mapped, is writable, and is used by nothing
    // but this heap.
    unsafe { heap.init(HEAP_BASE as *mut u8, HEAP_INITIAL as usize) };
    *HEAP.0.lock() = Some(KernelHeap { heap, mapped: HEAP_INITIAL });
}

// SAFETY: allocation and deallocation are serialized by the lock, and the
// heap hands out disjoint blocks of mapped memory.
unsafe impl GlobalAlloc for LockedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut g = self.0.lock();
        let Some(h) = g.as_mut() else { return core::ptr::null_mut() };
        if let Ok(p) = h.heap.allocate_first_fit(layout) {
            return p.as_ptr();
        }
        let want = (layout.size() + layout.align()) as u64;
        let grow = want.max(HEAP_GROW_MIN).next_multiple_of(PAGE_SIZE);
        if h.mapped + grow > HEAP_MAX || !map_more(HEAP_BASE + h.mapped, grow) {
            GROW_FAILURES.fetch_add(1, Ordering::Relaxed);
            return core::ptr::null_mut();
        }
        h.mapped += grow;
        // SAFETY: the pages right after the heap's end were just mapped.
        unsafe { h.heap.extend(grow as usize) };
        h.heap.allocate_first_fit(layout).map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let mut g = self.0.lock();
        if let (Some(h), Some(p)) = (g.as_mut(), NonNull::new(ptr)) {
            // SAFETY: the caller passes a block this allocator returned, with
            // its layout.
            unsafe { h.heap.deallocate(p, layout) };
        }
    }
}

/// Heap usage: `(bytes in use, bytes mapped)`.
pub fn usage() -> (u64, u64) {
    let g = HEAP.0.lock();
    g.as_ref().map_or((0, 0), |h| (h.heap.used() as u64, h.mapped))
}
