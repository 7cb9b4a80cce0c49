//! The in-kernel disks as files: `/scheme/sys/kblk/NAME` (`vda`, `vdb`, ... or the disk's
//! serial) serves what a user-space disk client such as redoxfs uses, positioned reads and
//! writes, `fsync`, and the size (`fstat`, `lseek(SEEK_END)`), through the `drivers` crate's
//! block layer; `sys:diskstats` prints the disks' counters. Only with `kblk=virtio` (`bus.rs`).
//!
//! Redox's kernel schemes are a fixed list in `redox_syscall` (`GlobalSchemes`), so a scheme of
//! its own would need changes outside the kernel; the disks are a kind of handle of the `sys:`
//! scheme instead (patch 0006 routes `kblk/...` paths and those handles here).
//!
//! Any offset and length work: the block layer takes whole sectors, so an unaligned read goes
//! through a bounce buffer of the sectors that cover it, and an unaligned write reads those
//! sectors first (read-modify-write). A request is at most the disk's largest transfer; longer
//! ones are split. Reads and writes past the end stop at it (0 bytes at the end), as for a file.
//! User memory is copied in the caller's own system call, never from a kernel thread; the call
//! blocks while its requests are in flight, with its token lent by `lend_blocking`.

use alloc::{format, string::String, sync::Arc, vec::Vec};

use drivers::block::{BlockBuf, BlockDevice, Op, SECTOR_SIZE};
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

/// Open disks: the handle id is the index (a freed slot is reused).
static OPEN: Mutex<Vec<Option<Arc<BlockDevice>>>> = Mutex::new(Vec::new());

fn disk_of(id: usize) -> Result<Arc<BlockDevice>> {
    OPEN.lock()
        .get(id)
        .and_then(Clone::clone)
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

/// Bytes from `pos` that a transfer of `len` may touch (stops at the end).
fn clamp(d: &BlockDevice, pos: u64, len: usize) -> usize {
    size(d).saturating_sub(pos).min(len as u64) as usize
}

/// The sectors covering `pos..pos + len`, at most the disk's largest transfer from `pos`'s
/// sector: (first sector, bytes of whole sectors, offset of `pos` in them, bytes of the request
/// they cover).
fn span(d: &BlockDevice, pos: u64, len: usize) -> (u64, usize, usize, usize) {
    let bs = (d.info().block_size as usize).max(SECTOR_SIZE);
    let start = pos / bs as u64 * bs as u64;
    let skip = (pos - start) as usize;
    let max = d.info().max_bytes / bs * bs;
    let bytes = (skip + len).next_multiple_of(bs).min(max.max(bs));
    let take = (bytes - skip).min(len);
    (start / SECTOR_SIZE as u64, bytes, skip, take)
}

/// Read `buf.len()` bytes at `pos` (fewer at the end). Context: may sleep.
pub fn read_at(d: &Arc<BlockDevice>, pos: u64, buf: &mut [u8]) -> Result<usize> {
    read_with(d, pos, buf.len(), |done, bytes| {
        buf[done..done + bytes.len()].copy_from_slice(bytes);
        Ok(())
    })
}

/// Write `buf` at `pos` (fewer bytes at the end). Context: may sleep.
pub fn write_at(d: &Arc<BlockDevice>, pos: u64, buf: &[u8]) -> Result<usize> {
    write_with(d, pos, buf.len(), |done, bytes| {
        bytes.copy_from_slice(&buf[done..done + bytes.len()]);
        Ok(())
    })
}

/// Read `len` bytes at `pos` in chunks, handing each chunk's bytes and its offset in the request
/// to `put`.
fn read_with(
    d: &Arc<BlockDevice>,
    pos: u64,
    len: usize,
    mut put: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<usize> {
    let len = clamp(d, pos, len);
    let mut done = 0;
    while done < len {
        let (sector, bytes, skip, take) = span(d, pos + done as u64, len - done);
        let buf = d.read(sector, bytes)?;
        put(done, &buf.as_slice()[skip..skip + take])?;
        done += take;
    }
    Ok(len)
}

/// Write `len` bytes at `pos` in chunks; `get` fills each chunk's bytes from the request.
fn write_with(
    d: &Arc<BlockDevice>,
    pos: u64,
    len: usize,
    mut get: impl FnMut(usize, &mut [u8]) -> Result<()>,
) -> Result<usize> {
    let len = clamp(d, pos, len);
    let mut done = 0;
    while done < len {
        let (sector, bytes, skip, take) = span(d, pos + done as u64, len - done);
        let mut buf = if skip == 0 && take == bytes {
            BlockBuf::new(bytes)?
        } else {
            // Partial sectors: keep what the write does not cover.
            d.read(sector, bytes)?
        };
        get(done, &mut buf.as_mut_slice()[skip..skip + take])?;
        d.write(sector, buf).map_err(|(e, _)| e)?;
        done += take;
    }
    Ok(len)
}

/// Make completed writes durable. Context: may sleep.
pub fn sync(d: &Arc<BlockDevice>) -> Result<()> {
    d.flush()
}

// ---- the sys: handles (patch 0006 calls these from src/scheme/sys/mod.rs) ----

/// Open `kblk/NAME`'s disk; the id goes into the `sys:` handle.
pub fn open(name: &str, token: &mut CleanLockToken) -> Result<usize> {
    let d = lend_blocking(token, || find(name))?;
    let mut open = OPEN.lock();
    if let Some(i) = open.iter().position(Option::is_none) {
        open[i] = Some(d);
        return Ok(i);
    }
    open.push(Some(d));
    Ok(open.len() - 1)
}

/// Forget a handle.
pub fn close(id: usize) {
    if let Some(slot) = OPEN.lock().get_mut(id) {
        *slot = None;
    }
}

/// `pread`: through a kernel buffer, copied out in this system call.
pub fn kreadoff(
    id: usize,
    buf: UserSliceWo,
    pos: u64,
    token: &mut CleanLockToken,
) -> Result<usize> {
    let d = disk_of(id)?;
    lend_blocking(token, || {
        read_with(&d, pos, buf.len(), |done, bytes| {
            let to = buf.advance(done).ok_or(Error::new(EINVAL))?;
            to.limit(bytes.len())
                .ok_or(Error::new(EINVAL))?
                .copy_from_slice(bytes)
        })
    })
}

/// `pwrite`: copied in from the caller in this system call.
pub fn kwriteoff(
    id: usize,
    buf: UserSliceRo,
    pos: u64,
    token: &mut CleanLockToken,
) -> Result<usize> {
    let d = disk_of(id)?;
    lend_blocking(token, || {
        write_with(&d, pos, buf.len(), |done, bytes| {
            let from = buf.advance(done).ok_or(Error::new(EINVAL))?;
            from.limit(bytes.len())
                .ok_or(Error::new(EINVAL))?
                .copy_to_slice(bytes)
        })
    })
}

/// The disk's size in bytes (`lseek(SEEK_END)`).
pub fn fsize(id: usize) -> Result<u64> {
    disk_of(id).map(|d| size(&d))
}

/// `fsync`: the device's volatile cache flushed.
pub fn fsync(id: usize, token: &mut CleanLockToken) -> Result<()> {
    let d = disk_of(id)?;
    lend_blocking(token, || sync(&d))
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
