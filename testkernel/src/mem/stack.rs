//! Kernel stacks with guard pages.
//!
//! Each stack occupies the top [`STACK_SIZE`] bytes of a [`SLOT_SIZE`] slot
//! in its own virtual region; the rest of the slot below it is never mapped,
//! so running off the bottom of a stack faults on a guard page instead of
//! corrupting a neighbour. The fault handler asks [`guard_owner`] whether an
//! address is such a guard page and reports a stack overflow.
//!
//! Up to [`STACK_CACHE`] freed stacks stay mapped for the next context
//! (Linux caches two per CPU, `NR_CACHED_STACKS`), so a create/exit cycle
//! touches no page table. Beyond that, freed stacks give their frames back
//! at once. Their virtual slot is reused
//! only after every CPU has flushed its TLB since the unmap (tracked by a
//! global generation that each CPU catches up with on its timer tick and at
//! every context switch), so no CPU can reach the new stack through a stale
//! translation. This avoids a TLB-shootdown IPI per thread exit.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{PAGE_SIZE, frames, paging};
use crate::arch::cpu;
use crate::percpu;
use crate::sync::IrqSpinLock;

/// Start of the stack region.
pub const STACK_BASE: u64 = 0xffff_d000_0000_0000;
/// Stack size: 64 KiB, as Redox's kernel stacks.
pub const STACK_SIZE: u64 = 64 * 1024;
/// Virtual space per stack: the stack plus an unmapped guard area as large.
pub const SLOT_SIZE: u64 = 2 * STACK_SIZE;
/// Most stacks at once (virtual space: 64 Ki slots = 8 GiB).
pub const MAX_SLOTS: u64 = 64 * 1024;

/// Freed stacks kept mapped for reuse: two per CPU of a 4-CPU guest.
pub const STACK_CACHE: usize = 8;

/// Slots of cached (still mapped) stacks.
static CACHE: IrqSpinLock<[Option<u64>; STACK_CACHE]> = IrqSpinLock::named("stack cache", [None; STACK_CACHE]);

/// Bumped on every unmap; CPUs record the value they flushed up to.
static TLB_GEN: AtomicU64 = AtomicU64::new(0);

struct Slots {
    /// Never used yet: slots `next..MAX_SLOTS`.
    next: u64,
    /// Freed slots with the TLB generation of their unmap.
    free: Vec<(u64, u64)>,
}

static SLOTS: IrqSpinLock<Slots> = IrqSpinLock::named("stack slots", Slots { next: 0, free: Vec::new() });

/// Slots whose page tables are built at boot: creating and exiting contexts
/// within this many live stacks never allocates page-table frames, so the
/// frame counters return exactly to where they were.
pub const PREPOPULATED_SLOTS: u64 = 1024;

/// Build the page tables of the first slots and reserve the free list
/// (boot CPU, after the heap).
pub fn init() {
    let mut va = STACK_BASE;
    while va < STACK_BASE + PREPOPULATED_SLOTS * SLOT_SIZE {
        paging::ensure_tables(va).expect("no memory for the stack page tables");
        va += 2 << 20;
    }
    SLOTS.lock().free.reserve(PREPOPULATED_SLOTS as usize);
}

/// Flush this CPU's TLB if a stack was unmapped since its last flush. Called
/// from the timer tick and the context switch.
pub fn tlb_catch_up() {
    let g = TLB_GEN.load(Ordering::Acquire);
    let pc = percpu::this_cpu();
    if pc.tlb_gen_seen.load(Ordering::Relaxed) < g {
        cpu::flush_tlb_local();
        pc.tlb_gen_seen.store(g, Ordering::Release);
    }
}

/// This CPU stops (hot-unplug): it runs nothing until [`tlb_revive`], so
/// freed stack slots need not wait for it to flush.
pub fn tlb_park() {
    percpu::this_cpu().tlb_gen_seen.store(u64::MAX, Ordering::Release);
}

/// This CPU runs again: it records the current generation first (so slots
/// freed from now on wait for it), then flushes what it may still cache.
pub fn tlb_revive() {
    let g = TLB_GEN.load(Ordering::Acquire);
    percpu::this_cpu().tlb_gen_seen.store(g, Ordering::Release);
    cpu::flush_tlb_local();
}

