//! The kernel heap: `linked_list_allocator` over a virtual region that grows
//! a page at a time from the frame allocator when an allocation does not fit,
//! with per-CPU caches of small blocks in front (Linux's per-CPU slab
//! caches, in miniature).
//!
//! The list allocator walks its free list on every free, and one lock
//! serializes every CPU: a work item's allocations and frees cost more than
//! its run. Blocks of up to 1 KiB (alignment up to 16) are rounded up to one
//! of seven size classes; a freed one goes on its CPU's list for the class
//! (up to [`CACHE_MAX`] blocks), where the next allocation of the class on
//! that CPU takes it back with interrupts off and no lock. An empty list is
//! refilled, and a full one half emptied, in batches under one lock, so
//! that a producer on one CPU and a consumer on another (a work item made
//! here and freed by a worker there) pay for the lock once per batch. A
//! block freed on another CPU than the one that allocated it is simply
//! cached there.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use linked_list_allocator::Heap;

use super::{PAGE_SIZE, frames, paging};
use crate::percpu::{self, MAX_CPUS};
use crate::sync::IrqSpinLock;

/// Block sizes of the per-CPU caches.
const CLASSES: [usize; 7] = [16, 32, 64, 128, 256, 512, 1024];
/// Alignment of every cached block (that of the largest type the classes
/// serve; larger alignments go to the list allocator directly).
const CLASS_ALIGN: usize = 16;
/// Free blocks a CPU keeps per class; a free into a full cache gives half
/// of them back to the list allocator first.
pub const CACHE_MAX: usize = 64;

/// One CPU's free blocks: a list per class, linked through each block's
/// first word. Cache-line aligned, so that two CPUs' lists never share a
/// line (under QEMU's threads, as on hardware, a shared line bounces).
#[repr(align(64))]
struct Cache {
    heads: [*mut u8; CLASSES.len()],
    lens: [usize; CLASSES.len()],
}

struct Caches([UnsafeCell<Cache>; MAX_CPUS]);

// SAFETY: each CPU's cache is touched only by that CPU, with interrupts off
// (`with_cache`), so no two contexts ever hold it at once.
unsafe impl Sync for Caches {}

static CACHES: Caches = Caches(
    [const { UnsafeCell::new(Cache { heads: [core::ptr::null_mut(); CLASSES.len()], lens: [0; CLASSES.len()] }) };
        MAX_CPUS],
);

/// Bytes the kernel holds, as asked for (the layouts' sizes), counted per
/// CPU and summed on read ([`usage`]): what a leak check compares, whatever
/// the caches and the size classes' rounding make of it underneath. A block
/// freed on another CPU than it was allocated on makes the two counts
/// differ by its size; only the sum means anything.
static USED: [Used; MAX_CPUS] = [const { Used(core::sync::atomic::AtomicI64::new(0)) }; MAX_CPUS];

/// One CPU's count, alone on its cache line: every allocation and free
/// adds to it, and a line shared with another CPU's count would bounce
/// between them on each.
#[repr(align(64))]
struct Used(core::sync::atomic::AtomicI64);

#[inline]
fn account(bytes: i64) {
    USED[percpu::cpu_id() % MAX_CPUS].0.fetch_add(bytes, Ordering::Relaxed);
}

/// Blocks an empty cache takes from the list allocator at once.
const REFILL: usize = 16;

impl Cache {
    /// Put `p` on class `c`'s list.
    ///
    /// # Safety
    /// `p` is a block of class `c` (at least 16 bytes, 16-aligned) that
    /// nothing else uses.
    unsafe fn push(&mut self, c: usize, p: *mut u8) {
        // SAFETY: as the contract: its first word is free for the link.
        unsafe { p.cast::<*mut u8>().write(self.heads[c]) };
        self.heads[c] = p;
        self.lens[c] += 1;
    }

    /// Take a block of class `c` off its list (null if empty).
    fn pop(&mut self, c: usize) -> *mut u8 {
        let head = self.heads[c];
        if !head.is_null() {
            // SAFETY: a block on the list holds the next one's address in
            // its first word, written by `push`.
            self.heads[c] = unsafe { head.cast::<*mut u8>().read() };
            self.lens[c] -= 1;
        }
        head
    }
}

/// Allocate from the list allocator (its lock held), growing the region if
/// needed.
fn alloc_locked(h: &mut KernelHeap, layout: Layout) -> *mut u8 {
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

/// The class serving `layout`, if any.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > CLASS_ALIGN || layout.size() > CLASSES[CLASSES.len() - 1] {
        return None;
    }
    CLASSES.iter().position(|&c| c >= layout.size())
}

