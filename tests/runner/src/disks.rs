//! Virtio-blk disks for the guest's `block` suite, and the check of what the
//! guest reports about them.
//!
//! Every boot whose `tests=` selects the `block`, `pagecache` or `restart`
//! suite (or all suites, see [`block_selected`]) gets four fresh raw images in
//! the output directory (`ktest restart` makes both its boots on one set),
//! `disk-<serial>-<tag>.img` with the boot's tag (`smp2-none`), each behind a
//! `virtio-blk-pci` device whose serial number (what the guest reads with the
//! virtio-blk `GET_ID` request) names it:
//!
//! | serial | size | device | backend |
//! |---|---|---|---|
//! | `kblk-main` | 16 MiB | modern only (1af4:1042), 2 queues | writable |
//! | `kblk-ro` | 1 MiB | transitional (1af4:1001) | read-only |
//! | `kblk-err` | 1 MiB | modern only | `blkdebug`: EIO (errno 5) on every read of sector 8 and every write of sector 16 |
//! | `kblk-slow` | 1 MiB | modern only | throttled to 20 I/O operations a second, reads and writes together |
//!
//! Sectors are 512 bytes. Every image starts filled with a pattern the guest
//! can verify: byte `i` (0 to 511) of sector `s` is
//!
//! * `s.to_le_bytes()[i]` for `i < 8` (the sector number, little-endian u64),
//! * `((s * 31 + i) & 0xff) as u8` otherwise (wrapping u64 arithmetic),
//!
//! as [`pattern_byte`] computes it.
//!
//! After the boot the guest's claims about the images' contents are checked:
//! it prints KTAP diagnostics
//!
//! ```text
//! # block-image: serial=kblk-main sector=S count=N fnv1a64=HHHHHHHHHHHHHHHH
//! ```
//!
//! (`S` and `N` decimal, the hash 16 lowercase hex digits): the FNV-1a 64-bit
//! hash ([`fnv1a64`]) of the `N * 512` bytes from sector `S` as the guest
//! expects them on the disk once QEMU has exited. [`check_images`] hashes the
//! same bytes of the image file; a different hash, an unknown serial, a range
//! past the end of the image or a malformed line fails the boot.

use serde_json::json;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes per sector, on the images and in `block-image` lines.
pub const SECTOR_SIZE: u64 = 512;

/// The suite whose boots get the disks.
pub const SUITE: &str = "block";

/// Every suite that runs on the disks: the block layer's, the page
/// cache's, the flusher's, reclaim's, the restart test's, the misuse
/// table's (its block rows) and the torture suite's (block I/O through the
/// page cache among everything else).
pub const SUITES: [&str; 7] = [SUITE, "pagecache", "writeback", "kswapd", "restart", "misuse", "torture"];

/// FNV-1a 64-bit offset basis (the hash of no bytes).
pub const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64-bit prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The prefix of the guest's image-check diagnostic (after `#` and blanks).
pub const IMAGE_LINE_PREFIX: &str = "block-image:";

/// What stands between a disk's device and its image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The raw image, writable.
    Plain,
    /// The raw image, read-only (the device offers `VIRTIO_BLK_F_RO`).
    ReadOnly,
    /// QEMU's `blkdebug` driver under the raw format: EIO on every read that
    /// covers [`ERR_READ_SECTOR`] and every write that covers [`ERR_WRITE_SECTOR`].
    Faulty,
    /// A throttle group allowing [`SLOW_IOPS`] operations a second.
    Throttled,
}

/// One disk the guest gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    /// Serial number of the device (also its block node name).
    pub serial: &'static str,
    /// Image size in bytes (a multiple of [`SECTOR_SIZE`]).
    pub size: u64,
    /// Modern-only device (`disable-legacy=on`, PCI id 1af4:1042); otherwise
    /// transitional (1af4:1001).
    pub modern: bool,
    /// Number of virtqueues, if not QEMU's default.
    pub queues: Option<u32>,
    /// Without MSI-X (`vectors=0`): the guest's driver takes the legacy
    /// INTx line.
    pub intx: bool,
    /// How the image is reached.
    pub backend: Backend,
}

