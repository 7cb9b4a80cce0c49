//! Tracepoints (Linux's trace events and the ftrace ring buffer, reduced)
//! and, in [`hist`], built-in latency histograms.
//!
//! * **Events.** [`Event`] lists every tracepoint with Linux's system and
//!   event name (`workqueue:workqueue_execute_start`, `sched:sched_switch`,
//!   ...). A call site checks [`on`] (one relaxed load of [`MASK`] and a
//!   test; no call, no allocation when the event is off) and only then calls
//!   [`emit`], which is out of line.
//! * **Buffer.** One ring of fixed-size slots per CPU, allocated when
//!   tracing is first enabled ([`set_buf_size`] before that, Linux's
//!   `trace_buf_size=`). A writer reserves its slot with one `fetch_add` on
//!   the ring's head, so writers that nest on one CPU (a task, a softirq on
//!   its interrupt exit, a hard interrupt) each get their own slot; the slot
//!   is a sequence lock (odd while written, even and naming its position
//!   when complete), so a reader detects a record that was overwritten
//!   (the ring wrapped) or is still being written and counts it as lost
//!   instead of returning it torn. Old records are overwritten, as ftrace's
//!   default overwrite mode does.
//! * **Readers.** [`Cursor`] reads what was recorded since it was taken (the
//!   tests); [`snapshot`] reads what the rings hold (the dumps, Linux's
//!   `trace` file, non-consuming); [`clear`] forgets it.
//! * **Formats.** [`text`] prints Linux's trace format
//!   (`  kworker/0:1-42  [000] d..1.  12.345678: workqueue_execute_start: ...`),
//!   [`json`] one JSON object per record.
//! * **Names.** A record holds ids and `&'static str` names only. Task names
//!   are found when the records are printed: in a table the scheduler fills
//!   at `sched_switch` ([`save_comm`], Linux's `saved_cmdlines`), else through
//!   a resolver the kthread layer installs ([`set_comm_resolver`]). Names
//!   built at run time (a queue's, an IRQ action's) are made `'static`
//!   once with [`intern`].

pub mod hist;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

use crate::sync::SpinLock;
use crate::{MAX_CPUS, port};

/// The enable word: bit `e as u64` for [`Event`] `e`, and the histogram
/// bits ([`hist::HIST_WORKQUEUE`] ...). Read with one relaxed load by every
/// tracepoint.
pub static MASK: AtomicU64 = AtomicU64::new(0);

/// Number of events.
pub const NR_EVENTS: usize = 22;

/// Every tracepoint (Linux's event names; [`Event::system`] gives the
/// system).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Event {
    WorkqueueQueueWork = 0,
    WorkqueueActivateWork,
    WorkqueueExecuteStart,
    WorkqueueExecuteEnd,
    SoftirqRaise,
    SoftirqEntry,
    SoftirqExit,
    IrqHandlerEntry,
    IrqHandlerExit,
    SchedSwitch,
    SchedWakeup,
    TaskNewtask,
    SchedKthreadStop,
    SchedKthreadStopRet,
    BlockRqIssue,
    BlockRqComplete,
    WritebackStart,
    WritebackWritten,
    MmVmscanKswapdWake,
    MmVmscanKswapdSleep,
    MmVmscanDirectReclaimBegin,
    MmVmscanDirectReclaimEnd,
}

impl Event {
    /// Every event, in id order.
    pub const ALL: [Event; NR_EVENTS] = [
        Event::WorkqueueQueueWork,
        Event::WorkqueueActivateWork,
        Event::WorkqueueExecuteStart,
        Event::WorkqueueExecuteEnd,
        Event::SoftirqRaise,
        Event::SoftirqEntry,
        Event::SoftirqExit,
        Event::IrqHandlerEntry,
        Event::IrqHandlerExit,
        Event::SchedSwitch,
        Event::SchedWakeup,
        Event::TaskNewtask,
        Event::SchedKthreadStop,
        Event::SchedKthreadStopRet,
        Event::BlockRqIssue,
        Event::BlockRqComplete,
        Event::WritebackStart,
        Event::WritebackWritten,
        Event::MmVmscanKswapdWake,
        Event::MmVmscanKswapdSleep,
        Event::MmVmscanDirectReclaimBegin,
        Event::MmVmscanDirectReclaimEnd,
    ];

