//! Built-in latency histograms: what Linux needs bpftrace's `hist()` for.
//!
//! Each histogram is keyed by a kind ([`Kind`]), a number (softirq vector,
//! IRQ line; 0 for work functions) and a name (the work function's, the
//! vector's, the IRQ action's). Its buckets are powers of two of
//! nanoseconds: bucket 0 holds 0, bucket `i ≥ 1` holds `[2^(i-1), 2^i)`, as
//! bpftrace prints them. Each CPU has its own table (open addressing,
//! claimed with one compare-and-swap, counted with relaxed adds), so
//! recording takes no lock and nesting writers are safe; [`snapshot`] merges
//! the CPUs (and any duplicate entries two racing writers made) on read.
//!
//! Off by default; a kind is recorded while its bit is in
//! [`super::MASK`] ([`enable`], boot parameter `latency_hist=`).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::MASK;
use crate::{MAX_CPUS, port};

/// [`super::MASK`] bit: work functions' queue→start latency and run time.
pub const HIST_WORKQUEUE: u64 = 1 << 56;
/// [`super::MASK`] bit: softirq vectors' run time and raise→entry latency.
pub const HIST_SOFTIRQ: u64 = 1 << 57;
/// [`super::MASK`] bit: IRQ handlers' run time.
pub const HIST_IRQ: u64 = 1 << 58;
/// Every histogram bit.
pub const HIST_ALL: u64 = HIST_WORKQUEUE | HIST_SOFTIRQ | HIST_IRQ;

/// Buckets per histogram: 0, then powers of two up to 2^46 ns (about 19
/// hours); larger values land in the last one.
pub const BUCKETS: usize = 48;

/// Histograms per CPU (distinct keys); a key that finds no room is counted
/// in [`dropped`].
pub const KEYS_PER_CPU: usize = 128;

/// What a histogram measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A work item's queueing → its function starting.
    WorkQueueLatency = 1,
    /// A work function's run time.
    WorkRunTime,
    /// A softirq vector's handler run time.
    SoftirqRunTime,
    /// A softirq vector's first raise → its handler starting.
    SoftirqLatency,
    /// An IRQ action's hard handler run time.
    IrqHandlerTime,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 5] =
        [Kind::WorkQueueLatency, Kind::WorkRunTime, Kind::SoftirqRunTime, Kind::SoftirqLatency, Kind::IrqHandlerTime];

    /// Its name in dumps (bpftrace map names).
    pub fn name(self) -> &'static str {
        match self {
            Kind::WorkQueueLatency => "work_queue_latency_ns",
            Kind::WorkRunTime => "work_run_ns",
            Kind::SoftirqRunTime => "softirq_run_ns",
            Kind::SoftirqLatency => "softirq_raise_latency_ns",
            Kind::IrqHandlerTime => "irq_handler_ns",
        }
    }

    fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| *k as u8 == v)
    }

    /// The [`super::MASK`] bit that turns it on.
    pub fn bit(self) -> u64 {
        match self {
            Kind::WorkQueueLatency | Kind::WorkRunTime => HIST_WORKQUEUE,
            Kind::SoftirqRunTime | Kind::SoftirqLatency => HIST_SOFTIRQ,
            Kind::IrqHandlerTime => HIST_IRQ,
        }
    }
}

