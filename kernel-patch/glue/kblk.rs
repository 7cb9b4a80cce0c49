//! The in-kernel disks as files: `/scheme/sys/kblk/NAME` (`vda`, `vdb`, ... or the disk's
//! serial) serves what a user-space disk client such as redoxfs uses, positioned reads and
//! writes, `fsync`, and the size (`fstat`, `lseek(SEEK_END)`), through the `drivers` crate's
//! block layer; `sys:diskstats` prints the disks' counters. Only with `kblk=virtio` (`bus.rs`).
//!
//! Redox's kernel schemes are a fixed list in `redox_syscall` (`GlobalSchemes`), so a scheme of
//! its own would need changes outside the kernel; the disks are a kind of handle of the `sys:`
//! scheme instead (patch 0006 routes `kblk/...` paths and those handles here).
//!
//! Reads and writes go through the disk's page cache (`drivers::pagecache`): any offset and
//! length, a write dirties pages, `fsync` writes them back and FLUSHes, and a writeback error is
//! reported once to each handle open before it (errseq). Reads and writes past the end stop at
//! it (0 bytes at the end), as for a file.
//! User memory is copied in the caller's own system call, never from a kernel thread; the call
//! blocks while its requests are in flight, with its token lent by `lend_blocking`.

use alloc::{format, string::String, sync::Arc, vec::Vec};

use drivers::block::{BlockDevice, SECTOR_SIZE};
use drivers::pagecache::{PageCache, WbCursor};
use kport::{Error, Result, EINVAL, ENOENT};
use spin::Mutex;

use crate::{
    sync::CleanLockToken,
    syscall::{
        data::Stat,
        error::EBADF,
        flag::MODE_FILE,
        usercopy::{UserSliceRo, UserSliceWo},
    },
};

use super::{lend, token::lend_blocking};

/// An open disk: its cache and the handle's writeback-error cursor (sampled at open, as Linux's
/// `f_wb_err`).
struct Open {
    disk: Arc<BlockDevice>,
    cursor: WbCursor,
}

/// Open disks: the handle id is the index (a freed slot is reused).
static OPEN: Mutex<Vec<Option<Open>>> = Mutex::new(Vec::new());

/// Each disk's page cache.
static CACHES: kport::sync::Mutex<Vec<Arc<PageCache>>> = kport::sync::Mutex::new(Vec::new());

fn disk_of(id: usize) -> Result<Arc<BlockDevice>> {
    OPEN.lock()
        .get(id)
        .and_then(|o| o.as_ref().map(|o| o.disk.clone()))
        .ok_or(Error::new(EBADF))
}

/// The disk called `name` (its name or its serial), probing the buses the first time.
pub fn find(name: &str) -> Result<Arc<BlockDevice>> {
    if !super::bus::enabled() {
        return Err(Error::new(ENOENT));
    }
    let disks = drivers::blk::probe_all()?;
    disks
        .into_iter()
        .find(|d| d.info().name == name || d.info().serial == name)
        .ok_or(Error::new(ENOENT))
}

/// Size in bytes.
pub fn size(d: &BlockDevice) -> u64 {
    d.info().capacity * SECTOR_SIZE as u64
}

/// The page cache of disk `d` (one per disk, made on first use, with the disk's flusher).
/// Context: may sleep.
pub fn cache_of(d: &Arc<BlockDevice>) -> Result<Arc<PageCache>> {
    let mut caches = CACHES.lock();
    if let Some(c) = caches.iter().find(|c| Arc::ptr_eq(c.device(), d)) {
        return Ok(c.clone());
    }
    let c = PageCache::new(d.clone())?;
    caches.push(c.clone());
    Ok(c)
}

/// Read `buf.len()` bytes at `pos` through the cache (fewer at the end). Context: may sleep.
pub fn read_at(d: &Arc<BlockDevice>, pos: u64, buf: &mut [u8]) -> Result<usize> {
    cache_of(d)?.read(pos, buf)
}

/// Write `buf` at `pos` into the cache (fewer bytes at the end); `EROFS` on a read-only disk.
/// Context: may sleep.
pub fn write_at(d: &Arc<BlockDevice>, pos: u64, buf: &[u8]) -> Result<usize> {
    cache_of(d)?.write(pos, buf)
}

/// Write the disk's dirty pages back and FLUSH; the errors of this writeback. Context: may
/// sleep.
pub fn sync(d: &Arc<BlockDevice>) -> Result<()> {
    let c = cache_of(d)?;
    let mut cursor = c.cursor();
    c.sync(&mut cursor)
}

/// Bytes a system call moves through a kernel buffer at a time.
const CHUNK: usize = 64 << 10;

// ---- the sys: handles (patch 0006 calls these from src/scheme/sys/mod.rs) ----

