//! The leak check the harness makes around every suite (and so around each
//! case of the explicit `torture` suite, run one suite at a time): heap
//! bytes, frames, kernel threads, armed timers and work items in flight
//! must be back where they were when the suite started, or the suite fails
//! naming what stayed (`docs/leaks.md` has the rules and their reasons).
//!
//! [`baseline`] quiesces the machine and takes a [`Snapshot`] before the
//! suite's first case; [`check`] quiesces again after its last case and
//! compares, looking again for a bounded time ([`SETTLE_MS`]) while
//! something still differs: threads that were stopped may still be exiting,
//! a timer callback may be running, an item may be on its way through a
//! queue.
//!
//! Quiescing: flush every system workqueue and the `writeback` queue (with
//! a pass of each armed flusher, so its delayed item is not left waiting
//! for its timer), drop the page cache's clean pages, forget exited
//! threads. What stays after that and is legitimate lasting state is left
//! out by rule: the workqueues' pool workers and the pools' timers (a
//! cache; the memory of the extra workers is allowed instead), and memory
//! within [`HEAP_SLACK`] and [`FRAMES_SLACK`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use kport::harness::MemCounters;
use kport::port;
use workqueue::SystemWq;

/// How long [`check`] keeps looking while something differs: threads that
/// exit are reaped, timer callbacks end and queued items run within it on a
/// loaded TCG guest. A suite that really leaks pays it once.
pub const SETTLE_MS: u64 = 5_000;

/// Pause between two looks.
const RETRY_MS: u64 = 20;

/// Heap bytes a suite may leave allocated beyond its baseline, whatever
/// the machine: the lasting allocations made on first use of something (a
/// registry's vector growing past its reserve, a warning kept in the
/// warning ring, a sysctl table registered) that are not leaks.
pub const HEAP_SLACK: u64 = 16 << 10;

/// Heap bytes more a suite may leave per CPU: per-CPU queues are vectors
/// that keep the capacity they grew to under load (the scheduler's run
/// queues, the IPI call queues, the block layer's completion lists), so the
/// first suite that loads every CPU leaves them bigger; a 4-CPU guest's
/// `block` suite grows them by 21 to 27 KiB in all.
pub const HEAP_SLACK_PER_CPU: u64 = 16 << 10;

/// Frames a suite may leave in use beyond its baseline (page tables of a
/// newly used region, a DMA pool's first page).
pub const FRAMES_SLACK: u64 = 8;

/// Heap bytes allowed per pool worker more than at the baseline beside
/// what a kernel thread costs (measured at [`warm_up`]): the worker's own
/// record, its name and description, its place in the pool's lists (about
/// 2 KiB on the testkernel).
pub const HEAP_PER_WORKER: u64 = 3 << 10;

/// Heap bytes allowed per worker pool more than at the baseline: pools are
/// made on first use for each set of attributes and kept (a cache, as
/// Linux keeps its unbound pools while a queue uses them): the pool's
/// record, its two timers and its lists.
pub const HEAP_PER_POOL: u64 = 2 << 10;

/// Suites whose heap and frames are not compared (threads, timers and work
/// items are): `redox_user` starts Redox's user space, whose processes hold
/// kernel memory (their contexts, kernel stacks and pages) for the rest of
/// the boot by design.
pub const MEMORY_NOT_COMPARED: [&str; 1] = ["redox_user"];

/// What one sleeping kernel thread costs on this port (heap bytes,
/// frames), measured by [`warm_up`]: the allowance for each pool worker
/// more than at the baseline (a pool's workers are a cache). Inside Redox
/// the heap part holds the thread's kernel stack; on the testkernel the
/// stack is frames.
static THREAD_COST: spin::Once<(u64, u64)> = spin::Once::new();

/// What is compared: the machine's state at one moment, after quiescing.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Memory counters of the port's harness.
    pub mem: MemCounters,
    /// Every kernel thread (context id, state letter, name).
    pub threads: Vec<(usize, char, String)>,
    /// Context ids of the workqueues' pool workers (a cache, left out).
    pub pool_workers: Vec<usize>,
    /// Worker pools (a cache: their memory is allowed).
    pub pools: usize,
    /// Timers made with `kport::timers::new` and armed, without the pools'
    /// idle and mayday timers.
    pub timers: usize,
    /// Work items in flight: every workqueue's (queued, running or waiting
    /// for their timer) and every `kthread_worker`'s.
    pub work: usize,
    /// Queues with items in flight, by name.
    pub busy_queues: Vec<(String, usize)>,
    /// Heap bytes tracing holds for good (`kport::trace::held_bytes`):
    /// accounted, not compared.
    pub trace_bytes: u64,
}