    /// The event's name (Linux's).
    pub fn name(self) -> &'static str {
        match self {
            Event::WorkqueueQueueWork => "workqueue_queue_work",
            Event::WorkqueueActivateWork => "workqueue_activate_work",
            Event::WorkqueueExecuteStart => "workqueue_execute_start",
            Event::WorkqueueExecuteEnd => "workqueue_execute_end",
            Event::SoftirqRaise => "softirq_raise",
            Event::SoftirqEntry => "softirq_entry",
            Event::SoftirqExit => "softirq_exit",
            Event::IrqHandlerEntry => "irq_handler_entry",
            Event::IrqHandlerExit => "irq_handler_exit",
            Event::SchedSwitch => "sched_switch",
            Event::SchedWakeup => "sched_wakeup",
            Event::TaskNewtask => "task_newtask",
            Event::SchedKthreadStop => "sched_kthread_stop",
            Event::SchedKthreadStopRet => "sched_kthread_stop_ret",
            Event::BlockRqIssue => "block_rq_issue",
            Event::BlockRqComplete => "block_rq_complete",
            Event::WritebackStart => "writeback_start",
            Event::WritebackWritten => "writeback_written",
            Event::MmVmscanKswapdWake => "mm_vmscan_kswapd_wake",
            Event::MmVmscanKswapdSleep => "mm_vmscan_kswapd_sleep",
            Event::MmVmscanDirectReclaimBegin => "mm_vmscan_direct_reclaim_begin",
            Event::MmVmscanDirectReclaimEnd => "mm_vmscan_direct_reclaim_end",
        }
    }

    /// The system it belongs to (Linux's `TRACE_SYSTEM`).
    pub fn system(self) -> &'static str {
        use Event::*;
        match self {
            WorkqueueQueueWork | WorkqueueActivateWork | WorkqueueExecuteStart | WorkqueueExecuteEnd => "workqueue",
            SoftirqRaise | SoftirqEntry | SoftirqExit | IrqHandlerEntry | IrqHandlerExit => "irq",
            SchedSwitch | SchedWakeup | SchedKthreadStop | SchedKthreadStopRet => "sched",
            TaskNewtask => "task",
            BlockRqIssue | BlockRqComplete => "block",
            WritebackStart | WritebackWritten => "writeback",
            MmVmscanKswapdWake | MmVmscanKswapdSleep | MmVmscanDirectReclaimBegin | MmVmscanDirectReclaimEnd => {
                "vmscan"
            }
        }
    }

    /// Its bit in [`MASK`].
    #[inline(always)]
    pub const fn bit(self) -> u64 {
        1 << self as u64
    }

    fn from_id(id: u8) -> Option<Event> {
        Event::ALL.get(id as usize).copied()
    }
}

/// Bits of every event in [`MASK`].
pub const ALL_EVENTS: u64 = (1 << NR_EVENTS) - 1;

/// Is event `e` enabled? The whole cost of a disabled tracepoint: one
/// relaxed load and a test.
///
/// Context: any.
#[inline(always)]
pub fn on(e: Event) -> bool {
    !cfg!(feature = "notrace") && MASK.load(Ordering::Relaxed) & e.bit() != 0
}

/// Is any of `bits` (events or histogram bits) enabled? One relaxed load.
///
/// Context: any.
#[inline(always)]
pub fn any(bits: u64) -> bool {
    !cfg!(feature = "notrace") && MASK.load(Ordering::Relaxed) & bits != 0
}

// --- the buffer ---

/// Words of payload in a slot: timestamp, event/cpu/flags, pid, five
/// arguments, two strings (pointer and length each).
const WORDS: usize = 12;

/// One record's place in a ring.
struct Slot {
    /// Sequence lock: `2·(pos+1)` once the record at position `pos` is
    /// complete, `2·(pos+1) − 1` while it is written, 0 never written.
    seq: AtomicU64,
    w: [AtomicU64; WORDS],
}

/// One CPU's ring.
struct Ring {
    /// Positions handed out so far (the next record's position).
    head: AtomicU64,
    /// Records before this position were cleared ([`clear`]).
    base: AtomicU64,
    slots: Box<[Slot]>,
}

/// Bytes of one record in the ring (what `trace_buf_size=` is divided by).
pub const RECORD_BYTES: usize = core::mem::size_of::<Slot>();

/// Default ring size per CPU in bytes (Linux's default is 1.4 MB per CPU;
/// this is smaller because the guests have little memory and a record is
/// fixed-size): 4096 records.
pub const DEFAULT_BUF_BYTES: usize = 4096 * RECORD_BYTES;

/// Smallest ring: 16 records.
pub const MIN_RECORDS: usize = 16;

static BUF_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_BUF_BYTES);
static RINGS: spin::Once<Box<[Ring]>> = spin::Once::new();