/// Sector whose reads fail on `kblk-err`.
pub const ERR_READ_SECTOR: u64 = 8;
/// Sector whose writes fail on `kblk-err`.
pub const ERR_WRITE_SECTOR: u64 = 16;
/// The errno `kblk-err` injects (EIO).
pub const ERR_ERRNO: i32 = 5;
/// I/O operations a second `kblk-slow` allows.
pub const SLOW_IOPS: u32 = 20;

const MIB: u64 = 1024 * 1024;

/// The disks of a boot that runs the `block` suite, in device order.
pub const DISKS: [Disk; 4] = [
    Disk { serial: "kblk-main", size: 16 * MIB, modern: true, queues: Some(2), intx: false, backend: Backend::Plain },
    Disk { serial: "kblk-ro", size: MIB, modern: false, queues: Some(1), intx: false, backend: Backend::ReadOnly },
    Disk { serial: "kblk-err", size: MIB, modern: true, queues: None, intx: false, backend: Backend::Faulty },
    Disk { serial: "kblk-slow", size: MIB, modern: true, queues: Some(1), intx: true, backend: Backend::Throttled },
];

/// Byte `i` (0 to 511) of sector `sector` of a fresh image (see the module doc).
pub fn pattern_byte(sector: u64, i: usize) -> u8 {
    if i < 8 { sector.to_le_bytes()[i] } else { (sector.wrapping_mul(31).wrapping_add(i as u64) & 0xff) as u8 }
}

/// Fill `buf` (one sector, [`SECTOR_SIZE`] bytes) with the pattern of `sector`.
pub fn fill_sector(sector: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(sector, i);
    }
}

/// Write a fresh image of `size` bytes (whole sectors) filled with the
/// pattern, replacing any file at `path`.
pub fn write_image(path: &Path, size: u64) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, File::create(path)?);
    let mut sector = [0u8; SECTOR_SIZE as usize];
    for s in 0..size / SECTOR_SIZE {
        fill_sector(s, &mut sector);
        out.write_all(&sector)?;
    }
    out.flush()
}

/// Where the image of `serial` for the boot tagged `tag` lives in `dir`.
pub fn image_path(dir: &Path, serial: &str, tag: &str) -> PathBuf {
    dir.join(format!("disk-{serial}-{tag}.img"))
}

/// Does the guest command line `cmdline` run the `block` suite? As the guest
/// reads it: the last `tests=` word counts, `all` or an empty list selects
/// every suite, and `fault=` without a suite list means `tests=fault`.
pub fn block_selected(cmdline: &str) -> bool {
    let mut tests = "all";
    let mut fault = false;
    for word in cmdline.split_ascii_whitespace() {
        match word.split_once('=') {
            Some(("tests", v)) => tests = v,
            Some(("fault", _)) => fault = true,
            _ => {}
        }
    }
    let mut suites = tests.split(',').filter(|s| !s.is_empty()).peekable();
    if tests == "all" || suites.peek().is_none() {
        return !fault;
    }
    suites.any(|s| SUITES.contains(&s))
}

/// The images of one boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDisks {
    /// Each disk with its image file, in device order.
    pub images: Vec<(Disk, PathBuf)>,
}

impl BootDisks {
    /// Write fresh images of all [`DISKS`] into `dir` for the boot tagged `tag`.
    /// The paths must be UTF-8 (they go into QEMU's JSON options).
    pub fn create(dir: &Path, tag: &str) -> std::io::Result<BootDisks> {
        let mut images = Vec::new();
        for disk in DISKS {
            let path = image_path(dir, disk.serial, tag);
            if path.to_str().is_none() {
                let msg = format!("{} is not UTF-8", path.display());
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
            }
            write_image(&path, disk.size)?;
            images.push((disk, path));
        }
        Ok(BootDisks { images })
    }

