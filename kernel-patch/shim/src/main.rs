//! redox-pvh-shim: boots a Redox kernel ELF directly under QEMU,
//! `qemu-system-x86_64 -kernel redox-pvh-shim -initrd kernel.elf -append "KEY=VALUE ..."`.
//!
//! QEMU's PVH loader starts the shim ([`start`]); the shim reads
//! `hvm_start_info` ([`hvm`]), checks module 0 as an x86-64 kernel ELF with a
//! higher-half entry point and loads it at a `kernel_base` it chooses
//! ([`elf`], [`layout::place_kernel`]), then hands over the way Redox's
//! bootloader does: page tables mapping low memory at 0 and at
//! `PHYS_OFFSET` and the kernel at `KERNEL_OFFSET` ([`paging`]), EFER.NXE,
//! CR0.WP|NE|MP, SSE on, interrupts off, and a jump to the ELF entry
//! (`kstart`) with `rdi` = the identity-mapped [`KernelArgs`]
//! ([`bootproto::redox`]):
//! * memory areas: the e820 map minus the shim's image (reclaimable) and the
//!   kernel image (reserved) ([`layout::areas`]);
//! * env: one `KEY=VALUE\n` line per word of the `-append` command line;
//! * hwdesc: a copy of the ACPI RSDP QEMU points at;
//! * bootstrap: the fw_cfg file `opt/redox/bootstrap` if QEMU was given one
//!   (`-fw_cfg name=opt/redox/bootstrap,file=F`, [`fwcfg`]), the program Redox
//!   starts as its first user context (its entry point at offset 0x1a), padded
//!   with zeros to whole pages; otherwise one zeroed page (there is no initfs);
//! * stack: the shim's own 64 KiB stack, at `PHYS_OFFSET` (Redox's `kstart`
//!   switches to a stack of its own at once).
//!
//! Everything handed over lives in the shim's image, linked at 32 MiB (see
//! `linker.ld`). Errors (no module, not a kernel ELF, no room) print one
//! `# redox-pvh-shim: error: ...` line on COM1 and exit QEMU through
//! `isa-debug-exit` (iobase 0xf4) with the fail value 0x11 (status 35).
#![no_std]
#![no_main]
#![warn(missing_docs)]

mod elf;
mod fwcfg;
mod hvm;
mod layout;
mod paging;
mod serial;
mod start;

use core::fmt;
use core::mem::MaybeUninit;

use bootproto::pvh::MemmapEntry;
use bootproto::redox::{Area, FREE, KERNEL_OFFSET, KernelArgs, PHYS_OFFSET, RECLAIM, RESERVED};
use layout::{AREAS_MAX, Range};

// The shim's image brings bootproto's runtime symbols (`memcpy` and the rest)
// with it: the feature `runtime` in Cargo.toml.

/// Page size.
pub const PAGE_SIZE: u64 = 4096;

/// Longest env (the command line as `KEY=VALUE\n` lines).
const ENV_MAX: usize = 4096;
/// Room for the RSDP copy (36 bytes for ACPI 2.0+).
const RSDP_MAX: usize = 64;
/// Largest bootstrap program: Redox copies the image into its first user context, which
/// runs from it, stack and heap included; this project's user program needs well under this.
const BOOTSTRAP_MAX: usize = 2 << 20;
/// Where Redox reads the bootstrap program's entry point (a little-endian u64).
const BOOTSTRAP_ENTRY_AT: usize = 0x1a;

/// Everything the shim hands over except the stack, in its `.bss`.
#[repr(C, align(4096))]
struct Handover {
    bootstrap: [u8; BOOTSTRAP_MAX],
    tables: paging::Tables,
    args: KernelArgs,
    areas: [Area; AREAS_MAX],
    env: [u8; ENV_MAX],
    rsdp: [u8; RSDP_MAX],
}

static mut HANDOVER: MaybeUninit<Handover> = MaybeUninit::zeroed();

/// Why the shim cannot boot the kernel.
enum Error {
    Hvm(hvm::Error),
    NoModule,
    Elf(elf::Error),
    NoRoom(u64),
    EnvTooLong(u64),
    TooManyAreas,
    BootstrapTooBig(usize),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Hvm(e) => e.fmt(f),
            Error::NoModule => f.write_str("no kernel: pass the Redox kernel ELF as module 0 (-initrd kernel.elf)"),
            Error::Elf(e) => write!(f, "module 0 (the -initrd file): {e}"),
            Error::NoRoom(n) => {
                write!(f, "no room for a {n:#x}-byte kernel image in RAM above the shim and below 4 GiB (more -m?)")
            }
            Error::EnvTooLong(n) => write!(f, "command line of {n} bytes does not fit the {ENV_MAX}-byte env"),
            Error::TooManyAreas => write!(f, "memory map has more than {AREAS_MAX} areas"),
            Error::BootstrapTooBig(n) => write!(
                f,
                "fw_cfg file {} has {n} bytes; the bootstrap program may have at most {BOOTSTRAP_MAX}",
                fwcfg::BOOTSTRAP_FILE
            ),
        }
    }
}

