//! The writeback flusher: per block device, work on the unbound
//! `MEM_RECLAIM` queue `writeback` that writes dirty pages back, and the
//! throttling of writers that dirty too fast. Linux: `fs/fs-writeback.c`
//! (`wb_workfn`, `wb_do_writeback`, `wb_check_old_data_flush`,
//! `wb_check_background_flush`), `mm/backing-dev.c` (`bdi_wq`),
//! `mm/page-writeback.c` (`balance_dirty_pages`, the `vm.dirty_*`
//! settings).
//!
//! # The settings (Linux's names and defaults)
//! | name | default | meaning |
//! |---|---|---|
//! | `dirty_background_ratio` | 10 | % of dirtyable memory above which the flusher starts on its own |
//! | `dirty_background_bytes` | 0 | the same in bytes; when not 0 it replaces the ratio |
//! | `dirty_ratio` | 20 | % above which writers are throttled hard |
//! | `dirty_bytes` | 0 | the same in bytes; when not 0 it replaces the ratio |
//! | `dirty_expire_centisecs` | 3000 | a page dirty this long is written by the periodic pass |
//! | `dirty_writeback_centisecs` | 500 | period of that pass (0: no periodic pass) |
//!
//! Setting a `_bytes` value clears its ratio's effect and setting the ratio
//! clears the bytes, as in Linux. Dirtyable memory is free pages plus page
//! cache pages (Linux `global_dirtyable_memory` without highmem). The
//! background threshold is capped at half the hard one.
//!
//! # The flusher
//! One [`Bdi`] per block device (Linux `bdi_writeback`), shared by the
//! device's caches. Its work item runs on the `writeback` queue (unbound,
//! `MEM_RECLAIM`, so its rescuer writes back even when no worker can be
//! made under memory pressure) and the worker is described as
//! `flush-<serial>` (Linux `flush-<major>:<minor>`). A pass:
//! 1. background: while dirty pages are above the background threshold
//!    (or once when asked, by reclaim), write back oldest-first;
//! 2. periodic: write back every page dirty since `dirty_expire` ago or
//!    longer;
//! 3. re-arm after `dirty_writeback_centisecs` while dirty pages remain.
//!
//! The first page dirtied on an idle device arms the periodic pass.
//!
//! # Throttling (`balance_dirty_pages`)
//! After every 32 pages a writer dirties: above the background threshold
//! the flusher is kicked; up to the midpoint of the two thresholds the
//! writer runs free; beyond it, it sleeps a pause that grows linearly to
//! `MAX_PAUSE` (200 ms) at the hard threshold, and above the hard threshold
//! it keeps pausing until the dirty count is back under it. Readers are
//! never throttled. Linux computes the pause from a rate estimate
//! (`pos_ratio`, `dirty_ratelimit`); the linear pause here keeps its shape
//! (free run, proportional pause, hard limit) without the rate estimator.

use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kport::sync::{Mutex, SpinLock, WaitQueue};
use kport::{EINVAL, ENOENT, Error, Result, port};
use workqueue::{DelayedWork, Workqueue, WqFlags};

use crate::block::BlockDevice;
use crate::pagecache::{COUNTERS, PAGE_SIZE, PageCache, WbSelect};

/// Longest pause of a throttled writer (Linux `MAX_PAUSE`, HZ/5).
pub const MAX_PAUSE_NS: u64 = 200_000_000;
/// Most pages a background pass writes before it re-checks the threshold
/// (Linux `MAX_WRITEBACK_PAGES`, 4 MiB).
pub const MAX_WRITEBACK_PAGES: usize = 1024;

/// A named setting.
struct Tunable {
    name: &'static str,
    default: u64,
    max: u64,
    value: AtomicU64,
}

const fn tunable(name: &'static str, default: u64, max: u64) -> Tunable {
    Tunable { name, default, max, value: AtomicU64::new(default) }
}

static TUNABLES: [Tunable; 6] = [
    tunable("dirty_background_ratio", 10, 100),
    tunable("dirty_background_bytes", 0, u64::MAX),
    tunable("dirty_ratio", 20, 100),
    tunable("dirty_bytes", 0, u64::MAX),
    tunable("dirty_expire_centisecs", 3000, u32::MAX as u64),
    tunable("dirty_writeback_centisecs", 500, u32::MAX as u64),
];