    /// The image of the disk with serial `serial`.
    pub fn image(&self, serial: &str) -> Option<(&Disk, &Path)> {
        self.images.iter().find(|(d, _)| d.serial == serial).map(|(d, p)| (d, p.as_path()))
    }

    /// The QEMU arguments that attach the images: per disk a `-blockdev` in
    /// JSON (node name = serial, `raw` format over a `file`, with `blkdebug`
    /// or a `throttle` filter where the backend asks for one), a
    /// `-device virtio-blk-pci` with `id=<serial>-dev`, and for the throttled
    /// disk the `-object throttle-group` before them.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (disk, path) in &self.images {
            let file = json!({ "driver": "file", "filename": path.to_string_lossy() });
            let node = match disk.backend {
                Backend::Plain => json!({ "driver": "raw", "node-name": disk.serial, "file": file }),
                Backend::ReadOnly => {
                    let file = json!({ "driver": "file", "filename": path.to_string_lossy(), "read-only": true });
                    json!({ "driver": "raw", "node-name": disk.serial, "read-only": true, "file": file })
                }
                // blkdebug's rules fire on the events the raw driver above it
                // raises (read_aio, write_aio, and flush_to_disk when a flush
                // comes down); `iotype` keeps a read rule off writes and the
                // other way round. `immediately` fails the request at the
                // event, not the next one.
                Backend::Faulty => {
                    let rule = |event: &str, iotype: &str, sector: u64| json!({ "event": event, "iotype": iotype, "errno": ERR_ERRNO, "sector": sector, "once": false, "immediately": true });
                    let flush = json!({ "event": "flush_to_disk", "iotype": "flush", "errno": ERR_ERRNO, "once": false, "immediately": true });
                    let debug = json!({
                        "driver": "blkdebug",
                        "inject-error": [
                            rule("read_aio", "read", ERR_READ_SECTOR),
                            rule("write_aio", "write", ERR_WRITE_SECTOR),
                            flush,
                        ],
                        "image": file,
                    });
                    json!({ "driver": "raw", "node-name": disk.serial, "file": debug })
                }
                Backend::Throttled => {
                    let group = throttle_group(disk.serial);
                    args.push("-object".to_string());
                    args.push(format!("throttle-group,id={group},x-iops-total={SLOW_IOPS}"));
                    let raw = json!({ "driver": "raw", "file": file });
                    json!({ "driver": "throttle", "node-name": disk.serial, "throttle-group": group, "file": raw })
                }
            };
            args.push("-blockdev".to_string());
            args.push(node.to_string());
            let mut device = format!("virtio-blk-pci,drive={0},id={0}-dev,serial={0}", disk.serial);
            if disk.modern {
                device.push_str(",disable-legacy=on");
            }
            if let Some(n) = disk.queues {
                device.push_str(&format!(",num-queues={n}"));
            }
            if disk.intx {
                device.push_str(",vectors=0");
            }
            args.push("-device".to_string());
            args.push(device);
        }
        args
    }

    /// Delete the image files (missing ones are fine).
    pub fn remove(&self) -> std::io::Result<()> {
        for (_, path) in &self.images {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The id of the throttle group of the disk `serial`.
pub fn throttle_group(serial: &str) -> String {
    format!("{serial}-tg")
}

/// Continue an FNV-1a 64-bit hash over `bytes` (start from [`FNV_OFFSET_BASIS`]).
pub fn fnv1a64(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    hash
}

/// One `# block-image:` line: the guest's hash of a range of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRange {
    /// Serial of the disk.
    pub serial: String,
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub count: u64,
    /// FNV-1a 64-bit hash of the range, as the guest expects it.
    pub fnv1a64: u64,
}

/// Parse one line of serial output: `None` when it is not a `block-image`
/// diagnostic (at any indentation), `Some(Err(why))` when it is one but
/// malformed.
pub fn parse_image_line(line: &str) -> Option<Result<ImageRange, String>> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start().strip_prefix(IMAGE_LINE_PREFIX)?;
    let bad = |why: &str| Some(Err(format!("malformed block-image line ({why}): {}", line.trim())));
    let (mut serial, mut sector, mut count, mut hash) = (None, None, None, None);
    for word in rest.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            return bad(&format!("'{word}' is not key=value"));
        };
        let slot_taken = match key {
            "serial" => serial.replace(value.to_string()).is_some(),
            "sector" => match value.parse::<u64>() {
                Ok(n) => sector.replace(n).is_some(),
                Err(_) => return bad("sector is not a decimal number"),
            },
            "count" => match value.parse::<u64>() {
                Ok(n) => count.replace(n).is_some(),
                Err(_) => return bad("count is not a decimal number"),
            },
            "fnv1a64" => {
                let hex = value.len() == 16 && value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                match u64::from_str_radix(value, 16) {
                    Ok(h) if hex => hash.replace(h).is_some(),
                    _ => return bad("fnv1a64 is not 16 lowercase hex digits"),
                }
            }
            _ => return bad(&format!("unknown key '{key}'")),
        };
        if slot_taken {
            return bad(&format!("'{key}' given twice"));
        }
    }
    match (serial, sector, count, hash) {
        (Some(serial), Some(sector), Some(count), Some(fnv1a64)) => {
            Some(Ok(ImageRange { serial, sector, count, fnv1a64 }))
        }
        _ => bad("serial, sector, count and fnv1a64 are all needed"),
    }
}