/// Set the ring size per CPU in bytes (Linux `trace_buf_size=`): rounded
/// down to a power of two of records, at least [`MIN_RECORDS`]. Only before
/// the rings exist (before tracing is first enabled): `EBUSY` after.
///
/// Context: may allocate (not in interrupt context).
pub fn set_buf_size(bytes: usize) -> crate::Result<()> {
    if RINGS.get().is_some() {
        return Err(crate::Error::new(crate::EBUSY));
    }
    BUF_BYTES.store(bytes, Ordering::Relaxed);
    Ok(())
}

/// Records each CPU's ring holds.
pub fn records_per_cpu() -> usize {
    let n = (BUF_BYTES.load(Ordering::Relaxed) / RECORD_BYTES).max(MIN_RECORDS);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

fn rings() -> &'static [Ring] {
    RINGS.call_once(|| {
        let n = records_per_cpu();
        let cpus = port().cpu_count().clamp(1, MAX_CPUS);
        (0..cpus)
            .map(|_| Ring {
                head: AtomicU64::new(0),
                base: AtomicU64::new(0),
                slots: (0..n)
                    .map(|_| Slot { seq: AtomicU64::new(0), w: [const { AtomicU64::new(0) }; WORDS] })
                    .collect(),
            })
            .collect()
    })
}

/// Heap bytes tracing holds for good: the rings (once allocated, by the
/// first [`enable`]), the histogram tables ([`hist::enable`]) and the
/// [`intern`]ed names. What a leak check accounts as lasting state instead
/// of a leak; the sizes asked of the allocator, without its own rounding.
///
/// Context: any task context.
pub fn held_bytes() -> u64 {
    let rings = RINGS.get().map_or(0, |r| {
        let slots: usize = r.iter().map(|ring| ring.slots.len()).sum();
        r.len() * core::mem::size_of::<Ring>() + slots * core::mem::size_of::<Slot>()
    });
    let interned = {
        let v = INTERNED.lock();
        v.capacity() * core::mem::size_of::<&str>() + v.iter().map(|s| s.len()).sum::<usize>()
    };
    (rings + interned) as u64 + hist::held_bytes()
}

/// Turn on the events in `events` (bits of [`MASK`]), allocating the rings
/// first if needed.
///
/// Context: may allocate (not in interrupt context).
pub fn enable(events: u64) {
    if events & ALL_EVENTS != 0 {
        let _ = rings();
    }
    MASK.fetch_or(events & ALL_EVENTS, Ordering::SeqCst);
}

/// Turn off the events in `events`.
///
/// Context: any.
pub fn disable(events: u64) {
    MASK.fetch_and(!(events & ALL_EVENTS), Ordering::SeqCst);
}

/// The events enabled now.
pub fn enabled_events() -> u64 {
    MASK.load(Ordering::Relaxed) & ALL_EVENTS
}

/// Context flags of a record (Linux's latency-format columns).
const F_IRQS_OFF: u64 = 1;
const F_HARDIRQ: u64 = 2;
const F_SOFTIRQ: u64 = 4;

/// Record event `e` with arguments `a` and strings `s0`, `s1` on the calling
/// CPU (see each event's [`Record::fields`] for what they mean). Call it only
/// when [`on`] says the event is enabled; it is out of line so a disabled
/// tracepoint costs only that test.
///
/// Context: any (also hard interrupt and NMI-like nesting).
#[cold]
#[inline(never)]
pub fn emit(e: Event, a: [u64; 5], s0: &'static str, s1: &'static str) {
    if RINGS.get().is_none() {
        return;
    }
    let p = port();
    let ac = p.atomic_context();
    let softirq = ac.softirq || crate::irq::bh_count() & crate::irq::SOFTIRQ_OFFSET != 0;
    let mut flags = (ac.preempt_count.min(15) as u64) << 4;
    if ac.irqs_disabled {
        flags |= F_IRQS_OFF;
    }
    if ac.hardirq {
        flags |= F_HARDIRQ;
    }
    if softirq {
        flags |= F_SOFTIRQ;
    }
    emit_as(p.current_id() as u64, flags, e, a, s0, s1);
}