const BG_RATIO: usize = 0;
const BG_BYTES: usize = 1;
const RATIO: usize = 2;
const BYTES: usize = 3;
const EXPIRE: usize = 4;
const INTERVAL: usize = 5;

fn get_idx(i: usize) -> u64 {
    TUNABLES[i].value.load(Ordering::Relaxed)
}

/// The names of the settings.
pub fn tunable_names() -> impl Iterator<Item = &'static str> {
    TUNABLES.iter().map(|t| t.name)
}

/// The value of setting `name`.
///
/// Return: `ENOENT` for an unknown name.
pub fn get(name: &str) -> Result<u64> {
    TUNABLES.iter().find(|t| t.name == name).map(|t| t.value.load(Ordering::Relaxed)).ok_or(Error::new(ENOENT))
}

/// Set `name` to `value` (Linux `sysctl vm.<name>=<value>`).
///
/// Return: `ENOENT` for an unknown name; `EINVAL` for a ratio above 100 or
/// a `_bytes` value below two pages (Linux's minimum for `dirty_bytes`).
pub fn set(name: &str, value: u64) -> Result<()> {
    let i = TUNABLES.iter().position(|t| t.name == name).ok_or(Error::new(ENOENT))?;
    let t = &TUNABLES[i];
    let bytes = i == BG_BYTES || i == BYTES;
    if value > t.max || (bytes && value != 0 && value < 2 * PAGE_SIZE as u64) {
        return Err(Error::new(EINVAL));
    }
    t.value.store(value, Ordering::Relaxed);
    // A ratio and its bytes exclude each other.
    match i {
        BG_RATIO => TUNABLES[BG_BYTES].value.store(0, Ordering::Relaxed),
        BG_BYTES if value > 0 => TUNABLES[BG_RATIO].value.store(0, Ordering::Relaxed),
        RATIO => TUNABLES[BYTES].value.store(0, Ordering::Relaxed),
        BYTES if value > 0 => TUNABLES[RATIO].value.store(0, Ordering::Relaxed),
        _ => {}
    }
    if i == INTERVAL || i == EXPIRE || i == BG_BYTES || i == BG_RATIO {
        // New timing or threshold: every device re-evaluates now.
        for b in BDIS.lock().iter() {
            b.kick(false);
        }
    }
    Ok(())
}

fn sysctl_get(key: usize) -> i64 {
    i64::try_from(get_idx(key)).unwrap_or(i64::MAX)
}

fn sysctl_set(key: usize, v: i64) -> Result<()> {
    set(TUNABLES[key].name, u64::try_from(v).map_err(|_| Error::new(EINVAL))?)
}

const fn dirty_sysctl(name: &'static str, key: usize) -> kport::sysctl::Sysctl {
    kport::sysctl::Sysctl { name, kind: kport::sysctl::Kind::Fn { key, get: sysctl_get, set: sysctl_set } }
}

static SYSCTLS: [kport::sysctl::Sysctl; 6] = [
    dirty_sysctl("vm.dirty_background_ratio", BG_RATIO),
    dirty_sysctl("vm.dirty_background_bytes", BG_BYTES),
    dirty_sysctl("vm.dirty_ratio", RATIO),
    dirty_sysctl("vm.dirty_bytes", BYTES),
    dirty_sysctl("vm.dirty_expire_centisecs", EXPIRE),
    dirty_sysctl("vm.dirty_writeback_centisecs", INTERVAL),
];

/// Put the six `vm.dirty_*` settings in the [`kport::sysctl`] table
/// (`drivers::vmscan::init` does it).
pub fn register_sysctls() {
    kport::sysctl::register(&SYSCTLS);
}

/// Put every setting back to Linux's default.
pub fn reset_defaults() {
    for t in &TUNABLES {
        t.value.store(t.default, Ordering::Relaxed);
    }
}