fn oldest_generation_seen() -> u64 {
    (0..percpu::MAX_CPUS)
        .map(|c| &percpu::PERCPU[c])
        .filter(|pc| pc.online.load(Ordering::Acquire))
        .map(|pc| pc.tlb_gen_seen.load(Ordering::Acquire))
        .min()
        .unwrap_or(u64::MAX)
}

/// An owned, mapped kernel stack. Dropping it unmaps it and frees its frames.
pub struct KernelStack {
    slot: u64,
}

impl KernelStack {
    /// Map a new stack; `None` when frames or slots run out.
    pub fn new() -> Option<Self> {
        if let Some(slot) = CACHE.lock().iter_mut().find_map(|c| c.take()) {
            return Some(KernelStack { slot });
        }
        tlb_catch_up();
        let seen = oldest_generation_seen();
        let slot = {
            let mut s = SLOTS.lock();
            if let Some(i) = s.free.iter().position(|&(_, g)| g <= seen) {
                s.free.swap_remove(i).0
            } else if s.next < MAX_SLOTS {
                s.next += 1;
                s.next - 1
            } else {
                return None;
            }
        };
        let stack = KernelStack { slot };
        let bottom = stack.bottom();
        let mut off = 0;
        while off < STACK_SIZE {
            let Some(pa) = frames::alloc(0) else {
                stack.release_pages(off);
                return None;
            };
            if paging::map(bottom + off, pa, paging::W | paging::NX).is_err() {
                frames::free(pa, 0);
                stack.release_pages(off);
                return None;
            }
            off += PAGE_SIZE;
        }
        Some(stack)
    }

    /// Lowest address of the stack.
    pub fn bottom(&self) -> u64 {
        STACK_BASE + self.slot * SLOT_SIZE + (SLOT_SIZE - STACK_SIZE)
    }

    /// One past the highest address (the initial stack pointer).
    pub fn top(&self) -> u64 {
        STACK_BASE + (self.slot + 1) * SLOT_SIZE
    }

    /// Unmap the first `bytes` of the stack and retire the slot.
    fn release_pages(&self, bytes: u64) {
        let bottom = self.bottom();
        let mut off = 0;
        while off < bytes {
            if let Some(pa) = paging::unmap(bottom + off) {
                frames::free(pa, 0);
            }
            off += PAGE_SIZE;
        }
        let g = TLB_GEN.fetch_add(1, Ordering::AcqRel) + 1;
        SLOTS.lock().free.push((self.slot, g));
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        {
            let mut c = CACHE.lock();
            if let Some(free) = c.iter_mut().find(|c| c.is_none()) {
                *free = Some(self.slot);
                return;
            }
        }
        self.release_pages(STACK_SIZE);
    }
}

/// Frames held by the cache of freed stacks (kept mapped for the next
/// context): a cache, which the memory counters leave out of the frames in
/// use, as they leave out the heap's.
pub fn cached_frames() -> u64 {
    let cached = CACHE.lock().iter().filter(|c| c.is_some()).count() as u64;
    cached * (STACK_SIZE / PAGE_SIZE)
}

/// Frames of the page tables built for stack slots beyond the
/// [`PREPOPULATED_SLOTS`] (more live stacks than that at once): the region's
/// tables are kept once built, as the heap's are, so the memory counters
/// leave them out of the frames in use. Every slot below the high-water
/// mark was mapped once; slot `i`'s stack lies in the `i / 16`th 2 MiB of
/// the region (one page table each) and the `i / 8192`th GiB (one page
/// directory each); the region starts on a 512 GiB boundary.
pub fn late_table_frames() -> u64 {
    let tables = |slots: u64| {
        let bytes = slots * SLOT_SIZE;
        bytes.div_ceil(2 << 20) + bytes.div_ceil(1 << 30)
    };
    let next = SLOTS.lock().next;
    tables(next.max(PREPOPULATED_SLOTS)) - tables(PREPOPULATED_SLOTS)
}

/// If `addr` lies in the unmapped guard area of a stack slot, the slot number.
pub fn guard_owner(addr: u64) -> Option<u64> {
    if !(STACK_BASE..STACK_BASE + MAX_SLOTS * SLOT_SIZE).contains(&addr) {
        return None;
    }
    let slot = (addr - STACK_BASE) / SLOT_SIZE;
    let off = (addr - STACK_BASE) % SLOT_SIZE;
    (off < SLOT_SIZE - STACK_SIZE).then_some(slot)
}
