//! A page cache over a block device (issue 15, first step): page-sized
//! pages indexed by page number, filled from the device on a read, dirtied
//! by a write, written back by `fsync`/`sync` (then a FLUSH), with Linux's
//! error-sequence semantics for writeback errors and active/inactive LRU
//! lists with second-chance promotion. Linux: `mm/filemap.c`,
//! `mm/page-writeback.c`, `lib/errseq.c`, `mm/swap.c`'s `mark_page_accessed`.
//!
//! * **Pages**: 4 KiB DMA buffers (frames of the port's DMA memory), each
//!   clean, dirty (with `dirtied_when`) or under writeback. The last page
//!   of a disk whose size is not a multiple of 4 KiB holds what exists.
//! * **LRU**: a new page goes to the inactive list; an access to a page
//!   already referenced on the inactive list moves it to the active list
//!   (Linux's second chance); the first access only marks it referenced.
//! * **Writeback errors** follow `errseq`: each error bumps the cache's
//!   sequence; a [`WbCursor`] (Linux `file->f_wb_err`) sampled before
//!   reports every error that happened after its sample once, at the next
//!   `fsync`/`sync` through it. A page whose write failed stays dirty, so
//!   it is never silently clean and the next writeback retries it.
//!
//! Locking: one sleeping mutex over the pages (I/O is done with it held in
//! this first step, so the cache is correct before it is concurrent).
//! The whole cache is kept: eviction comes with kswapd.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use kport::sync::Mutex;
use kport::{EINVAL, EROFS, Error, Result, port};

use crate::block::{BlockBuf, BlockDevice, SECTOR_SIZE};

/// Bytes in a cache page.
pub const PAGE_SIZE: usize = 4096;

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
    /// The data (away only while a writeback holds it, under the lock).
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
}

/// Counters of one cache (a part of `/proc/vmstat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Pages cached now.
    pub pages: u64,
    /// Of them dirty.
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
}

/// A page cache over one block device.
pub struct PageCache {
    dev: Arc<BlockDevice>,
    /// M: the pages and the LRU lists.
    pages: Mutex<Pages>,
    /// Writeback errors (Linux `mapping->wb_err`).
    wb_err: ErrSeq,
    /// A: counters.
    hits: AtomicU64,
    misses: AtomicU64,
    written_back: AtomicU64,
}

/// A caller's view of the cache's writeback errors (Linux `f_wb_err`):
/// sampled when it is made, advanced when an error is reported to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WbCursor(u64);

impl PageCache {
    /// A cache over `dev`.
    pub fn new(dev: Arc<BlockDevice>) -> Arc<Self> {
        Arc::new(PageCache {
            dev,
            pages: Mutex::new(Pages::default()),
            wb_err: ErrSeq::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            written_back: AtomicU64::new(0),
        })
    }

