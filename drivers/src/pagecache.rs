//! A page cache over a block device: page-sized pages indexed by page
//! number, filled from the device on a read, dirtied by a write, written
//! back by the device's flusher ([`crate::writeback`]), by `fsync`/`sync`
//! (then a FLUSH) and when kswapd meets them ([`crate::vmscan`]), with
//! Linux's error-sequence semantics for writeback errors and active and
//! inactive LRU lists with second-chance promotion, from which kswapd and
//! direct reclaim evict clean pages. Linux: `mm/filemap.c`,
//! `mm/page-writeback.c`, `lib/errseq.c`, `mm/swap.c`'s
//! `mark_page_accessed`, `mm/vmscan.c`'s `shrink_inactive_list`.
//!
//! * **Pages**: 4 KiB DMA buffers (frames of the port's DMA memory), each
//!   clean, dirty (with `dirtied_when`) or under writeback. The last page
//!   of a disk whose size is not a multiple of 4 KiB holds what exists.
//!   A page being filled from the device or written to it is *busy*: its
//!   buffer is with the device, and a reader or writer of that page waits
//!   for it (Linux's locked page and stable pages under writeback); the
//!   other pages stay usable meanwhile.
//! * **LRU**: a new page goes to the inactive list; an access to a page
//!   already referenced on the inactive list moves it to the active list
//!   (Linux's second chance); the first access only marks it referenced.
//!   Reclaim keeps the inactive list at least as long as the active one
//!   (Linux's `inactive_ratio` of 1 below 1 GiB) by moving the oldest
//!   active pages back, takes inactive pages oldest first, gives a
//!   referenced one another round (clearing the bit), frees clean ones and
//!   asks the flusher for dirty ones.
//! * **Writeback errors** follow `errseq`: each error bumps the cache's
//!   sequence; a [`WbCursor`] (Linux `file->f_wb_err`) sampled before
//!   reports every error that happened after its sample once, at the next
//!   `fsync`/`sync` through it. A page whose write failed stays dirty, so
//!   it is never silently clean and the next writeback retries it.
//!
//! Locking: `M:` one sleeping mutex per cache over its pages and lists,
//! never held across I/O or a frame allocation (so reclaim, which takes
//! it, can run inside an allocation of another page); `A:` atomics. Busy
//! pages are waited for on the cache's wait queue, with a sequence number
//! sampled under the mutex so no wake-up is lost.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kport::sync::{Completion, Mutex, SpinLock, WaitQueue};
use kport::{EINVAL, EROFS, Error, Result, port};

use crate::block::{BlockBuf, BlockDevice, Op, SECTOR_SIZE};
use crate::writeback::{self, Bdi};

/// Bytes in a cache page.
pub const PAGE_SIZE: usize = 4096;
/// Most pages one writeback batch sends to the device before it waits
/// for them (1 MiB).
pub const WRITEBACK_BATCH: usize = 256;

/// A page's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// As on the device.
    Clean,
    /// Written in the cache since; `dirtied_when` says since when.
    Dirty,
    /// Being written to the device.
    Writeback,
}

struct Page {
    /// The data; `None` while the page is busy (being filled, or its
    /// buffer is with the device for writeback).
    buf: Option<BlockBuf>,
    /// Bytes of the page that exist on the device (4096 but at a short end).
    len: usize,
    state: PageState,
    /// When it became dirty (ns, the port's clock).
    dirtied_when: u64,
    referenced: bool,
    active: bool,
}

#[derive(Default)]
struct Pages {
    pages: BTreeMap<u64, Page>,
    active: VecDeque<u64>,
    inactive: VecDeque<u64>,
    /// Pages in state Dirty.
    dirty: u64,
}

/// Counters of one cache (a part of `/proc/vmstat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Pages cached now.
    pub pages: u64,
    /// Of them dirty (or under writeback).
    pub dirty: u64,
    /// On the active list.
    pub active: u64,
    /// Reads served from the cache (pages).
    pub hits: u64,
    /// Reads that filled from the device (pages).
    pub misses: u64,
    /// Pages written back.
    pub written_back: u64,
    /// Writeback errors so far.
    pub errors: u64,
    /// Pages evicted by reclaim.
    pub evicted: u64,
}