/// Make before the first baseline what is made once, on first use, and
/// kept for the rest of the boot, so that the suite that happens to use it
/// first is not blamed for it: the disks (Linux binds its drivers at boot),
/// and their writeback state with the `writeback` queue and its rescuer
/// (Linux makes a disk's `bdi_writeback` when the disk is added, and
/// `bdi_wq` at boot). Nothing where the port has no device bus.
///
/// Context: may sleep.
pub fn warm_up() {
    THREAD_COST.call_once(thread_cost);
    if port().device_bus().is_none() {
        return;
    }
    let Ok(disks) = drivers::blk::probe_all() else { return };
    for d in &disks {
        let _ = drivers::writeback::bdi_of(d);
    }
}

/// Heap bytes and frames a sleeping kernel thread holds: what the second
/// of two threads made one after the other (the first pays for first-use
/// growth of the registries) gives back when it has exited and was reaped.
fn thread_cost() -> (u64, u64) {
    let mut cost = (0, 0);
    for _ in 0..2 {
        let t = kthreadd::kthread::Builder::new(format_args!("leak-probe"), || {
            while !kthreadd::kthread::should_stop() {
                kthreadd::kthread::sleep_ms_or_stop(1_000);
            }
            0
        })
        .run();
        let Ok(t) = t else { return cost };
        crate::port_api::wait_for(5_000, || t.has_started());
        let alive = mem_counters();
        let task = t.task().clone();
        let _ = t.stop();
        drop(t);
        crate::port_api::wait_for(5_000, || task.state() == kport::TaskState::Dead);
        drop(task);
        kthreadd::registry::prune();
        let gone = mem_counters();
        cost = (alive.heap_used.saturating_sub(gone.heap_used), alive.used_frames.saturating_sub(gone.used_frames));
    }
    cost
}

/// Flush what is legitimately asynchronous (module documentation).
///
/// Context: may sleep.
pub fn quiesce() {
    if workqueue::system::started() {
        for w in SystemWq::ALL {
            let _ = workqueue::system::get(w).flush();
        }
    }
    for b in drivers::writeback::all() {
        if b.is_armed() {
            b.kick(false);
        }
    }
    if let Some(q) = drivers::writeback::queue() {
        let _ = q.flush();
    }
    drivers::vmscan::drop_caches();
    kthreadd::registry::prune();
}

/// The state now, without quiescing first. `mem_last`: read the memory
/// counters after building the snapshot's vectors, so they are counted in
/// it (a baseline, whose vectors stay allocated through the suite);
/// otherwise before (a later look, so that its own vectors are not).
///
/// Context: any task context.
fn take(mem_last: bool) -> Snapshot {
    let early = (!mem_last).then(mem_counters);
    let threads = kthreadd::registry::rows()
        .into_iter()
        .map(|r| (r.id, r.state, String::from(r.name.trim_start_matches('[').trim_end_matches(']'))))
        .collect();
    let all_pools = workqueue::pools();
    let pools = all_pools.len();
    let pool_workers = all_pools.iter().flat_map(|p| p.workers.iter().map(|w| w.id)).collect();
    drop(all_pools);
    let timers = kport::timers::armed().saturating_sub(workqueue::pool_timers_armed());
    let work = workqueue::in_flight().total() + kthreadd::kthread_worker::items_in_flight();
    let busy_queues = workqueue::busy_queues();
    let trace_bytes = kport::trace::held_bytes();
    let mem = early.unwrap_or_else(mem_counters);
    Snapshot { mem, threads, pool_workers, pools, timers, work, busy_queues, trace_bytes }
}

fn mem_counters() -> MemCounters {
    if kport::harness::installed() { kport::harness::harness().mem_counters() } else { MemCounters::default() }
}

/// Quiesce, then take the snapshot a suite's check compares with.
///
/// Context: may sleep.
pub fn baseline() -> Snapshot {
    quiesce();
    take(true)
}

/// Signed difference `now - base`, for the figures.
fn delta(base: u64, now: u64) -> i64 {
    now as i64 - base as i64
}