/// Open `kblk/NAME`'s disk; the id goes into the `sys:` handle.
pub fn open(name: &str, token: &mut CleanLockToken) -> Result<usize> {
    let (disk, cursor) = lend_blocking(token, || {
        let disk = find(name)?;
        let cursor = cache_of(&disk)?.cursor();
        Ok::<_, Error>((disk, cursor))
    })?;
    let entry = Some(Open { disk, cursor });
    let mut open = OPEN.lock();
    if let Some(i) = open.iter().position(Option::is_none) {
        open[i] = entry;
        return Ok(i);
    }
    open.push(entry);
    Ok(open.len() - 1)
}

/// Forget a handle.
pub fn close(id: usize) {
    if let Some(slot) = OPEN.lock().get_mut(id) {
        *slot = None;
    }
}

/// Move `len` bytes at `pos` of handle `id`'s disk through a kernel buffer, `CHUNK` bytes at a
/// time: `step(cache, disk position, offset in the request, buffer)` moves one chunk. In the
/// caller's system call, which may block (its token lent by `lend_blocking`).
fn chunked(
    id: usize,
    pos: u64,
    want: usize,
    token: &mut CleanLockToken,
    mut step: impl FnMut(&PageCache, u64, usize, &mut [u8]) -> Result<()>,
) -> Result<usize> {
    let d = disk_of(id)?;
    let len = size(&d).saturating_sub(pos).min(want as u64) as usize;
    lend_blocking(token, || {
        let c = cache_of(&d)?;
        let mut kbuf = alloc::vec![0u8; CHUNK.min(len)];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            step(&c, pos + done as u64, done, &mut kbuf[..n])?;
            done += n;
        }
        Ok(len)
    })
}

/// `pread`: through the page cache and a kernel buffer, copied out in this system call.
pub fn kreadoff(
    id: usize,
    buf: UserSliceWo,
    pos: u64,
    token: &mut CleanLockToken,
) -> Result<usize> {
    chunked(id, pos, buf.len(), token, |c, at, done, kbuf| {
        c.read(at, kbuf)?;
        buf.advance(done)
            .and_then(|b| b.limit(kbuf.len()))
            .ok_or(Error::new(EINVAL))?
            .copy_from_slice(kbuf)
    })
}

/// `pwrite`: copied in from the caller in this system call, into the page cache.
pub fn kwriteoff(
    id: usize,
    buf: UserSliceRo,
    pos: u64,
    token: &mut CleanLockToken,
) -> Result<usize> {
    chunked(id, pos, buf.len(), token, |c, at, done, kbuf| {
        buf.advance(done)
            .and_then(|b| b.limit(kbuf.len()))
            .ok_or(Error::new(EINVAL))?
            .copy_to_slice(kbuf)?;
        c.write(at, kbuf).map(|_| ())
    })
}

/// The disk's size in bytes (`lseek(SEEK_END)`).
pub fn fsize(id: usize) -> Result<u64> {
    disk_of(id).map(|d| size(&d))
}

/// `fsync`: the dirty pages written back and the device's volatile cache flushed; the
/// writeback errors since this handle last heard of one, once.
pub fn fsync(id: usize, token: &mut CleanLockToken) -> Result<()> {
    let d = disk_of(id)?;
    let mut cursor = OPEN
        .lock()
        .get(id)
        .and_then(|o| o.as_ref().map(|o| o.cursor))
        .ok_or(Error::new(EBADF))?;
    let r = lend_blocking(token, || cache_of(&d)?.sync(&mut cursor));
    if let Some(Some(o)) = OPEN.lock().get_mut(id) {
        o.cursor = cursor;
    }
    r
}

/// `fstat`: a file of the disk's size, read-only when the disk is.
pub fn kfstat(id: usize, buf: UserSliceWo) -> Result<()> {
    let d = disk_of(id)?;
    let stat = Stat {
        st_mode: if d.info().read_only { 0o444 } else { 0o666 } | MODE_FILE,
        st_size: size(&d),
        st_blksize: d.info().block_size,
        st_blocks: d.info().capacity,
        ..Default::default()
    };
    buf.copy_exactly(&stat)
}

/// The path, for `fpath`.
pub fn path(id: usize) -> Result<String> {
    let d = disk_of(id)?;
    Ok(format!("kblk/{}", d.info().name))
}

/// `sys:diskstats`: one line per disk (`drivers::block::diskstats`), with a header.
pub fn sys_diskstats(token: &mut CleanLockToken) -> Result<Vec<u8>> {
    let body = lend(token, drivers::block::diskstats);
    let mut out = String::from(
        "name     reads    sectors   writes    sectors  flush  inf  busy_ms  qsz100  svc_us  err  serial\n",
    );
    out.push_str(&body);
    Ok(out.into_bytes())
}