/// The thresholds now, in pages: `(background, hard)` (Linux
/// `global_dirty_limits`).
pub fn dirty_limits() -> (u64, u64) {
    let dirtyable = if kport::mm::active() {
        kport::mm::free_pages() + COUNTERS.file.load(Ordering::Relaxed)
    } else {
        // No frame counters (the host port): nothing to size against.
        u64::MAX / 200
    };
    let page = PAGE_SIZE as u64;
    let hard = match get_idx(BYTES) {
        0 => dirtyable * get_idx(RATIO) / 100,
        b => b.div_ceil(page),
    };
    let mut bg = match get_idx(BG_BYTES) {
        0 => dirtyable * get_idx(BG_RATIO) / 100,
        b => b.div_ceil(page),
    };
    if bg >= hard {
        bg = hard / 2;
    }
    (bg, hard.max(1))
}

/// Dirty pages counted against the thresholds (dirty plus under
/// writeback, as Linux's `nr_reclaimable + nr_writeback`).
pub fn global_dirty() -> u64 {
    COUNTERS.dirty.load(Ordering::Relaxed) + COUNTERS.writeback.load(Ordering::Relaxed)
}

/// Counters of the flushers and the throttle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WbStats {
    /// Flusher passes run.
    pub passes: u64,
    /// Background passes (threshold or reclaim).
    pub background: u64,
    /// Pages written by periodic (expiry) passes.
    pub expired_written: u64,
    /// Pages written by background passes.
    pub background_written: u64,
    /// Pauses of throttled writers.
    pub throttled: u64,
    /// Time writers spent throttled (ns).
    pub throttled_ns: u64,
}

static PASSES: AtomicU64 = AtomicU64::new(0);
static BACKGROUND: AtomicU64 = AtomicU64::new(0);
static EXPIRED_WRITTEN: AtomicU64 = AtomicU64::new(0);
static BACKGROUND_WRITTEN: AtomicU64 = AtomicU64::new(0);
static THROTTLED: AtomicU64 = AtomicU64::new(0);
static THROTTLED_NS: AtomicU64 = AtomicU64::new(0);
/// Throttled writers wait here; writeback completions wake them.
static DIRTY_WAIT: WaitQueue = WaitQueue::new();

/// The counters now.
pub fn stats() -> WbStats {
    WbStats {
        passes: PASSES.load(Ordering::Relaxed),
        background: BACKGROUND.load(Ordering::Relaxed),
        expired_written: EXPIRED_WRITTEN.load(Ordering::Relaxed),
        background_written: BACKGROUND_WRITTEN.load(Ordering::Relaxed),
        throttled: THROTTLED.load(Ordering::Relaxed),
        throttled_ns: THROTTLED_NS.load(Ordering::Relaxed),
    }
}

/// One device's writeback state (Linux `bdi_writeback`).
pub struct Bdi {
    name: String,
    /// I: its name, made `'static` for trace records.
    trace_name: &'static str,
    /// Its caches (Linux: the device's dirty inodes).
    caches: SpinLock<Vec<Weak<PageCache>>>,
    dwork: DelayedWork,
    /// A background pass was asked for (by reclaim or the throttle).
    want_background: AtomicBool,
    /// A: pages this device's flusher wrote.
    written: AtomicU64,
}

static BDIS: SpinLock<Vec<Arc<Bdi>>> = SpinLock::new(Vec::new());
/// Serializes the making of the queue.
static WQ_MAKE: Mutex<()> = Mutex::new(());
static WQ: spin::Once<Workqueue> = spin::Once::new();

/// The `writeback` queue (unbound, `MEM_RECLAIM`), made on first use.
///
/// Context: may sleep.
fn writeback_wq() -> Result<&'static Workqueue> {
    if let Some(wq) = WQ.get() {
        return Ok(wq);
    }
    let _g = WQ_MAKE.lock();
    if let Some(wq) = WQ.get() {
        return Ok(wq);
    }
    let wq = Workqueue::new("writeback", WqFlags::UNBOUND | WqFlags::MEM_RECLAIM, 0)?;
    Ok(WQ.call_once(|| wq))
}

/// The `writeback` queue, once made.
pub fn queue() -> Option<&'static Workqueue> {
    WQ.get()
}