impl From<hvm::Error> for Error {
    fn from(e: hvm::Error) -> Self {
        Error::Hvm(e)
    }
}

impl From<elf::Error> for Error {
    fn from(e: elf::Error) -> Self {
        Error::Elf(e)
    }
}

/// What [`start::enter_kernel`] needs.
struct Launch {
    cr3: u64,
    stack_top: u64,
    entry: u64,
    args: u64,
}

/// One `KEY=VALUE\n` line per whitespace-separated word of the command line
/// (the NUL-terminated `len` bytes at physical `pa`); returns the env's size.
fn build_env((pa, len): (u64, u64), out: &mut [u8]) -> Result<usize, Error> {
    if pa == 0 {
        return Ok(0);
    }
    // SAFETY: hvm::read found `len` bytes of command line at `pa`, below 4 GiB
    // (identity-mapped); nothing has written low memory yet.
    let text = unsafe { core::slice::from_raw_parts(pa as *const u8, len as usize) };
    bootproto::redox::env_from_cmdline(text, out).ok_or(Error::EnvTooLong(len))
}

/// Copy the RSDP at physical `pa` (20 bytes, or its `length` for revision 2
/// and later) into `out`; returns its size, or 0 when there is none.
fn copy_rsdp(pa: u64, out: &mut [u8; RSDP_MAX]) -> usize {
    if pa == 0 || pa.saturating_add(RSDP_MAX as u64) > hvm::REACHABLE {
        say!("warning: no usable RSDP address ({pa:#x}); hwdesc left empty");
        return 0;
    }
    // SAFETY: QEMU points rsdp_paddr at the RSDP in the BIOS area (low memory,
    // identity-mapped); RSDP_MAX bytes from there are readable ROM/RAM.
    unsafe { core::ptr::copy_nonoverlapping(pa as *const u8, out.as_mut_ptr(), RSDP_MAX) };
    if &out[..8] != b"RSD PTR " {
        say!("warning: no RSDP signature at {pa:#x}; hwdesc left empty");
        out.fill(0);
        return 0;
    }
    let len = if out[15] >= 2 { u32::from_le_bytes([out[20], out[21], out[22], out[23]]) as usize } else { 20 };
    let len = if out[15] >= 2 { len.clamp(36, RSDP_MAX) } else { len };
    out[len..].fill(0);
    len
}

/// Fill `out` with the bootstrap program from fw_cfg, if QEMU has one; returns the size to hand
/// over: the program rounded up to whole pages, or one zeroed page without a program.
fn load_bootstrap(out: &mut [u8; BOOTSTRAP_MAX]) -> Result<u64, Error> {
    let Some((key, size)) = fwcfg::find(fwcfg::BOOTSTRAP_FILE) else {
        say!("bootstrap: none (no fw_cfg file {}): one zeroed page", fwcfg::BOOTSTRAP_FILE);
        return Ok(PAGE_SIZE);
    };
    if size > BOOTSTRAP_MAX {
        return Err(Error::BootstrapTooBig(size));
    }
    fwcfg::read_item(key, &mut out[..size]);
    let pages = (size as u64).div_ceil(PAGE_SIZE).max(1);
    let mut entry = [0u8; 8];
    entry.copy_from_slice(&out[BOOTSTRAP_ENTRY_AT..BOOTSTRAP_ENTRY_AT + 8]);
    say!(
        "bootstrap: {size} bytes from fw_cfg {}, entry point {:#x} (at offset {BOOTSTRAP_ENTRY_AT:#x}), {pages} page(s)",
        fwcfg::BOOTSTRAP_FILE,
        u64::from_le_bytes(entry)
    );
    Ok(pages * PAGE_SIZE)
}

fn kind_name(kind: u64) -> &'static str {
    match kind {
        FREE => "free",
        RECLAIM => "reclaimable",
        RESERVED => "reserved",
        _ => "?",
    }
}