/// [`emit`] for a caller that knows the running context's id and its
/// context flags (bit 0 interrupts off, 1 hard IRQ, 2 softirq, 4..8
/// preemption depth) and must not ask the port: a scheduler in the middle
/// of a switch.
///
/// Context: any.
#[cold]
#[inline(never)]
pub fn emit_as(pid: u64, flags: u64, e: Event, a: [u64; 5], s0: &'static str, s1: &'static str) {
    let Some(rings) = RINGS.get() else { return };
    let p = port();
    let cpu = p.cpu_id();
    let Some(ring) = rings.get(cpu) else { return };
    let ts = p.now_ns();
    let pos = ring.head.fetch_add(1, Ordering::Relaxed);
    let slot = &ring.slots[pos as usize & (ring.slots.len() - 1)];
    slot.seq.store(2 * (pos + 1) - 1, Ordering::Relaxed);
    // Order the odd sequence before the payload for a reader that checks
    // the sequence again after reading the payload.
    fence(Ordering::Release);
    let words = [
        ts,
        e as u64 | (cpu as u64) << 8 | flags << 24,
        pid,
        a[0],
        a[1],
        a[2],
        a[3],
        a[4],
        s0.as_ptr() as u64,
        s0.len() as u64,
        s1.as_ptr() as u64,
        s1.len() as u64,
    ];
    for (w, v) in slot.w.iter().zip(words) {
        w.store(v, Ordering::Relaxed);
    }
    slot.seq.store(2 * (pos + 1), Ordering::Release);
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When, in [`crate::Port::now_ns`] nanoseconds.
    pub ts_ns: u64,
    /// The CPU it was recorded on.
    pub cpu: usize,
    /// Which event.
    pub event: Event,
    /// Context flags (bit 0 interrupts off, 1 hard IRQ, 2 softirq, 4..8
    /// preemption depth).
    pub flags: u8,
    /// The context that was running ([`crate::Port::current_id`]).
    pub pid: u64,
    /// The event's arguments (see [`Record::fields`]).
    pub args: [u64; 5],
    /// First string argument ("" if none).
    pub s0: &'static str,
    /// Second string argument ("" if none).
    pub s1: &'static str,
}

/// Read the record at `pos` of `ring`, or `None` if it was overwritten or
/// is still being written.
fn read_slot(ring: &Ring, pos: u64) -> Option<Record> {
    let slot = &ring.slots[pos as usize & (ring.slots.len() - 1)];
    let want = 2 * (pos + 1);
    if slot.seq.load(Ordering::Acquire) != want {
        return None;
    }
    let mut w = [0u64; WORDS];
    for (o, s) in w.iter_mut().zip(slot.w.iter()) {
        *o = s.load(Ordering::Relaxed);
    }
    fence(Ordering::Acquire);
    if slot.seq.load(Ordering::Relaxed) != want {
        return None;
    }
    let event = Event::from_id(w[1] as u8)?;
    // SAFETY: the sequence was the same complete value before and after the
    // payload was read, so the payload is the one record a single `emit`
    // wrote at `pos`, and words 8..12 are the pointer and length of the two
    // `&'static str` it was given: valid UTF-8 that lives forever.
    let (s0, s1) = unsafe {
        (
            core::str::from_utf8_unchecked(core::slice::from_raw_parts(w[8] as *const u8, w[9] as usize)),
            core::str::from_utf8_unchecked(core::slice::from_raw_parts(w[10] as *const u8, w[11] as usize)),
        )
    };
    Some(Record {
        ts_ns: w[0],
        cpu: (w[1] >> 8 & 0xffff) as usize,
        event,
        flags: (w[1] >> 24) as u8,
        pid: w[2],
        args: [w[3], w[4], w[5], w[6], w[7]],
        s0,
        s1,
    })
}

/// Records read from the rings, merged in time order, and what could not
/// be read.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The records, oldest first.
    pub records: Vec<Record>,
    /// Records that were overwritten before they were read, or were still
    /// being written (Linux's "overrun").
    pub lost: u64,
}

/// A position in every CPU's ring: [`Cursor::read`] returns what was
/// recorded after it.
#[derive(Debug, Clone)]
pub struct Cursor {
    pos: Vec<u64>,
}

impl Cursor {
    /// The rings' heads now.
    pub fn now() -> Cursor {
        Cursor { pos: rings().iter().map(|r| r.head.load(Ordering::Acquire)).collect() }
    }

    /// Everything recorded since the cursor, and move the cursor past it.
    ///
    /// Context: may allocate.
    pub fn read(&mut self) -> Batch {
        let mut b = Batch::default();
        for (ring, from) in rings().iter().zip(self.pos.iter_mut()) {
            let head = ring.head.load(Ordering::Acquire);
            read_range(ring, *from, head, &mut b);
            *from = head;
        }
        b.records.sort_by_key(|r| r.ts_ns);
        b
    }
}