/// The writeback state of `dev`, made on first use.
///
/// Return: `ENOMEM` when the `writeback` queue cannot be made.
///
/// Context: may sleep.
pub fn bdi_of(dev: &Arc<BlockDevice>) -> Result<Arc<Bdi>> {
    kport::might_sleep();
    let serial = dev.info().serial.clone();
    if let Some(b) = BDIS.lock().iter().find(|b| b.name == serial) {
        return Ok(b.clone());
    }
    writeback_wq()?;
    let bdi = Arc::new_cyclic(|me: &Weak<Bdi>| {
        let me = me.clone();
        Bdi {
            trace_name: kport::trace::intern(&serial),
            name: serial.clone(),
            caches: SpinLock::new(Vec::new()),
            dwork: DelayedWork::named("wb_workfn", move || {
                if let Some(b) = me.upgrade() {
                    b.work();
                }
            }),
            want_background: AtomicBool::new(false),
            written: AtomicU64::new(0),
        }
    });
    let mut all = BDIS.lock();
    if let Some(b) = all.iter().find(|b| b.name == serial) {
        return Ok(b.clone());
    }
    all.push(bdi.clone());
    Ok(bdi)
}

/// Every device's writeback state.
pub fn all() -> Vec<Arc<Bdi>> {
    BDIS.lock().clone()
}

impl Bdi {
    /// The device's serial.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pages this device's flusher wrote so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Is a pass queued or waiting for its timer?
    pub fn is_armed(&self) -> bool {
        self.dwork.is_pending()
    }

    pub(crate) fn attach(&self, cache: &Arc<PageCache>) {
        let mut c = self.caches.lock();
        c.retain(|w| w.strong_count() > 0);
        c.push(Arc::downgrade(cache));
    }

    fn caches(&self) -> Vec<Arc<PageCache>> {
        self.caches.lock().iter().filter_map(Weak::upgrade).collect()
    }

    /// A page of this device became dirty: arm the periodic pass if it is
    /// not (Linux `wb_wakeup_delayed` from `__mark_inode_dirty`).
    pub(crate) fn note_dirtied(&self) {
        if !self.dwork.is_pending() {
            let interval = get_idx(INTERVAL) * 10_000_000;
            if interval > 0 {
                self.queue(interval, false);
            }
        }
    }

    fn queue(&self, delay_ns: u64, modify: bool) {
        let Some(wq) = WQ.get() else { return };
        if modify {
            wq.mod_delayed(&self.dwork, delay_ns);
        } else {
            wq.queue_delayed(&self.dwork, delay_ns);
        }
    }

    /// Run a pass now (a background one when `background`): the
    /// threshold was crossed, or reclaim met dirty pages (Linux
    /// `wb_start_background_writeback`, `wakeup_flusher_threads`).
    pub fn kick(&self, background: bool) {
        if background {
            self.want_background.store(true, Ordering::Release);
        }
        self.queue(0, true);
    }

    /// The `writeback_start`/`writeback_written` tracepoints of a
    /// background pass (`background`) or a periodic one (Linux's
    /// `for_kupdate`, reason `periodic`).
    #[inline]
    fn trace(&self, e: kport::trace::Event, pages: u64, background: bool) {
        if kport::trace::on(e) {
            let reason = if background { 0 } else { 3 };
            kport::trace::emit(e, [pages, 0, !background as u64, background as u64, reason], self.trace_name, "");
        }
    }