/// What a look found: what stayed beyond the rules, if anything, and the
/// figures it judged (printed with `leak_check=verbose`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `heap +N bytes (allowed A), frames +M (allowed B), kthreads +K
    /// [names], timers +T, work items +W [queue: n]`: only what leaked.
    pub leaked: Option<String>,
    /// Every figure, leaking or not.
    pub figures: String,
}

/// Compare `now` with `base` under the rules of `docs/leaks.md`; the
/// memory only if `memory` (see [`MEMORY_NOT_COMPARED`]).
pub fn compare(base: &Snapshot, now: &Snapshot, memory: bool) -> Outcome {
    let mut parts: Vec<String> = Vec::new();
    let new_workers = now.pool_workers.len().saturating_sub(base.pool_workers.len()) as u64;
    let new_pools = now.pools.saturating_sub(base.pools) as u64;
    let (thread_heap, thread_frames) = THREAD_COST.get().copied().unwrap_or((0, 0));
    let cpus = port().cpu_count() as u64;
    let heap_allowed = HEAP_SLACK
        + cpus * HEAP_SLACK_PER_CPU
        + new_pools * HEAP_PER_POOL
        + new_workers * (thread_heap + HEAP_PER_WORKER);
    let traced = now.trace_bytes.saturating_sub(base.trace_bytes);
    let heap = now.mem.heap_used.saturating_sub(base.mem.heap_used + traced);
    if memory && heap > heap_allowed {
        parts.push(format!("heap +{heap} bytes (allowed {heap_allowed})"));
    }
    let frames_allowed = FRAMES_SLACK + new_workers * thread_frames;
    let frames = now.mem.used_frames.saturating_sub(base.mem.used_frames);
    if memory && frames > frames_allowed {
        parts.push(format!("frames +{frames} (allowed {frames_allowed})"));
    }
    let stayed: Vec<String> = now
        .threads
        .iter()
        .filter(|(id, _, _)| !base.threads.iter().any(|(b, _, _)| b == id) && !now.pool_workers.contains(id))
        .map(|(_, state, name)| if *state == 'Z' { format!("{name} (exited, handle kept)") } else { name.clone() })
        .collect();
    if !stayed.is_empty() {
        parts.push(format!("kthreads +{} [{}]", stayed.len(), stayed.join(", ")));
    }
    if now.timers > base.timers {
        parts.push(format!("timers +{}", now.timers - base.timers));
    }
    if now.work > base.work {
        let queues: Vec<String> = now
            .busy_queues
            .iter()
            .filter(|(q, n)| base.busy_queues.iter().find(|(b, _)| b == q).is_none_or(|(_, m)| n > m))
            .map(|(q, n)| format!("{q}: {n}"))
            .collect();
        let named = if queues.is_empty() { String::new() } else { format!(" [{}]", queues.join(", ")) };
        parts.push(format!("work items +{}{named}", now.work - base.work));
    }
    let figures = format!(
        "heap {:+} bytes (trace {:+}, counted {heap}, allowed {heap_allowed}), frames {:+} (allowed {frames_allowed}), \
         kthreads {}->{}, pool workers {}->{}, pools {}->{}, timers {}->{}, work items {}->{}",
        delta(base.mem.heap_used, now.mem.heap_used),
        delta(base.trace_bytes, now.trace_bytes),
        delta(base.mem.used_frames, now.mem.used_frames),
        base.threads.len(),
        now.threads.len(),
        base.pool_workers.len(),
        now.pool_workers.len(),
        base.pools,
        now.pools,
        base.timers,
        now.timers,
        base.work,
        now.work,
    );
    Outcome { leaked: (!parts.is_empty()).then(|| parts.join(", ")), figures }
}

/// Quiesce and compare with `base`, the snapshot taken before `suite`,
/// looking again for up to [`SETTLE_MS`] while something differs: the
/// outcome of the first clean look, or of the last one.
///
/// Context: may sleep.
pub fn check(suite: &str, base: &Snapshot) -> Outcome {
    let p = port();
    let memory = !MEMORY_NOT_COMPARED.contains(&suite);
    let deadline = p.now_ns() + SETTLE_MS * 1_000_000;
    loop {
        quiesce();
        let now = take(false);
        let outcome = compare(base, &now, memory);
        drop(now);
        if outcome.leaked.is_none() || p.now_ns() >= deadline {
            return outcome;
        }
        kthreadd::kthread::msleep(RETRY_MS);
    }
}