fn read_range(ring: &Ring, from: u64, head: u64, b: &mut Batch) {
    let n = ring.slots.len() as u64;
    let start = from.max(head.saturating_sub(n));
    b.lost += start - from.min(start);
    for pos in start..head {
        match read_slot(ring, pos) {
            Some(r) => b.records.push(r),
            None => b.lost += 1,
        }
    }
}

/// What the rings hold now (since the last [`clear`]), oldest first; not
/// consumed (Linux's `trace` file).
///
/// Context: may allocate.
pub fn snapshot() -> Batch {
    let mut b = Batch::default();
    let Some(rings) = RINGS.get() else { return b };
    for ring in rings.iter() {
        let head = ring.head.load(Ordering::Acquire);
        read_range(ring, ring.base.load(Ordering::Relaxed), head, &mut b);
    }
    b.records.sort_by_key(|r| r.ts_ns);
    b
}

/// Forget what the rings hold (Linux: writing to the `trace` file).
pub fn clear() {
    if let Some(rings) = RINGS.get() {
        for r in rings.iter() {
            r.base.store(r.head.load(Ordering::Acquire), Ordering::Relaxed);
        }
    }
}

/// Records written since boot, on every CPU.
pub fn recorded() -> u64 {
    RINGS.get().map_or(0, |r| r.iter().map(|r| r.head.load(Ordering::Relaxed)).sum())
}

// --- names ---

/// Entries of the task-name table (Linux's `saved_cmdlines` default, 128,
/// doubled: the suites create many threads).
const COMMS: usize = 256;
/// Longest name kept (Linux `TASK_COMM_LEN` − 1 is 15; kthread names such as
/// `kworker/u8:12-events_unbound` are longer, so keep 24).
const COMM_BYTES: usize = 24;

struct Comm {
    /// pid + 1 of the name stored, 0 while written or never.
    pid: AtomicU64,
    name: [AtomicU64; COMM_BYTES / 8],
}

static COMM_TABLE: [Comm; COMMS] =
    [const { Comm { pid: AtomicU64::new(0), name: [const { AtomicU64::new(0) }; COMM_BYTES / 8] } }; COMMS];

/// Remember `name` for `pid` for the dumps (Linux `tracing_record_cmdline`).
/// Lock-free; a racing pair of writers of one entry leaves a name that the
/// reader's check rejects.
///
/// Context: any.
pub fn save_comm(pid: u64, name: &str) {
    let e = &COMM_TABLE[pid as usize % COMMS];
    let mut buf = [0u8; COMM_BYTES];
    let mut end = name.len().min(COMM_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    buf[..end].copy_from_slice(&name.as_bytes()[..end]);
    if e.pid.load(Ordering::Relaxed) == pid + 1 {
        let same = e.name.iter().enumerate().all(|(i, w)| {
            w.load(Ordering::Relaxed) == u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        });
        if same {
            return;
        }
    }
    e.pid.store(0, Ordering::Relaxed);
    fence(Ordering::Release);
    for (i, w) in e.name.iter().enumerate() {
        w.store(u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().expect("8 bytes")), Ordering::Relaxed);
    }
    e.pid.store(pid + 1, Ordering::Release);
}

fn saved_comm(pid: u64) -> Option<String> {
    let e = &COMM_TABLE[pid as usize % COMMS];
    if e.pid.load(Ordering::Acquire) != pid + 1 {
        return None;
    }
    let mut buf = [0u8; COMM_BYTES];
    for (i, w) in e.name.iter().enumerate() {
        buf[i * 8..i * 8 + 8].copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    fence(Ordering::Acquire);
    if e.pid.load(Ordering::Relaxed) != pid + 1 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(COMM_BYTES);
    core::str::from_utf8(&buf[..len]).ok().map(|s| s.to_string())
}

static RESOLVER: spin::Once<fn(u64) -> Option<String>> = spin::Once::new();

/// Install the function that names a pid the table does not know (the
/// kthread layer's registry). Once.
pub fn set_comm_resolver(f: fn(u64) -> Option<String>) {
    RESOLVER.call_once(|| f);
}

/// The name of `pid` for a dump: the table, the resolver, else `<...>` as
/// Linux prints an unknown one.
pub fn comm(pid: u64) -> String {
    saved_comm(pid).or_else(|| RESOLVER.get().and_then(|f| f(pid))).unwrap_or_else(|| "<...>".to_string())
}

static INTERNED: SpinLock<Vec<&'static str>> = SpinLock::new(Vec::new());

/// A `'static` copy of `s` for records and histogram keys: equal strings
/// share one copy, so a name used again (a queue re-created, an IRQ
/// requested again) costs nothing more.
///
/// Context: may allocate (not in interrupt context).
pub fn intern(s: &str) -> &'static str {
    let mut v = INTERNED.lock();
    if let Some(x) = v.iter().find(|x| **x == s) {
        return x;
    }
    let x: &'static str = Box::leak(s.to_string().into_boxed_str());
    v.push(x);
    x
}