/// Read the boot data, load the kernel and fill `h`.
fn prepare(start_info_pa: u64, h: &mut Handover) -> Result<Launch, Error> {
    let boot = hvm::read(start_info_pa)?;
    let (module_base, module_size) = boot.module.ok_or(Error::NoModule)?;
    // SAFETY: module 0 lies below 4 GiB (hvm::read checked it), in the
    // identity map; it is only read, and the kernel is placed clear of it.
    let file = unsafe { core::slice::from_raw_parts(module_base as *const u8, module_size as usize) };
    let kernel = elf::check(file)?;

    // Take what is needed of the PVH boot data before anything is written.
    let env_size = build_env(boot.cmdline, &mut h.env)?;
    let rsdp_size = copy_rsdp(boot.rsdp, &mut h.rsdp);
    let bootstrap_size = load_bootstrap(&mut h.bootstrap)?;

    let (shim_start, shim_end) = start::image();
    let shim = Range { start: shim_start, end: shim_end };
    let module = Range::at(module_base, module_size);
    let kernel_base = layout::place_kernel(boot.e820(), kernel.size, shim, module).ok_or(Error::NoRoom(kernel.size))?;
    // SAFETY: place_kernel chose `size` bytes of e820 RAM below 4 GiB (the
    // identity map covers them) that overlap neither the shim's image (so no
    // live Rust object) nor the module being read.
    let image = unsafe { core::slice::from_raw_parts_mut(kernel_base as *mut u8, kernel.size as usize) };
    kernel.load(image);

    let ram_top = boot.e820().iter().filter(|e| matches!(e.kind, 1 | 3 | 4)).map(MemmapEntry::end).max().unwrap_or(0);
    let mapped = ram_top.next_multiple_of(1 << 30).clamp(4 << 30, paging::MAX_PHYS);
    let used = [(shim, RECLAIM), (Range::at(kernel_base, kernel.size), RESERVED)];
    let n_areas = layout::areas(boot.e820(), &used, mapped, &mut h.areas).ok_or(Error::TooManyAreas)?;
    let cr3 = h.tables.build(mapped, kernel_base, kernel.size);

    let (stack_base, stack_size) = start::stack();
    let addr = |p: *const u8| p as u64;
    h.args = KernelArgs {
        kernel_base,
        kernel_size: kernel.size,
        stack_base,
        stack_size,
        env_base: addr(h.env.as_ptr()),
        env_size: env_size as u64,
        hwdesc_base: if rsdp_size > 0 { addr(h.rsdp.as_ptr()) } else { 0 },
        hwdesc_size: rsdp_size as u64,
        areas_base: addr(h.areas.as_ptr().cast()),
        areas_size: (n_areas * size_of::<Area>()) as u64,
        bootstrap_base: addr(h.bootstrap.as_ptr()),
        bootstrap_size,
    };

    say!(
        "kernel entry {:#x}: {} higher-half segment(s) loaded {} at kernel_base {kernel_base:#x}, kernel_size {:#x}",
        kernel.entry,
        kernel.segments,
        if kernel.raw { "raw" } else { "segment by segment" },
        kernel.size
    );
    say!(
        "KernelArgs at {:#x}: env {env_size} bytes, RSDP copy {rsdp_size} bytes (from {:#x}), {n_areas} areas, \
         physical memory mapped to {mapped:#x}",
        addr((&raw const h.args).cast()),
        boot.rsdp
    );
    for a in &h.areas[..n_areas] {
        let (base, size, kind) = (a.base, a.size, a.kind);
        say!("area {base:#012x}..{:#012x} {}", base + size, kind_name(kind));
    }
    Ok(Launch {
        cr3,
        stack_top: PHYS_OFFSET + stack_base + stack_size,
        entry: kernel.entry,
        args: addr((&raw const h.args).cast()),
    })
}

/// First Rust code, called by the 32-bit entry on the shim's stack with the
/// physical address of `hvm_start_info`.
#[unsafe(no_mangle)]
extern "C" fn shim_main(start_info_pa: u32) -> ! {
    serial::init();
    // SAFETY: one CPU runs the shim and this is the only reference ever made
    // to HANDOVER; all-zero bytes are a valid Handover (integers only), and
    // MaybeUninit<Handover> has Handover's layout.
    let h = unsafe { &mut *(&raw mut HANDOVER).cast::<Handover>() };
    match prepare(u64::from(start_info_pa), h) {
        Ok(l) => {
            // SAFETY: the tables map the shim at its identity address, the
            // stack at PHYS_OFFSET and the kernel at KERNEL_OFFSET, loaded and
            // checked; `args` is the identity-mapped KernelArgs.
            unsafe { start::enter_kernel(l.cr3, l.stack_top, l.entry, l.args) }
        }
        Err(e) => {
            say!("error: {e}");
            serial::exit_fail()
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("error: panic: {info}");
    serial::exit_fail()
}