/// What one reclaim pass over a cache did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShrinkResult {
    /// Inactive pages looked at.
    pub scanned: u64,
    /// Clean pages freed.
    pub freed: u64,
    /// Dirty pages met (their writeback was asked for).
    pub dirty: u64,
    /// Active pages moved to the inactive list.
    pub deactivated: u64,
}

/// Which dirty pages a writeback pass takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WbSelect {
    /// All of them (`sync`).
    All,
    /// Those dirty since at or before this time (ns): the periodic
    /// writeback of expired pages (Linux `for_kupdate`).
    DirtiedBefore(u64),
}

/// Global page counters (Linux's node counters `NR_FILE_PAGES`,
/// `NR_FILE_DIRTY`, `NR_WRITEBACK`, and the events `nr_dirtied`,
/// `nr_written`).
pub struct GlobalCounters {
    /// Pages in every cache.
    pub file: AtomicU64,
    /// Dirty pages in every cache.
    pub dirty: AtomicU64,
    /// Pages under writeback.
    pub writeback: AtomicU64,
    /// Pages that became dirty, ever.
    pub dirtied: AtomicU64,
    /// Pages written back, ever.
    pub written: AtomicU64,
}

/// The global page counters.
pub static COUNTERS: GlobalCounters = GlobalCounters {
    file: AtomicU64::new(0),
    dirty: AtomicU64::new(0),
    writeback: AtomicU64::new(0),
    dirtied: AtomicU64::new(0),
    written: AtomicU64::new(0),
};

static CACHES: SpinLock<Vec<Weak<PageCache>>> = SpinLock::new(Vec::new());

/// Every live cache (reclaim walks them).
pub fn all_caches() -> Vec<Arc<PageCache>> {
    let mut list = CACHES.lock();
    list.retain(|w| w.strong_count() > 0);
    list.iter().filter_map(Weak::upgrade).collect()
}

/// A page cache over one block device.
pub struct PageCache {
    dev: Arc<BlockDevice>,
    /// The device's writeback state, shared by its caches.
    bdi: Arc<Bdi>,
    /// M: the pages and the LRU lists.
    pages: Mutex<Pages>,
    /// Waiters for a busy page; `busy_seq` moves each time one stops being busy.
    busy: WaitQueue,
    busy_seq: AtomicU64,
    /// Writeback errors (Linux `mapping->wb_err`).
    wb_err: ErrSeq,
    /// A: counters.
    nr_pages: Arc<AtomicU64>,
    hits: AtomicU64,
    misses: AtomicU64,
    written_back: AtomicU64,
    evicted: AtomicU64,
    /// The out-of-memory report's name for this cache.
    user_id: AtomicUsize,
}

/// A caller's view of the cache's writeback errors (Linux `f_wb_err`):
/// sampled when it is made, advanced when an error is reported to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WbCursor(u64);

/// Results of a writeback batch: page index, result, buffer back.
type Returned = Vec<(u64, Result<()>, Option<BlockBuf>)>;