// --- formats ---

/// Linux's softirq vector names (`softirq_to_name`).
pub const SOFTIRQ_NAMES: [&str; 10] =
    ["HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU"];

/// `req_cpu`/`cpu` value of an item not tied to a CPU (Linux
/// `WORK_CPU_UNBOUND`, which is `NR_CPUS`).
pub const WORK_CPU_UNBOUND: u64 = MAX_CPUS as u64;

/// The `reason` of a writeback event (Linux `wb_reason` names).
pub const WB_REASONS: [&str; 5] = ["background", "vmscan", "sync", "periodic", "fs_free_space"];

/// A field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A number.
    Num(u64),
    /// A signed number.
    Int(i64),
    /// An address (printed in hex).
    Addr(u64),
    /// Text.
    Str(String),
}

fn vec_name(v: u64) -> &'static str {
    SOFTIRQ_NAMES.get(v as usize).copied().unwrap_or("?")
}

fn state_str(c: u64) -> String {
    char::from_u32(c as u32).unwrap_or('?').to_string()
}

fn rwbs(code: u64) -> String {
    char::from_u32((code & 0xff) as u32).unwrap_or('?').to_string()
}

impl Record {
    /// The event's fields by name (Linux's field names), in Linux's order.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        use Event::*;
        use Value::*;
        let a = self.args;
        match self.event {
            WorkqueueQueueWork => alloc::vec![
                ("work", Addr(a[0])),
                ("function", Str(self.s0.to_string())),
                ("workqueue", Str(self.s1.to_string())),
                ("req_cpu", Num(a[1])),
                ("cpu", Num(a[2])),
            ],
            WorkqueueActivateWork | WorkqueueExecuteStart | WorkqueueExecuteEnd => {
                alloc::vec![("work", Addr(a[0])), ("function", Str(self.s0.to_string()))]
            }
            SoftirqRaise | SoftirqEntry | SoftirqExit => {
                alloc::vec![("vec", Num(a[0])), ("action", Str(vec_name(a[0]).to_string()))]
            }
            IrqHandlerEntry => alloc::vec![("irq", Num(a[0])), ("name", Str(self.s0.to_string()))],
            IrqHandlerExit => alloc::vec![("irq", Num(a[0])), ("ret", Num(a[1]))],
            SchedSwitch => alloc::vec![
                ("prev_comm", Str(comm(a[0]))),
                ("prev_pid", Num(a[0])),
                ("prev_prio", Num(a[1])),
                ("prev_state", Str(state_str(a[2]))),
                ("next_comm", Str(comm(a[3]))),
                ("next_pid", Num(a[3])),
                ("next_prio", Num(a[4])),
            ],
            SchedWakeup => alloc::vec![
                ("comm", Str(comm(a[0]))),
                ("pid", Num(a[0])),
                ("prio", Num(a[1])),
                ("target_cpu", Num(a[2])),
            ],
            TaskNewtask => alloc::vec![("pid", Num(a[0])), ("comm", Str(comm(a[0])))],
            SchedKthreadStop => alloc::vec![("comm", Str(comm(a[0]))), ("pid", Num(a[0]))],
            SchedKthreadStopRet => alloc::vec![("ret", Int(a[0] as i64))],
            BlockRqIssue => alloc::vec![
                ("dev", Str(self.s0.to_string())),
                ("rwbs", Str(rwbs(a[3]))),
                ("bytes", Num(a[2])),
                ("sector", Num(a[0])),
                ("nr_sector", Num(a[1])),
                ("comm", Str(comm(self.pid))),
            ],
            BlockRqComplete => alloc::vec![
                ("dev", Str(self.s0.to_string())),
                ("rwbs", Str(rwbs(a[3]))),
                ("sector", Num(a[0])),
                ("nr_sector", Num(a[1])),
                ("error", Int(a[4] as i64)),
            ],
            WritebackStart | WritebackWritten => alloc::vec![
                ("name", Str(self.s0.to_string())),
                ("nr_pages", Num(a[0])),
                ("sync_mode", Num(a[1])),
                ("for_kupdate", Num(a[2])),
                ("for_background", Num(a[3])),
                ("reason", Str(WB_REASONS.get(a[4] as usize).copied().unwrap_or("?").to_string())),
            ],
            MmVmscanKswapdWake => alloc::vec![("nid", Num(a[0])), ("order", Num(a[1]))],
            MmVmscanKswapdSleep => alloc::vec![("nid", Num(a[0]))],
            MmVmscanDirectReclaimBegin => {
                alloc::vec![("order", Num(a[0])), ("gfp_flags", Str("GFP_KERNEL".to_string()))]
            }
            MmVmscanDirectReclaimEnd => alloc::vec![("nr_reclaimed", Num(a[0]))],
        }
    }

    /// The event's own text (what follows `name: ` in a trace line), in
    /// Linux's `TP_printk` layout.
    pub fn detail(&self) -> String {
        use Event::*;
        let a = self.args;
        match self.event {
            WorkqueueQueueWork => format!(
                "work struct={:#x} function={} workqueue={} req_cpu={} cpu={}",
                a[0], self.s0, self.s1, a[1], a[2]
            ),
            WorkqueueActivateWork => format!("work struct {:#x}", a[0]),
            WorkqueueExecuteStart | WorkqueueExecuteEnd => format!("work struct {:#x}: function {}", a[0], self.s0),
            SoftirqRaise | SoftirqEntry | SoftirqExit => format!("vec={} [action={}]", a[0], vec_name(a[0])),
            IrqHandlerEntry => format!("irq={} name={}", a[0], self.s0),
            IrqHandlerExit => format!("irq={} ret={}", a[0], if a[1] != 0 { "handled" } else { "unhandled" }),
            SchedSwitch => format!(
                "prev_comm={} prev_pid={} prev_prio={} prev_state={} ==> next_comm={} next_pid={} next_prio={}",
                comm(a[0]),
                a[0],
                a[1],
                state_str(a[2]),
                comm(a[3]),
                a[3],
                a[4]
            ),
            SchedWakeup => format!("comm={} pid={} prio={} target_cpu={:03}", comm(a[0]), a[0], a[1], a[2]),
            TaskNewtask => format!("pid={} comm={} clone_flags=0 oom_score_adj=0", a[0], comm(a[0])),
            SchedKthreadStop => format!("comm={} pid={}", comm(a[0]), a[0]),
            SchedKthreadStopRet => format!("ret={}", a[0] as i64),
            BlockRqIssue => {
                format!("{} {} {} () {} + {} [{}]", self.s0, rwbs(a[3]), a[2], a[0], a[1], comm(self.pid))
            }
            BlockRqComplete => format!("{} {} () {} + {} [{}]", self.s0, rwbs(a[3]), a[0], a[1], a[4] as i64),
            WritebackStart | WritebackWritten => format!(
                "bdi {}: sb_dev 0:0 nr_pages={} sync_mode={} kupdate={} range_cyclic=1 background={} reason={}",
                self.s0,
                a[0],
                a[1],
                a[2],
                a[3],
                WB_REASONS.get(a[4] as usize).copied().unwrap_or("?")
            ),
            MmVmscanKswapdWake => format!("nid={} order={}", a[0], a[1]),
            MmVmscanKswapdSleep => format!("nid={}", a[0]),
            MmVmscanDirectReclaimBegin => format!("order={} gfp_flags=GFP_KERNEL", a[0]),
            MmVmscanDirectReclaimEnd => format!("nr_reclaimed={}", a[0]),
        }
    }

    /// Linux's five latency columns: interrupts off (`d`), need-resched (not
    /// recorded: `.`), hard/soft interrupt (`h`/`s`/`H` for both),
    /// preemption depth (hex, `.` for 0), migrate-disable (not recorded).
    pub fn flags_str(&self) -> String {
        let f = self.flags as u64;
        let irq = match (f & F_HARDIRQ != 0, f & F_SOFTIRQ != 0) {
            (true, true) => 'H',
            (true, false) => 'h',
            (false, true) => 's',
            _ => '.',
        };
        let depth = (f >> 4) & 0xf;
        let mut s = String::new();
        s.push(if f & F_IRQS_OFF != 0 { 'd' } else { '.' });
        s.push('.');
        s.push(irq);
        s.push(if depth == 0 { '.' } else { char::from_digit(depth as u32, 16).unwrap_or('f') });
        s.push('.');
        s
    }

    /// The record as one line of Linux's trace format.
    pub fn text_line(&self) -> String {
        format!(
            "{:>16}-{:<7} [{:03}] {} {:>5}.{:06}: {}: {}",
            comm(self.pid),
            self.pid,
            self.cpu,
            self.flags_str(),
            self.ts_ns / 1_000_000_000,
            self.ts_ns % 1_000_000_000 / 1000,
            self.event.name(),
            self.detail()
        )
    }

    /// The record as one JSON object.
    pub fn json(&self) -> String {
        let mut s = format!(
            "{{\"ts_ns\":{},\"cpu\":{},\"pid\":{},\"comm\":{},\"flags\":\"{}\",\"system\":\"{}\",\"event\":\"{}\",\"fields\":{{",
            self.ts_ns,
            self.cpu,
            self.pid,
            json_str(&comm(self.pid)),
            self.flags_str(),
            self.event.system(),
            self.event.name()
        );
        for (i, (k, v)) in self.fields().into_iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = match v {
                Value::Num(n) => write!(s, "\"{k}\":{n}"),
                Value::Int(n) => write!(s, "\"{k}\":{n}"),
                Value::Addr(n) => write!(s, "\"{k}\":\"{n:#x}\""),
                Value::Str(t) => write!(s, "\"{k}\":{}", json_str(&t)),
            };
        }
        s.push_str("}}");
        s
    }
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The header and lines of Linux's `trace` file for `b`.
pub fn text(b: &Batch) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# tracer: nop");
    let _ = writeln!(s, "#");
    let _ = writeln!(
        s,
        "# entries-in-buffer/entries-written: {}/{}   #P:{}",
        b.records.len(),
        recorded(),
        port().cpu_count()
    );
    let _ = writeln!(s, "# lost: {}", b.lost);
    let _ = writeln!(s, "#");
    let _ = writeln!(s, "#                                _-----=> irqs-off");
    let _ = writeln!(s, "#                               / _----=> need-resched");
    let _ = writeln!(s, "#                              | / _---=> hardirq/softirq");
    let _ = writeln!(s, "#                              || / _--=> preempt-depth");
    let _ = writeln!(s, "#                              ||| / _-=> migrate-disable");
    let _ = writeln!(s, "#                              |||| /     delay");
    let _ = writeln!(s, "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION");
    let _ = writeln!(s, "#              | |         |   |||||     |         |");
    for r in &b.records {
        s.push_str(&r.text_line());
        s.push('\n');
    }
    s
}