/// One histogram of one CPU.
struct Entry {
    /// 0 free, 1 being filled, 2 ready.
    state: AtomicUsize,
    /// kind | id << 8.
    key: AtomicU64,
    name_ptr: AtomicUsize,
    name_len: AtomicUsize,
    count: AtomicU64,
    sum: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Entry {
    fn new() -> Self {
        Entry {
            state: AtomicUsize::new(0),
            key: AtomicU64::new(0),
            name_ptr: AtomicUsize::new(0),
            name_len: AtomicUsize::new(0),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }
}

static TABLES: spin::Once<Box<[Box<[Entry]>]>> = spin::Once::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Heap bytes of the per-CPU tables (0 before the first [`enable`]); part
/// of [`super::held_bytes`].
pub(crate) fn held_bytes() -> u64 {
    TABLES.get().map_or(0, |t| {
        let entries: usize = t.iter().map(|c| c.len()).sum();
        (t.len() * core::mem::size_of::<Box<[Entry]>>() + entries * core::mem::size_of::<Entry>()) as u64
    })
}

/// Turn on the histograms in `bits` ([`HIST_WORKQUEUE`] ...), allocating
/// the per-CPU tables first if needed.
///
/// Context: may allocate (not in interrupt context).
pub fn enable(bits: u64) {
    if bits & HIST_ALL != 0 {
        TABLES.call_once(|| {
            (0..port().cpu_count().clamp(1, MAX_CPUS))
                .map(|_| (0..KEYS_PER_CPU).map(|_| Entry::new()).collect())
                .collect()
        });
    }
    MASK.fetch_or(bits & HIST_ALL, Ordering::SeqCst);
}

/// Turn off the histograms in `bits`.
pub fn disable(bits: u64) {
    MASK.fetch_and(!(bits & HIST_ALL), Ordering::SeqCst);
}

/// The histogram bits on now.
pub fn enabled() -> u64 {
    MASK.load(Ordering::Relaxed) & HIST_ALL
}

/// Values that found no free histogram on their CPU.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The bucket of `ns`.
#[inline]
pub fn bucket(ns: u64) -> usize {
    ((u64::BITS - ns.leading_zeros()) as usize).min(BUCKETS - 1)
}

/// The lowest value of bucket `i`.
pub fn bucket_low(i: usize) -> u64 {
    if i == 0 { 0 } else { 1 << (i - 1) }
}

/// Add `ns` to the histogram (`kind`, `id`, `name`) of the calling CPU. Call
/// it when [`super::any`]`(kind.bit())` says so; out of line.
///
/// Context: any.
#[cold]
#[inline(never)]
pub fn record(kind: Kind, id: u32, name: &'static str, ns: u64) {
    let Some(tables) = TABLES.get() else { return };
    let Some(t) = tables.get(port().cpu_id()) else { return };
    let key = kind as u64 | (id as u64) << 8;
    let ptr = name.as_ptr() as usize;
    let h = (key ^ (ptr as u64).rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    for i in 0..KEYS_PER_CPU {
        let e = &t[(h as usize + i) % KEYS_PER_CPU];
        let mut st = e.state.load(Ordering::Acquire);
        if st == 0 {
            if e.state.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                e.key.store(key, Ordering::Relaxed);
                e.name_ptr.store(ptr, Ordering::Relaxed);
                e.name_len.store(name.len(), Ordering::Relaxed);
                e.state.store(2, Ordering::Release);
                st = 2;
            } else {
                st = e.state.load(Ordering::Acquire);
            }
        }
        // An entry still being filled by a nested writer is skipped: the
        // value goes to another entry with the same key, merged on read.
        if st == 2
            && e.key.load(Ordering::Relaxed) == key
            && e.name_ptr.load(Ordering::Relaxed) == ptr
            && e.name_len.load(Ordering::Relaxed) == name.len()
        {
            e.buckets[bucket(ns)].fetch_add(1, Ordering::Relaxed);
            e.count.fetch_add(1, Ordering::Relaxed);
            e.sum.fetch_add(ns, Ordering::Relaxed);
            return;
        }
    }
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// One histogram, merged over the CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hist {
    /// What it measures.
    pub kind: Kind,
    /// Vector or IRQ number (0 for work functions).
    pub id: u32,
    /// The work function, vector or IRQ action.
    pub name: String,
    /// Values recorded.
    pub count: u64,
    /// Their sum in ns.
    pub sum_ns: u64,
    /// Bucket counts (see [`bucket`]).
    pub buckets: [u64; BUCKETS],
}

impl Hist {
    /// The count of this histogram minus `before`'s (a test's own events).
    pub fn minus(&self, before: Option<&Hist>) -> Hist {
        let mut h = self.clone();
        if let Some(b) = before {
            h.count -= b.count.min(h.count);
            h.sum_ns -= b.sum_ns.min(h.sum_ns);
            for (x, y) in h.buckets.iter_mut().zip(b.buckets.iter()) {
                *x -= (*y).min(*x);
            }
        }
        h
    }
}

/// Every histogram, merged over CPUs, sorted by kind, id and name.
///
/// Context: may allocate.
pub fn snapshot() -> Vec<Hist> {
    let mut out: Vec<Hist> = Vec::new();
    let Some(tables) = TABLES.get() else { return out };
    for t in tables.iter() {
        for e in t.iter() {
            if e.state.load(Ordering::Acquire) != 2 {
                continue;
            }
            let key = e.key.load(Ordering::Relaxed);
            let Some(kind) = Kind::from_u8(key as u8) else { continue };
            let id = (key >> 8) as u32;
            // SAFETY: state 2 was stored (release) after the pointer and
            // length of a `&'static str` given to `record`, and they never
            // change afterwards.
            let name = unsafe {
                core::str::from_utf8_unchecked(core::slice::from_raw_parts(
                    e.name_ptr.load(Ordering::Relaxed) as *const u8,
                    e.name_len.load(Ordering::Relaxed),
                ))
            };
            let i = match out.iter().position(|h| h.kind == kind && h.id == id && h.name == name) {
                Some(i) => i,
                None => {
                    out.push(Hist { kind, id, name: name.to_string(), count: 0, sum_ns: 0, buckets: [0; BUCKETS] });
                    out.len() - 1
                }
            };
            let h = &mut out[i];
            h.count += e.count.load(Ordering::Relaxed);
            h.sum_ns += e.sum.load(Ordering::Relaxed);
            for (x, b) in h.buckets.iter_mut().zip(e.buckets.iter()) {
                *x += b.load(Ordering::Relaxed);
            }
        }
    }
    out.sort_by(|a, b| (a.kind, a.id, &a.name).cmp(&(b.kind, b.id, &b.name)));
    out
}

/// Find (`kind`, `name`) in a snapshot.
pub fn find<'a>(hs: &'a [Hist], kind: Kind, name: &str) -> Option<&'a Hist> {
    hs.iter().find(|h| h.kind == kind && h.name == name)
}