impl PageCache {
    /// A cache over `dev`, written back by the device's flusher.
    ///
    /// Return: `ENOMEM` when the device's writeback queue cannot be made.
    ///
    /// Context: may sleep.
    pub fn new(dev: Arc<BlockDevice>) -> Result<Arc<Self>> {
        kport::might_sleep();
        let bdi = writeback::bdi_of(&dev)?;
        let nr_pages = Arc::new(AtomicU64::new(0));
        let cache = Arc::new(PageCache {
            dev: dev.clone(),
            bdi: bdi.clone(),
            pages: Mutex::new(Pages::default()),
            busy: WaitQueue::new(),
            busy_seq: AtomicU64::new(0),
            wb_err: ErrSeq::default(),
            nr_pages: nr_pages.clone(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            written_back: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            user_id: AtomicUsize::new(0),
        });
        let id = kport::mm::register_user(&format!("page cache {}", dev.info().serial), move || {
            nr_pages.load(Ordering::Relaxed)
        });
        cache.user_id.store(id, Ordering::Relaxed);
        bdi.attach(&cache);
        CACHES.lock().push(Arc::downgrade(&cache));
        Ok(cache)
    }

    /// The device.
    pub fn device(&self) -> &Arc<BlockDevice> {
        &self.dev
    }

    /// The device's writeback state.
    pub fn bdi(&self) -> &Arc<Bdi> {
        &self.bdi
    }

    /// Size of the device in bytes.
    pub fn size(&self) -> u64 {
        self.dev.info().capacity * SECTOR_SIZE as u64
    }

    /// A cursor that will see the writeback errors from now on (Linux
    /// `errseq_sample` at open).
    pub fn cursor(&self) -> WbCursor {
        self.wb_err.sample()
    }

    fn unbusy(&self) {
        self.busy_seq.fetch_add(1, Ordering::Release);
        self.busy.wake_all();
    }

    /// Bring page `index` in (filling it from the device when `fill`),
    /// wait while it is busy, mark the access, and run `f` on it under the
    /// cache's mutex. `hit` counts a read served from the cache.
    fn access<T>(&self, index: u64, fill: bool, f: impl FnOnce(&mut Pages, u64) -> T) -> Result<T> {
        loop {
            let mut st = self.pages.lock();
            let seq = self.busy_seq.load(Ordering::Acquire);
            match st.pages.get(&index).map(|p| p.buf.is_some()) {
                Some(true) => {
                    if fill {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                    }
                    touch(&mut st, index);
                    return Ok(f(&mut st, index));
                }
                Some(false) => {
                    drop(st);
                    self.busy.wait_event("wait_on_page", || self.busy_seq.load(Ordering::Acquire) != seq);
                }
                None => {
                    let start = index * PAGE_SIZE as u64;
                    let len = (self.size().saturating_sub(start)).min(PAGE_SIZE as u64) as usize;
                    if len == 0 {
                        return Err(Error::new(EINVAL));
                    }
                    // A busy placeholder: others wait for it while it fills.
                    st.pages.insert(
                        index,
                        Page {
                            buf: None,
                            len,
                            state: PageState::Clean,
                            dirtied_when: 0,
                            referenced: false,
                            active: false,
                        },
                    );
                    st.inactive.push_back(index);
                    self.nr_pages.fetch_add(1, Ordering::Relaxed);
                    COUNTERS.file.fetch_add(1, Ordering::Relaxed);
                    drop(st);
                    // I/O and the allocation (which may reclaim) without the mutex.
                    let len_sectors = len.next_multiple_of(SECTOR_SIZE);
                    let got = if fill {
                        self.misses.fetch_add(1, Ordering::Relaxed);
                        self.dev.read(start / SECTOR_SIZE as u64, len_sectors)
                    } else {
                        BlockBuf::new(len_sectors)
                    };
                    let mut st = self.pages.lock();
                    match got {
                        Ok(buf) => {
                            st.pages.get_mut(&index).expect("a busy page stays").buf = Some(buf);
                            // The filling access counts as the first reference.
                            st.pages.get_mut(&index).expect("present").referenced = true;
                            let out = f(&mut st, index);
                            drop(st);
                            self.unbusy();
                            return Ok(out);
                        }
                        Err(e) => {
                            st.pages.remove(&index);
                            st.inactive.retain(|i| *i != index);
                            self.nr_pages.fetch_sub(1, Ordering::Relaxed);
                            COUNTERS.file.fetch_sub(1, Ordering::Relaxed);
                            drop(st);
                            self.unbusy();
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// The pages under `want` bytes at `pos` (fewer at the end):
    /// `(page index, offset in the page, offset in the request, bytes)`.
    fn spans(&self, pos: u64, want: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
        let len = (self.size().saturating_sub(pos)).min(want as u64) as usize;
        let mut done = 0;
        core::iter::from_fn(move || {
            if done >= len {
                return None;
            }
            let at = pos + done as u64;
            let (index, off) = (at / PAGE_SIZE as u64, (at % PAGE_SIZE as u64) as usize);
            let n = (PAGE_SIZE - off).min(len - done);
            let span = (index, off, done, n);
            done += n;
            Some(span)
        })
    }

    /// Read `buf.len()` bytes at `pos` through the cache (fewer at the end).
    ///
    /// Context: may sleep.
    pub fn read(&self, pos: u64, buf: &mut [u8]) -> Result<usize> {
        kport::might_sleep();
        let mut total = 0;
        for (index, off, done, n) in self.spans(pos, buf.len()) {
            self.access(index, true, |st, i| {
                let p = st.pages.get(&i).expect("present");
                buf[done..done + n].copy_from_slice(&p.buf.as_ref().expect("not busy").as_slice()[off..off + n]);
            })?;
            total = done + n;
        }
        Ok(total)
    }

    /// Write `data` at `pos` into the cache (fewer bytes at the end); the
    /// pages become dirty. A partial page is filled from the device first.
    /// A writer that dirties past the thresholds is throttled
    /// ([`writeback::balance_dirty_pages`]) as it goes.
    ///
    /// Return: `EROFS` on a read-only device.
    ///
    /// Context: may sleep.
    pub fn write(&self, pos: u64, data: &[u8]) -> Result<usize> {
        kport::might_sleep();
        if self.dev.info().read_only {
            return Err(Error::new(EROFS));
        }
        let mut total = 0;
        let mut since_balance = 0u64;
        for (index, off, done, n) in self.spans(pos, data.len()) {
            let whole = off == 0 && (n == PAGE_SIZE || index * PAGE_SIZE as u64 + n as u64 == self.size());
            let newly = self.access(index, !whole, |st, i| {
                let p = st.pages.get_mut(&i).expect("present");
                p.buf.as_mut().expect("not busy").as_mut_slice()[off..off + n].copy_from_slice(&data[done..done + n]);
                let newly = p.state == PageState::Clean;
                if newly {
                    p.dirtied_when = port().now_ns();
                    p.state = PageState::Dirty;
                    st.dirty += 1;
                }
                newly
            })?;
            if newly {
                COUNTERS.dirty.fetch_add(1, Ordering::Relaxed);
                COUNTERS.dirtied.fetch_add(1, Ordering::Relaxed);
                self.bdi.note_dirtied();
                since_balance += 1;
            }
            total = done + n;
            // Linux checks every `ratelimit` pages dirtied; 32 here.
            if since_balance >= 32 {
                writeback::balance_dirty_pages(&self.bdi);
                since_balance = 0;
            }
        }
        if since_balance > 0 {
            writeback::balance_dirty_pages(&self.bdi);
        }
        Ok(total)
    }

    /// Write back the dirty pages `select` takes, in index order, at most
    /// `max`: a batch at a time is sent to the device (plugged) and waited
    /// for; a failed page stays dirty and the error is recorded. Returns
    /// the pages written.
    ///
    /// Context: may sleep.
    pub fn writeback(&self, select: WbSelect, first: u64, last: u64, max: usize) -> usize {
        kport::might_sleep();
        let mut written = 0;
        let mut from = first;
        while written < max {
            // Take a batch of dirty pages' buffers; they become busy.
            let mut batch: Vec<(u64, BlockBuf)> = Vec::new();
            {
                let mut st = self.pages.lock();
                let want = (max - written).min(WRITEBACK_BATCH);
                let picked: Vec<u64> = st
                    .pages
                    .range(from..last)
                    .filter(|(_, p)| {
                        p.state == PageState::Dirty
                            && p.buf.is_some()
                            && match select {
                                WbSelect::All => true,
                                WbSelect::DirtiedBefore(t) => p.dirtied_when <= t,
                            }
                    })
                    .take(want)
                    .map(|(i, _)| *i)
                    .collect();
                for index in picked {
                    let p = st.pages.get_mut(&index).expect("listed");
                    p.state = PageState::Writeback;
                    batch.push((index, p.buf.take().expect("not busy")));
                    st.dirty -= 1;
                }
            }
            let Some(&(last_index, _)) = batch.last() else { break };
            from = last_index + 1;
            let n = batch.len() as u64;
            COUNTERS.dirty.fetch_sub(n, Ordering::Relaxed);
            COUNTERS.writeback.fetch_add(n, Ordering::Relaxed);
            let returned = self.write_batch(batch);
            COUNTERS.writeback.fetch_sub(n, Ordering::Relaxed);
            let mut st = self.pages.lock();
            let mut redirtied = 0;
            let before = written;
            for (index, r, buf) in returned {
                let st = &mut *st;
                let p = st.pages.get_mut(&index).expect("a busy page stays");
                p.buf = buf;
                match r {
                    Ok(()) if p.buf.is_some() => {
                        p.state = PageState::Clean;
                        written += 1;
                    }
                    r => {
                        self.record_error(r.err().unwrap_or(Error::new(kport::EIO)));
                        if p.buf.is_some() {
                            // Never silently clean: it stays dirty for the next try.
                            p.state = PageState::Dirty;
                            st.dirty += 1;
                            redirtied += 1;
                        } else {
                            // The device kept no buffer back: the data is gone
                            // from memory, so the page leaves the cache (its
                            // error is recorded).
                            st.pages.remove(&index);
                            st.inactive.retain(|i| *i != index);
                            st.active.retain(|i| *i != index);
                            self.nr_pages.fetch_sub(1, Ordering::Relaxed);
                            COUNTERS.file.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            drop(st);
            COUNTERS.dirty.fetch_add(redirtied, Ordering::Relaxed);
            self.unbusy();
            writeback::pages_written((written - before) as u64, &self.bdi);
            if (n as usize) > written - before {
                // Errors: stop here; the pages stay for the next pass.
                break;
            }
        }
        self.written_back.fetch_add(written as u64, Ordering::Relaxed);
        COUNTERS.written.fetch_add(written as u64, Ordering::Relaxed);
        written
    }

    /// Send `batch` to the device at once (one plug) and wait for all.
    fn write_batch(&self, batch: Vec<(u64, BlockBuf)>) -> Returned {
        struct Wait {
            left: AtomicUsize,
            done: Completion,
            out: SpinLock<Returned>,
        }
        let wait = Arc::new(Wait {
            left: AtomicUsize::new(batch.len()),
            done: Completion::new(),
            out: SpinLock::ranked("writeback batch", crate::block::RANK_BLOCK_DONE, Vec::new()),
        });
        let mut refused: Returned = Vec::new();
        {
            let mut plug = self.dev.plug();
            for (index, buf) in batch {
                let w = wait.clone();
                let sector = index * (PAGE_SIZE / SECTOR_SIZE) as u64;
                let done: crate::block::DoneFn = alloc::boxed::Box::new(move |r, b| {
                    w.out.lock().push((index, r, b));
                    if w.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                        w.done.complete_all();
                    }
                });
                if let Err((e, b)) = plug.submit(Op::Write, sector, Some(buf), done) {
                    refused.push((index, Err(e), b));
                    if wait.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                        wait.done.complete_all();
                    }
                }
            }
        }
        wait.done.wait("writeback_wait");
        let mut out = core::mem::take(&mut *wait.out.lock());
        out.append(&mut refused);
        out
    }

    /// Write back the dirty pages of `[start, end)` (bytes), then FLUSH the
    /// device; return once the data is on the device. Reports, through
    /// `cursor`, every writeback error since the cursor's last report
    /// (`EIO`), once. Pages under writeback by the flusher are waited for.
    ///
    /// Context: may sleep.
    pub fn fsync_range(&self, cursor: &mut WbCursor, start: u64, end: u64) -> Result<()> {
        kport::might_sleep();
        let first = start / PAGE_SIZE as u64;
        let last = end.div_ceil(PAGE_SIZE as u64);
        self.writeback(WbSelect::All, first, last, usize::MAX);
        self.wait_writeback(first, last);
        if let Err(e) = self.dev.flush() {
            self.record_error(e);
        }
        self.check(cursor)
    }

    /// Wait until no page of `[first, last)` is under writeback (by another
    /// thread: the flusher or reclaim).
    fn wait_writeback(&self, first: u64, last: u64) {
        loop {
            let st = self.pages.lock();
            let seq = self.busy_seq.load(Ordering::Acquire);
            if !st.pages.range(first..last).any(|(_, p)| p.state == PageState::Writeback) {
                return;
            }
            drop(st);
            self.busy.wait_event("wait_on_page_writeback", || self.busy_seq.load(Ordering::Acquire) != seq);
        }
    }

    /// `fsync_range` of the whole device (Linux `sync` of it).
    ///
    /// Context: may sleep.
    pub fn sync(&self, cursor: &mut WbCursor) -> Result<()> {
        self.fsync_range(cursor, 0, self.size())
    }

    fn record_error(&self, e: Error) {
        self.wb_err.record(e);
    }

    /// Report the writeback errors since `cursor`'s sample once, without
    /// writing anything back (as `fsync` ends).
    pub fn check(&self, cursor: &mut WbCursor) -> Result<()> {
        self.wb_err.check_and_advance(cursor)
    }

    /// The oldest `dirtied_when` of a dirty page, if any.
    pub fn oldest_dirty(&self) -> Option<u64> {
        let st = self.pages.lock();
        st.pages.values().filter(|p| p.state == PageState::Dirty).map(|p| p.dirtied_when).min()
    }

    /// Dirty pages now (not counting those under writeback).
    pub fn dirty_pages(&self) -> u64 {
        self.pages.lock().dirty
    }

    /// Reclaim: look at up to `nr_to_scan` inactive pages, oldest first
    /// (after moving active pages back while the inactive list is the
    /// shorter), free the clean unreferenced ones until `nr_to_free` are
    /// freed, give referenced ones a second round, and count the dirty ones
    /// (the caller asks the flusher for them). Direct reclaim calls it from inside an allocation: safe,
    /// since no path allocates a frame with a cache's mutex held.
    ///
    /// Context: may sleep.
    pub fn shrink(&self, nr_to_scan: u64, nr_to_free: u64) -> ShrinkResult {
        let mut r = ShrinkResult::default();
        let mut freed: Vec<BlockBuf> = Vec::new();
        {
            let mut st = self.pages.lock();
            // Age the active list (Linux `shrink_active_list`).
            while st.inactive.len() < st.active.len() {
                let Some(index) = st.active.pop_front() else { break };
                if let Some(p) = st.pages.get_mut(&index) {
                    p.active = false;
                    p.referenced = false;
                }
                st.inactive.push_back(index);
                r.deactivated += 1;
            }
            let mut budget = nr_to_scan.min(st.inactive.len() as u64);
            while budget > 0 && r.freed < nr_to_free {
                budget -= 1;
                let Some(index) = st.inactive.pop_front() else { break };
                r.scanned += 1;
                let p = st.pages.get_mut(&index).expect("listed pages exist");
                if p.buf.is_none() || p.state != PageState::Clean {
                    if p.state == PageState::Dirty {
                        r.dirty += 1;
                    }
                    st.inactive.push_back(index);
                } else if p.referenced {
                    p.referenced = false;
                    st.inactive.push_back(index);
                } else {
                    let page = st.pages.remove(&index).expect("present");
                    freed.extend(page.buf);
                    r.freed += 1;
                }
            }
        }
        // Frames go back to the allocator outside the mutex.
        drop(freed);
        self.nr_pages.fetch_sub(r.freed, Ordering::Relaxed);
        COUNTERS.file.fetch_sub(r.freed, Ordering::Relaxed);
        self.evicted.fetch_add(r.freed, Ordering::Relaxed);
        r
    }

    /// Drop the pages of `[start, end)` (bytes) from the cache, dirty ones
    /// included, without writing them (Linux `truncate_inode_pages_range`:
    /// their data is given up on purpose); pages busy with I/O are waited
    /// for first. Returns the dirty pages discarded.
    ///
    /// Context: may sleep.
    pub fn discard_range(&self, start: u64, end: u64) -> u64 {
        kport::might_sleep();
        let (first, last) = (start / PAGE_SIZE as u64, end.div_ceil(PAGE_SIZE as u64));
        loop {
            let mut st = self.pages.lock();
            let seq = self.busy_seq.load(Ordering::Acquire);
            if st.pages.range(first..last).any(|(_, p)| p.buf.is_none()) {
                drop(st);
                self.busy.wait_event("truncate_wait", || self.busy_seq.load(Ordering::Acquire) != seq);
                continue;
            }
            let gone: Vec<u64> = st.pages.range(first..last).map(|(i, _)| *i).collect();
            let mut bufs: Vec<BlockBuf> = Vec::new();
            let mut dirty = 0;
            for index in &gone {
                let p = st.pages.remove(index).expect("listed");
                if p.state == PageState::Dirty {
                    dirty += 1;
                }
                bufs.extend(p.buf);
            }
            st.dirty -= dirty;
            let Pages { pages, active, inactive, .. } = &mut *st;
            inactive.retain(|i| pages.contains_key(i));
            active.retain(|i| pages.contains_key(i));
            drop(st);
            drop(bufs);
            let n = gone.len() as u64;
            self.nr_pages.fetch_sub(n, Ordering::Relaxed);
            COUNTERS.file.fetch_sub(n, Ordering::Relaxed);
            COUNTERS.dirty.fetch_sub(dirty, Ordering::Relaxed);
            return dirty;
        }
    }

    /// Free every clean page that is not busy (Linux `drop_caches` for
    /// this cache); returns the pages freed.
    ///
    /// Context: may sleep.
    pub fn drop_clean(&self) -> u64 {
        let mut freed: Vec<BlockBuf> = Vec::new();
        {
            let mut st = self.pages.lock();
            let gone: Vec<u64> = st
                .pages
                .iter()
                .filter(|(_, p)| p.state == PageState::Clean && p.buf.is_some())
                .map(|(i, _)| *i)
                .collect();
            for index in &gone {
                freed.extend(st.pages.remove(index).and_then(|p| p.buf));
            }
            let Pages { pages, active, inactive, .. } = &mut *st;
            inactive.retain(|i| pages.contains_key(i));
            active.retain(|i| pages.contains_key(i));
        }
        let n = freed.len() as u64;
        drop(freed);
        self.nr_pages.fetch_sub(n, Ordering::Relaxed);
        COUNTERS.file.fetch_sub(n, Ordering::Relaxed);
        self.evicted.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// The state of page `index`, if cached: state, `dirtied_when`, active.
    pub fn page_state(&self, index: u64) -> Option<(PageState, u64, bool)> {
        let st = self.pages.lock();
        st.pages.get(&index).map(|p| (p.state, p.dirtied_when, p.active))
    }

    /// The counters now.
    pub fn stats(&self) -> CacheStats {
        let st = self.pages.lock();
        CacheStats {
            pages: st.pages.len() as u64,
            dirty: st.pages.values().filter(|p| p.state != PageState::Clean).count() as u64,
            active: st.active.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            written_back: self.written_back.load(Ordering::Relaxed),
            errors: self.wb_err.count(),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// Pages cached now (lock-free).
    pub fn nr_pages(&self) -> u64 {
        self.nr_pages.load(Ordering::Relaxed)
    }

    /// Bytes of page `index` that exist on the device.
    pub fn page_len(&self, index: u64) -> Option<usize> {
        self.pages.lock().pages.get(&index).map(|p| p.len)
    }

    /// A name for listings: the device's serial.
    pub fn name(&self) -> String {
        String::from(self.dev.info().serial.as_str())
    }
}

/// Mark an access of page `index` (Linux `mark_page_accessed`): the first
/// sets the referenced bit, a second on the inactive list activates it.
fn touch(st: &mut Pages, index: u64) {
    let p = st.pages.get_mut(&index).expect("present");
    let promote = p.referenced && !p.active;
    if promote {
        p.active = true;
        p.referenced = false;
    } else {
        p.referenced = true;
    }
    if promote {
        st.inactive.retain(|i| *i != index);
        st.active.push_back(index);
    }
}

impl Drop for PageCache {
    /// The last reference is gone: its dirty pages are written back first
    /// (as Linux writes an inode's pages before evicting it), then its
    /// pages are freed.
    fn drop(&mut self) {
        kport::mm::unregister_user(self.user_id.load(Ordering::Relaxed));
        if self.dirty_pages() > 0 {
            self.writeback(WbSelect::All, 0, u64::MAX, usize::MAX);
        }
        let st = self.pages.lock();
        let (n, dirty) = (st.pages.len() as u64, st.dirty);
        drop(st);
        if dirty > 0 {
            port().console_line(&format!(
                "pagecache: {}: {dirty} dirty pages could not be written back before the cache went away",
                self.dev.info().serial
            ));
        }
        COUNTERS.file.fetch_sub(n, Ordering::Relaxed);
        COUNTERS.dirty.fetch_sub(dirty, Ordering::Relaxed);
    }
}

/// An error sequence (Linux `errseq_t`): how many errors happened and the
/// last one's errno, in one atomic word (`count << 16 | errno`).
#[derive(Default)]
pub struct ErrSeq(AtomicU64);

impl ErrSeq {
    /// Record an error.
    pub fn record(&self, e: Error) {
        let errno = (e.errno as u64) & 0xffff;
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let next = (((cur >> 16) + 1) << 16) | errno;
            match self.0.compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// A cursor that sees the errors from now on (`errseq_sample`).
    pub fn sample(&self) -> WbCursor {
        WbCursor(self.0.load(Ordering::Acquire) >> 16)
    }

    /// The last error since `cursor`'s sample, reported once: the cursor
    /// moves past it (`errseq_check_and_advance`).
    pub fn check_and_advance(&self, cursor: &mut WbCursor) -> Result<()> {
        let cur = self.0.load(Ordering::Acquire);
        if cur >> 16 != cursor.0 {
            cursor.0 = cur >> 16;
            return Err(Error::new((cur & 0xffff) as i32));
        }
        Ok(())
    }

    /// Errors so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed) >> 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kport::{EIO, ENOSPC};

    #[test]
    fn an_error_is_reported_once_to_each_cursor_that_could_see_it() {
        let seq = ErrSeq::default();
        let mut before_a = seq.sample();
        let mut before_b = seq.sample();
        seq.record(Error::new(EIO));
        let mut after = seq.sample();
        assert_eq!(seq.check_and_advance(&mut before_a).map_err(|e| e.errno), Err(EIO));
        assert_eq!(seq.check_and_advance(&mut before_a), Ok(()), "reported twice to one cursor");
        assert_eq!(seq.check_and_advance(&mut before_b).map_err(|e| e.errno), Err(EIO), "a second cursor missed it");
        assert_eq!(seq.check_and_advance(&mut after), Ok(()), "a cursor sampled after the error saw it");
        // A later error: every cursor sees it once, with its errno.
        seq.record(Error::new(ENOSPC));
        for c in [&mut before_a, &mut before_b, &mut after] {
            assert_eq!(seq.check_and_advance(c).map_err(|e| e.errno), Err(ENOSPC));
            assert_eq!(seq.check_and_advance(c), Ok(()));
        }
        assert_eq!(seq.count(), 2);
    }
}