/// `b` as a JSON object: `{"recorded":N,"lost":N,"events":[...]}`.
pub fn json(b: &Batch) -> String {
    let mut s = format!("{{\"recorded\":{},\"lost\":{},\"events\":[", recorded(), b.lost);
    for (i, r) in b.records.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&r.json());
    }
    s.push_str("]}");
    s
}

// --- the boot parameters ---

/// Parse Linux's `trace_event=` list (`set_event` syntax): comma-separated
/// `system:event`, `system:*`, `*:event`, `event`, `system` (a whole system
/// when it names no event), `*:*` or `all`; a leading `!` removes. Returns
/// the event bits; an entry that matches nothing is an error naming it.
pub fn parse_events(spec: &str) -> Result<u64, String> {
    let mut mask = 0u64;
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (neg, item) = match item.strip_prefix('!') {
            Some(x) => (true, x),
            None => (false, item),
        };
        let (sys, ev) = match item.split_once(':') {
            Some((s, e)) => (s, e),
            None if item == "all" => ("*", "*"),
            None if Event::ALL.iter().any(|e| e.name() == item) => ("*", item),
            None => (item, "*"),
        };
        let m = Event::ALL
            .iter()
            .filter(|e| (sys == "*" || e.system() == sys) && (ev == "*" || e.name() == ev))
            .fold(0, |m, e| m | e.bit());
        if m == 0 {
            return Err(format!("trace_event: no event matches '{item}'"));
        }
        if neg {
            mask &= !m;
        } else {
            mask |= m;
        }
    }
    Ok(mask)
}

/// Parse a size with an optional `K`/`M`/`G` suffix (Linux's `memparse`, as
/// `trace_buf_size=` takes it).
pub fn parse_size(v: &str) -> Result<usize, String> {
    let (num, mul) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 1 << 10),
        Some(b'm' | b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("bad size '{v}' (bytes, with an optional K, M or G)"))
}

/// The names of the events in `mask`, `system:event`, comma-separated.
pub fn event_list(mask: u64) -> String {
    let mut v = Vec::new();
    for e in Event::ALL {
        if mask & e.bit() != 0 {
            v.push(format!("{}:{}", e.system(), e.name()));
        }
    }
    v.join(",")
}