/// The layout a class's blocks are allocated from the list allocator with.
#[inline]
fn class_layout(c: usize) -> Layout {
    // SAFETY: the sizes are non-zero multiples of the power-of-two alignment.
    unsafe { Layout::from_size_align_unchecked(CLASSES[c], CLASS_ALIGN) }
}

/// Run `f` on this CPU's cache with interrupts off.
#[inline]
fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    let was = crate::sync::irq_save();
    // SAFETY: interrupts are off, so nothing else on this CPU runs until
    // they are restored, and no other CPU touches this CPU's cache.
    let r = f(unsafe { &mut *CACHES.0[percpu::cpu_id() % MAX_CPUS].get() });
    crate::sync::irq_restore(was);
    r
}

/// Free blocks in the calling CPU's cache, per class (for tests).
pub fn cached_here() -> [usize; CLASSES.len()] {
    with_cache(|cache| cache.lens)
}

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

// SAFETY: the list allocator's calls are serialized by the lock and hand out
// disjoint blocks of mapped memory; a cached block belongs to exactly one
// CPU's list until it is handed out again, with its class's size and
// alignment, which cover the layout asked for.
unsafe impl GlobalAlloc for LockedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = self.alloc_block(layout);
        if !p.is_null() {
            account(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr.is_null() {
            return;
        }
        account(-(layout.size() as i64));
        // SAFETY: as the caller's contract.
        unsafe { self.dealloc_block(ptr, layout) };
    }
}

impl LockedHeap {
    /// A block for `layout`: from this CPU's cache of its class (refilled
    /// with [`REFILL`] blocks under one lock when empty), else from the list
    /// allocator.
    fn alloc_block(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class_of(layout) else { return self.alloc_list(layout) };
        with_cache(|cache| {
            if cache.heads[c].is_null() {
                let mut g = self.0.lock();
                if let Some(h) = g.as_mut() {
                    for _ in 0..REFILL {
                        let p = alloc_locked(h, class_layout(c));
                        if p.is_null() {
                            break;
                        }
                        // SAFETY: a fresh block of the class, ours alone.
                        unsafe { cache.push(c, p) };
                    }
                }
            }
            cache.pop(c)
        })
    }

    /// Give a block back to this CPU's cache of its class; a full cache
    /// first gives half its blocks back to the list allocator under one
    /// lock.
    ///
    /// # Safety
    /// `ptr` came from [`LockedHeap::alloc_block`] with `layout`.
    unsafe fn dealloc_block(&self, ptr: *mut u8, layout: Layout) {
        let Some(c) = class_of(layout) else {
            // SAFETY: as the caller's contract.
            return unsafe { self.dealloc_list(ptr, layout) };
        };
        with_cache(|cache| {
            if cache.lens[c] >= CACHE_MAX {
                let mut g = self.0.lock();
                if let Some(h) = g.as_mut() {
                    for _ in 0..CACHE_MAX / 2 {
                        let Some(b) = NonNull::new(cache.pop(c)) else { break };
                        // SAFETY: cached blocks came from the list allocator
                        // with their class's layout.
                        unsafe { h.heap.deallocate(b, class_layout(c)) };
                    }
                }
            }
            // SAFETY: the block is the caller's to give back, of the class.
            unsafe { cache.push(c, ptr) };
        });
    }

    /// Allocate from the list allocator, growing the region if needed.
    fn alloc_list(&self, layout: Layout) -> *mut u8 {
        let mut g = self.0.lock();
        g.as_mut().map_or(core::ptr::null_mut(), |h| alloc_locked(h, layout))
    }

    /// Give a block back to the list allocator.
    ///
    /// # Safety
    /// `ptr` came from [`LockedHeap::alloc_list`] with `layout`.
    unsafe fn dealloc_list(&self, ptr: *mut u8, layout: Layout) {
        let mut g = self.0.lock();
        if let (Some(h), Some(p)) = (g.as_mut(), NonNull::new(ptr)) {
            // SAFETY: the caller passes a block this allocator returned, with
            // its layout.
            unsafe { h.heap.deallocate(p, layout) };
        }
    }
}

/// Heap usage: `(bytes in use, bytes mapped)`. In use is what the kernel
/// asked for and holds (the sum of the live layouts' sizes), not what the
/// caches and the classes' rounding take underneath.
pub fn usage() -> (u64, u64) {
    let used: i64 = USED.iter().map(|u| u.0.load(Ordering::Relaxed)).sum();
    let mapped = HEAP.0.lock().as_ref().map_or(0, |h| h.mapped);
    (used.max(0) as u64, mapped)
}
