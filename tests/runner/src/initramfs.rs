//! A Linux initramfs in the `newc` cpio format (the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`), written
//! here so that `make bench-linux` needs neither `cpio` nor root (the
//! console's device node is an archive entry, not a `mknod`).

use std::io;
use std::path::{Path, PathBuf};

/// What one archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with its contents and permission bits.
    File(Vec<u8>, u32),
    /// A character device.
    CharDev(u32, u32),
}

/// One archive entry: a path without a leading slash, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive (`bin/busybox`).
    pub path: String,
    /// Its kind.
    pub kind: Kind,
}

impl Entry {
    /// A directory.
    pub fn dir(path: &str) -> Self {
        Entry { path: path.into(), kind: Kind::Dir }
    }

    /// A regular file.
    pub fn file(path: &str, data: Vec<u8>, perm: u32) -> Self {
        Entry { path: path.into(), kind: Kind::File(data, perm) }
    }

    /// A character device node.
    pub fn char_dev(path: &str, major: u32, minor: u32) -> Self {
        Entry { path: path.into(), kind: Kind::CharDev(major, minor) }
    }
}

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, size: usize, rdev: (u32, u32), name: &str) {
    out.extend_from_slice(MAGIC.as_bytes());
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    let fields = [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// The archive of `entries`, in order, then the trailer. Owners are root,
/// times zero, so the same inputs give the same bytes.
pub fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match &e.kind {
            Kind::Dir => header(&mut out, ino, 0o040_755, 2, 0, (0, 0), &e.path),
            Kind::CharDev(major, minor) => header(&mut out, ino, 0o020_600, 1, 0, (*major, *minor), &e.path),
            Kind::File(data, perm) => {
                header(&mut out, ino, 0o100_000 | (perm & 0o7777), 1, data.len(), (0, 0), &e.path);
                out.extend_from_slice(data);
                pad4(&mut out);
            }
        }
    }
    header(&mut out, 0, 0, 1, 0, (0, 0), TRAILER);
    out
}

/// Where [`bench_linux`] puts the kernel modules (`lib/modules/<name>.ko`),
/// as the init script loads them.
pub const MODULES_DIR: &str = "lib/modules";

/// The `make bench-linux` initramfs: a static busybox, the init script, the
/// benchmark module, the static user-space `programs` (`bin/<file name>`:
/// `blkbench` and `mmbench`), Linux's own `modules` (in [`MODULES_DIR`],
/// under their file names), and the directories and console node they need.
pub fn bench_linux(
    busybox: &Path,
    init: &Path,
    module: &Path,
    programs: &[&Path],
    modules: &[PathBuf],
) -> io::Result<Vec<u8>> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())));
    let name_of = |p: &Path| {
        p.file_name().and_then(|n| n.to_str()).map(str::to_string).ok_or_else(|| {
            let msg = format!("{}: not a file name", p.display());
            io::Error::new(io::ErrorKind::InvalidInput, msg)
        })
    };
    let mut entries = vec![
        Entry::dir("bin"),
        Entry::dir("dev"),
        Entry::char_dev("dev/console", 5, 1),
        Entry::dir("proc"),
        Entry::dir("sys"),
        Entry::dir("lib"),
        Entry::dir(MODULES_DIR),
        Entry::file("bin/busybox", read(busybox)?, 0o755),
    ];
    for p in programs {
        entries.push(Entry::file(&format!("bin/{}", name_of(p)?), read(p)?, 0o755));
    }
    entries.push(Entry::file("init", read(init)?, 0o755));
    entries.push(Entry::file("kbench.ko", read(module)?, 0o644));
    for m in modules {
        entries.push(Entry::file(&format!("{MODULES_DIR}/{}", name_of(m)?), read(m)?, 0o644));
    }
    Ok(archive(&entries))
}
