//! QEMU's firmware configuration device (fw_cfg) through its I/O ports: where the shim finds the
//! program it hands to Redox as the bootstrap image (`-fw_cfg name=opt/redox/bootstrap,file=F`).
//!
//! QEMU's PVH loader passes one module (the kernel, `-initrd`), so a second file comes another
//! way. fw_cfg is on every x86 machine QEMU emulates: a 16-bit selector port and an 8-bit data
//! port; selecting an item rewinds it, and each read of the data port returns its next byte.
//! Item 0x19 is the directory of named files (big-endian: a count, then per file its size, its
//! selector and a 56-byte NUL-padded name). Byte-wise port reads are slow under TCG (about a
//! microsecond each), which is nothing for a bootstrap program of a few hundred KiB.

use x86::io::{inb, outw};

/// The selector port (16 bits, written).
const SELECTOR: u16 = 0x510;
/// The data port (8 bits, read).
const DATA: u16 = 0x511;
/// Item 0: the signature `QEMU`.
const SIGNATURE: u16 = 0x0000;
/// Item 0x19: the file directory.
const FILE_DIR: u16 = 0x0019;
/// Bytes of a file's name in a directory entry.
const NAME_LEN: usize = 56;

/// The fw_cfg file the shim hands over as Redox's bootstrap image.
pub const BOOTSTRAP_FILE: &str = "opt/redox/bootstrap";

fn select(key: u16) {
    // SAFETY: the shim owns the machine and fw_cfg's selector port belongs to nothing else;
    // selecting an item only sets the device's read position.
    unsafe { outw(SELECTOR, key) }
}

fn read(out: &mut [u8]) {
    for b in out {
        // SAFETY: reading fw_cfg's data port returns the selected item's next byte (0 past its
        // end, or 0xff with no device) and has no other effect.
        *b = unsafe { inb(DATA) };
    }
}

/// The selector and size of fw_cfg file `name`, if QEMU has one (and has fw_cfg at all).
pub fn find(name: &str) -> Option<(u16, usize)> {
    select(SIGNATURE);
    let mut sig = [0u8; 4];
    read(&mut sig);
    if &sig != b"QEMU" {
        return None;
    }
    select(FILE_DIR);
    let mut count = [0u8; 4];
    read(&mut count);
    for _ in 0..u32::from_be_bytes(count) {
        let mut entry = [0u8; 8 + NAME_LEN];
        read(&mut entry);
        let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let key = u16::from_be_bytes([entry[4], entry[5]]);
        let raw = &entry[8..];
        let len = raw.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        if &raw[..len] == name.as_bytes() {
            return Some((key, size as usize));
        }
    }
    None
}

/// Copy the first `out.len()` bytes of the item `key` into `out`.
pub fn read_item(key: u16, out: &mut [u8]) {
    select(key);
    read(out);
}