/// Zero every histogram.
pub fn reset() {
    if let Some(tables) = TABLES.get() {
        for t in tables.iter() {
            for e in t.iter() {
                e.count.store(0, Ordering::Relaxed);
                e.sum.store(0, Ordering::Relaxed);
                for b in &e.buckets {
                    b.store(0, Ordering::Relaxed);
                }
            }
        }
    }
}

fn human(v: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (d, u) in UNITS {
        if v >= d && v.is_multiple_of(d) {
            return format!("{}{u}", v / d);
        }
    }
    v.to_string()
}

/// Width of the longest bar, as bpftrace draws it.
const BAR: u64 = 52;

/// `h` in bpftrace's `hist()` layout: a `@name[key]:` line, then one line per
/// bucket from the first to the last non-empty one, with a bar of `@`.
pub fn text_one(h: &Hist) -> String {
    let mut s = format!("@{}[{}]: count={} avg_ns={}\n", h.kind.name(), h.name, h.count, h.sum_ns / h.count.max(1));
    let Some(first) = h.buckets.iter().position(|&c| c != 0) else { return s };
    let last = h.buckets.iter().rposition(|&c| c != 0).unwrap_or(first);
    let max = h.buckets.iter().copied().max().unwrap_or(1).max(1);
    for i in first..=last {
        let c = h.buckets[i];
        let range = if i == 0 {
            "[0]".to_string()
        } else if i == 1 {
            "[1]".to_string()
        } else if i == BUCKETS - 1 {
            format!("[{}, ...)", human(bucket_low(i)))
        } else {
            format!("[{}, {})", human(bucket_low(i)), human(bucket_low(i + 1)))
        };
        let n = (c * BAR).div_ceil(max) as usize;
        let _ = writeln!(s, "{range:<20}{c:>8} |{:<52}|", "@".repeat(n));
    }
    s
}

/// Every histogram as text, separated by blank lines.
pub fn text(hs: &[Hist]) -> String {
    let mut s = String::new();
    for h in hs {
        s.push_str(&text_one(h));
        s.push('\n');
    }
    s
}

/// `h` as one JSON object: kind, id, name, count, sum, and the non-empty
/// buckets as `[low_ns, count]` pairs.
pub fn json_one(h: &Hist) -> String {
    let mut s = format!(
        "{{\"kind\":\"{}\",\"id\":{},\"name\":{},\"count\":{},\"sum_ns\":{},\"buckets\":[",
        h.kind.name(),
        h.id,
        super::json_str(&h.name),
        h.count,
        h.sum_ns
    );
    let mut first = true;
    for (i, &c) in h.buckets.iter().enumerate() {
        if c != 0 {
            if !first {
                s.push(',');
            }
            first = false;
            let _ = write!(s, "[{},{}]", bucket_low(i), c);
        }
    }
    s.push_str("]}");
    s
}

/// Every histogram as a JSON array.
pub fn json(hs: &[Hist]) -> String {
    let mut s = String::from("[");
    for (i, h) in hs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&json_one(h));
    }
    s.push(']');
    s
}

/// Parse `latency_hist=`: `on`/`all`, `off`/`none`, or a comma list of
/// `workqueue`, `softirq`, `irq`. Returns the bits.
pub fn parse(spec: &str) -> Result<u64, String> {
    let mut bits = 0;
    for w in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        bits |= match w {
            "on" | "all" | "1" => HIST_ALL,
            "off" | "none" | "0" => 0,
            "workqueue" => HIST_WORKQUEUE,
            "softirq" => HIST_SOFTIRQ,
            "irq" => HIST_IRQ,
            _ => return Err(format!("latency_hist: unknown '{w}' (on, off, workqueue, softirq, irq)")),
        };
    }
    Ok(bits)
}