    /// One pass of the flusher (Linux `wb_do_writeback`).
    fn work(&self) {
        workqueue::set_worker_desc(format_args!("flush-{}", self.name));
        PASSES.fetch_add(1, Ordering::Relaxed);
        let caches = self.caches();
        // 1. Background: oldest first, until under the threshold.
        let asked = self.want_background.swap(false, Ordering::AcqRel);
        if asked || over_background() {
            BACKGROUND.fetch_add(1, Ordering::Relaxed);
            self.trace(kport::trace::Event::WritebackStart, 0, true);
            let mut total = 0;
            let mut first = true;
            while first || over_background() {
                first = false;
                let mut order: Vec<(u64, &Arc<PageCache>)> =
                    caches.iter().filter_map(|c| c.oldest_dirty().map(|t| (t, c))).collect();
                if order.is_empty() {
                    break;
                }
                order.sort_by_key(|(t, _)| *t);
                let mut n = 0;
                for (_, c) in order {
                    n += c.writeback(WbSelect::All, 0, u64::MAX, MAX_WRITEBACK_PAGES);
                }
                BACKGROUND_WRITTEN.fetch_add(n as u64, Ordering::Relaxed);
                total += n as u64;
                if n == 0 {
                    break;
                }
            }
            self.trace(kport::trace::Event::WritebackWritten, total, true);
        }
        // 2. Periodic: what has been dirty for longer than the expiry.
        let expire = get_idx(EXPIRE) * 10_000_000;
        let cutoff = port().now_ns().saturating_sub(expire);
        self.trace(kport::trace::Event::WritebackStart, 0, false);
        let mut total = 0;
        for c in &caches {
            let n = c.writeback(WbSelect::DirtiedBefore(cutoff), 0, u64::MAX, usize::MAX);
            EXPIRED_WRITTEN.fetch_add(n as u64, Ordering::Relaxed);
            total += n as u64;
        }
        self.trace(kport::trace::Event::WritebackWritten, total, false);
        // 3. Again later while anything is dirty.
        if caches.iter().any(|c| c.dirty_pages() > 0) {
            let interval = get_idx(INTERVAL) * 10_000_000;
            if interval > 0 {
                // The next expiry may come before a full interval.
                let oldest = caches.iter().filter_map(|c| c.oldest_dirty()).min().unwrap_or(0);
                let due = (oldest + expire).saturating_sub(port().now_ns());
                self.queue(interval.min(due.max(interval / 10)), false);
            }
        }
    }
}

fn over_background() -> bool {
    COUNTERS.dirty.load(Ordering::Relaxed) > dirty_limits().0
}

/// A pass wrote `pages` of `bdi`: wake throttled writers and reclaim
/// waiters.
pub(crate) fn pages_written(pages: u64, bdi: &Bdi) {
    if pages > 0 {
        bdi.written.fetch_add(pages, Ordering::Relaxed);
    }
    DIRTY_WAIT.wake_all();
    kport::mm::progress();
}

/// Ask every device's flusher for a background pass (reclaim met dirty
/// pages; Linux `wakeup_flusher_threads(WB_REASON_VMSCAN)`).
pub fn wakeup_flusher_threads() {
    for b in all() {
        b.kick(true);
    }
}

/// Throttle a writer that just dirtied pages of `bdi` (Linux
/// `balance_dirty_pages_ratelimited`); see the module's description.
///
/// Context: may sleep.
pub fn balance_dirty_pages(bdi: &Bdi) {
    kport::might_sleep();
    loop {
        let (bg, hard) = dirty_limits();
        let dirty = global_dirty();
        if dirty > bg && !bdi.want_background.load(Ordering::Relaxed) {
            bdi.kick(true);
        }
        let freerun = (bg + hard) / 2;
        if dirty <= freerun {
            return;
        }
        let pause = if dirty >= hard {
            MAX_PAUSE_NS
        } else {
            (MAX_PAUSE_NS * (dirty - freerun) / (hard - freerun).max(1)).max(1_000_000)
        };
        THROTTLED.fetch_add(1, Ordering::Relaxed);
        let start = port().now_ns();
        DIRTY_WAIT.wait_event_deadline("balance_dirty_pages", start + pause, || global_dirty() <= freerun);
        THROTTLED_NS.fetch_add(port().now_ns() - start, Ordering::Relaxed);
        if global_dirty() < hard {
            return;
        }
    }
}

/// The flusher and throttle part of `/proc/vmstat` plus the settings, as
/// `name value` lines.
pub fn report() -> String {
    let s = stats();
    let (bg, hard) = dirty_limits();
    let mut out = String::new();
    for t in &TUNABLES {
        out.push_str(&format!("vm.{} {}\n", t.name, t.value.load(Ordering::Relaxed)));
    }
    out.push_str(&format!("nr_dirty_background_threshold {bg}\nnr_dirty_threshold {hard}\n"));
    out.push_str(&format!(
        "wb_passes {}\nwb_background {}\nwb_expired_written {}\nwb_background_written {}\nnr_throttled {}\nthrottled_ms {}\n",
        s.passes,
        s.background,
        s.expired_written,
        s.background_written,
        s.throttled,
        s.throttled_ns / 1_000_000
    ));
    out
}