    /// The device.
    pub fn device(&self) -> &Arc<BlockDevice> {
        &self.dev
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

    /// Bring page `index` in (filling it from the device), mark the access,
    /// and run `f` on it.
    fn with_page<T>(&self, st: &mut Pages, index: u64, fill: bool, f: impl FnOnce(&mut Page) -> T) -> Result<T> {
        if let alloc::collections::btree_map::Entry::Vacant(slot) = st.pages.entry(index) {
            let start = index * PAGE_SIZE as u64;
            let len = (self.size().saturating_sub(start)).min(PAGE_SIZE as u64) as usize;
            if len == 0 {
                return Err(Error::new(EINVAL));
            }
            let len_sectors = len.next_multiple_of(SECTOR_SIZE);
            let buf = if fill {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.dev.read(start / SECTOR_SIZE as u64, len_sectors)?
            } else {
                BlockBuf::new(len_sectors)?
            };
            slot.insert(Page {
                buf: Some(buf),
                len,
                state: PageState::Clean,
                dirtied_when: 0,
                referenced: false,
                active: false,
            });
            st.inactive.push_back(index);
        } else if fill {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        let promote = {
            let p = st.pages.get_mut(&index).expect("just inserted");
            // Second chance: the second access of an inactive page activates it.
            let promote = p.referenced && !p.active;
            if promote {
                p.active = true;
                p.referenced = false;
            } else {
                p.referenced = true;
            }
            promote
        };
        if promote {
            st.inactive.retain(|i| *i != index);
            st.active.push_back(index);
        }
        Ok(f(st.pages.get_mut(&index).expect("present")))
    }

    /// Walk the pages under `want` bytes at `pos` (fewer at the end) with the
    /// pages' lock held: `step(pages, page index, offset in the page, offset
    /// in the request, bytes)` for each. Returns the bytes walked.
    fn each_page(
        &self,
        pos: u64,
        want: usize,
        mut step: impl FnMut(&mut Pages, u64, usize, usize, usize) -> Result<()>,
    ) -> Result<usize> {
        let len = (self.size().saturating_sub(pos)).min(want as u64) as usize;
        let mut st = self.pages.lock();
        let mut done = 0;
        while done < len {
            let at = pos + done as u64;
            let (index, off) = (at / PAGE_SIZE as u64, (at % PAGE_SIZE as u64) as usize);
            let n = (PAGE_SIZE - off).min(len - done);
            step(&mut st, index, off, done, n)?;
            done += n;
        }
        Ok(len)
    }

    /// Read `buf.len()` bytes at `pos` through the cache (fewer at the end).
    ///
    /// Context: may sleep.
    pub fn read(&self, pos: u64, buf: &mut [u8]) -> Result<usize> {
        kport::might_sleep();
        self.each_page(pos, buf.len(), |st, index, off, done, n| {
            self.with_page(st, index, true, |p| {
                buf[done..done + n].copy_from_slice(&p.buf.as_ref().expect("present").as_slice()[off..off + n])
            })
        })
    }

    /// Write `data` at `pos` into the cache (fewer bytes at the end); the
    /// pages become dirty. A partial page is filled from the device first.
    ///
    /// Return: `EROFS` on a read-only device.
    ///
    /// Context: may sleep.
    pub fn write(&self, pos: u64, data: &[u8]) -> Result<usize> {
        kport::might_sleep();
        if self.dev.info().read_only {
            return Err(Error::new(EROFS));
        }
        let now = port().now_ns();
        self.each_page(pos, data.len(), |st, index, off, done, n| {
            let whole = off == 0 && (n == PAGE_SIZE || index * PAGE_SIZE as u64 + n as u64 == self.size());
            self.with_page(st, index, !whole, |p| {
                p.buf.as_mut().expect("present").as_mut_slice()[off..off + n].copy_from_slice(&data[done..done + n]);
                if p.state == PageState::Clean {
                    p.dirtied_when = now;
                }
                p.state = PageState::Dirty;
            })
        })
    }

    /// Write back the dirty pages of `[start, end)` (bytes), then FLUSH the
    /// device; return once the data is on the device. Reports, through
    /// `cursor`, every writeback error since the cursor's last report
    /// (`EIO`), once.
    ///
    /// Context: may sleep.
    pub fn fsync_range(&self, cursor: &mut WbCursor, start: u64, end: u64) -> Result<()> {
        kport::might_sleep();
        let first = start / PAGE_SIZE as u64;
        let last = end.div_ceil(PAGE_SIZE as u64);
        {
            let mut st = self.pages.lock();
            let dirty: Vec<u64> =
                st.pages.range(first..last).filter(|(_, p)| p.state == PageState::Dirty).map(|(i, _)| *i).collect();
            for index in dirty {
                let p = st.pages.get_mut(&index).expect("listed");
                p.state = PageState::Writeback;
                // The page's buffer goes to the device and comes back.
                let buf = p.buf.take();
                let sector = index * (PAGE_SIZE / SECTOR_SIZE) as u64;
                let (r, back) = self.dev.submit_wait(crate::block::Op::Write, sector, buf);
                let p = st.pages.get_mut(&index).expect("listed");
                p.buf = back;
                match r {
                    Ok(()) => {
                        p.state = PageState::Clean;
                        self.written_back.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // Never silently clean: it stays dirty for the next try.
                        p.state = PageState::Dirty;
                        self.record_error(e);
                    }
                }
            }
        }
        if let Err(e) = self.dev.flush() {
            self.record_error(e);
        }
        self.check(cursor)
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

    /// The state of page `index`, if cached.
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
        }
    }

    /// Bytes of page `index` that exist on the device.
    pub fn page_len(&self, index: u64) -> Option<usize> {
        self.pages.lock().pages.get(&index).map(|p| p.len)
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