/// The FNV-1a 64-bit hash of `count` sectors of the image at `path` from
/// sector `sector`; `Ok(None)` when the range goes past the end of the file.
pub fn hash_range(path: &Path, sector: u64, count: u64) -> std::io::Result<Option<u64>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = sector.checked_mul(SECTOR_SIZE);
    let end = sector.checked_add(count).and_then(|e| e.checked_mul(SECTOR_SIZE));
    let (Some(start), Some(end)) = (start, end) else { return Ok(None) };
    if end > len {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(start))?;
    let mut hash = FNV_OFFSET_BASIS;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = end - start;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n])?;
        hash = fnv1a64(hash, &buf[..n]);
        left -= n as u64;
    }
    Ok(Some(hash))
}

/// What [`check_images`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCheck {
    /// Number of `block-image` lines seen (each checked, well-formed or not).
    pub checked: usize,
    /// One line per range that failed, naming serial, sector and both hashes.
    pub failures: Vec<String>,
}

/// Check every `block-image` line of a boot's serial output `raw` against the
/// images of `disks` (`None`: the boot had no disks, so every line fails).
pub fn check_images(raw: &str, disks: Option<&BootDisks>) -> ImageCheck {
    let mut check = ImageCheck::default();
    for line in raw.lines() {
        let Some(parsed) = parse_image_line(line) else { continue };
        check.checked += 1;
        let failure = match parsed {
            Err(why) => Some(why),
            Ok(r) => check_range(&r, disks),
        };
        check.failures.extend(failure);
    }
    check
}

fn check_range(r: &ImageRange, disks: Option<&BootDisks>) -> Option<String> {
    let (serial, sector, count) = (&r.serial, r.sector, r.count);
    let Some((_, path)) = disks.and_then(|d| d.image(serial)) else {
        return Some(format!("block-image: unknown serial '{serial}' (sector={sector} count={count})"));
    };
    match hash_range(path, sector, count) {
        Ok(Some(h)) if h == r.fnv1a64 => None,
        Ok(Some(h)) => Some(format!(
            "block-image: serial={serial} sector={sector} count={count}: guest fnv1a64={:016x}, image fnv1a64={h:016x}",
            r.fnv1a64
        )),
        Ok(None) => {
            let sectors = std::fs::metadata(path).map(|m| m.len() / SECTOR_SIZE).unwrap_or(0);
            Some(format!(
                "block-image: serial={serial} sector={sector} count={count}: past the end of the image ({sectors} sectors)"
            ))
        }
        Err(e) => Some(format!("block-image: serial={serial} sector={sector}: cannot read {}: {e}", path.display())),
    }
}
