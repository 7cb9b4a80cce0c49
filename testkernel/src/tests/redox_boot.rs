//! Suite `redox_boot` (explicit: runs only when named): the testkernel was
//! started through Redox's boot protocol, by `kernel-patch/shim` under QEMU,
//! and what the shim handed over arrived intact (`arch::redox_entry`).
//!
//! The runner's test (`tests/runner/tests/redox_shim.rs`) boots
//! `-kernel redox-pvh-shim -initrd testkernel` with `expect_mem_mib=` (QEMU's
//! `-m`) and `redox_env_check=abc123` on the command line, which the shim
//! turns into the Redox env.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ktests::{Args, Failure, check, check_eq, ktest};

use crate::arch::boot::boot_pml4_phys;
use crate::arch::cpu;
use crate::arch::redox_entry::{self, Area, FREE, Handover, KERNEL_VMA, KernelArgs, RECLAIM, RESERVED};
use crate::mem::{self, PAGE_SIZE, phys_to_virt};
use crate::{bootinfo, percpu};

/// The token the runner passes as `redox_env_check=`.
const ENV_TOKEN: &str = "abc123";

fn handover() -> Result<&'static Handover, Failure> {
    redox_entry::handover()
        .ok_or_else(|| Failure::Fail("not booted through the Redox protocol (came in through PVH?)".into()))
}

/// `len` bytes of physical memory at `pa`.
fn phys(pa: u64, len: u64) -> &'static [u8] {
    // SAFETY: callers pass ranges the loader handed over or firmware areas
    // below 4 GiB: never free memory the allocator could reuse, and inside the
    // direct map.
    unsafe { core::slice::from_raw_parts(phys_to_virt(pa) as *const u8, len as usize) }
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

/// A valid RSDP (signature and checksum) at `pa`?
fn rsdp_at(pa: u64) -> bool {
    let b = phys(pa, 20);
    &b[..8] == b"RSD PTR " && checksum(b) == 0
}

/// QEMU's RSDP, found the way an OS without a loader's help finds it: on a
/// 16-byte boundary in the first KiB of the EBDA or in 0xE0000..0x100000.
fn bios_rsdp() -> Option<u64> {
    let segment = phys(0x40e, 2);
    let ebda = u64::from(u16::from_le_bytes([segment[0], segment[1]])) << 4;
    let ebda = (0x80000..0xa0000).contains(&ebda).then_some(ebda..ebda + 1024);
    ebda.into_iter().flatten().step_by(16).chain((0xe0000..0x100000).step_by(16)).find(|&pa| rsdp_at(pa))
}

/// `(what, base, size)` of everything the loader handed over.
fn handed_over(h: &Handover) -> [(&'static str, u64, u64); 7] {
    let a: KernelArgs = h.args;
    [
        ("KernelArgs", h.args_pa, size_of::<KernelArgs>() as u64),
        ("kernel image", a.kernel_base, a.kernel_size),
        ("stack", a.stack_base, a.stack_size),
        ("env", a.env_base, a.env_size),
        ("hwdesc", a.hwdesc_base, a.hwdesc_size),
        ("areas", a.areas_base, a.areas_size),
        ("bootstrap", a.bootstrap_base, a.bootstrap_size),
    ]
}

fn end(x: &Area) -> u64 {
    x.base + x.size
}

ktest!(redox_boot::entered_through_the_redox_protocol [explicit = true] => |ctx| {
    let h = handover()?;
    check!(redox_entry::entered());
    let a = h.args;
    let (base, size) = (a.kernel_base, a.kernel_size);
    let image_end = mem::kernel_end_phys();
    check!(base % PAGE_SIZE == 0 && size % PAGE_SIZE == 0, "kernel {base:#x}+{size:#x} not page aligned");
    check!(size >= image_end, "kernel_size {size:#x} does not cover the image (ends at {image_end:#x})");
    check!(base == 0 || base >= image_end, "kernel_base {base:#x} overlaps the relocated image");
    // The kernel runs on its own tables ...
    check_eq!(cpu::cr3() & 0x000f_ffff_ffff_f000, boot_pml4_phys(), "CR3 vs boot_pml4");
    // ... from its copy at the physical addresses it is linked for, which
    // matches what the shim loaded at kernel_base (code and read-only data
    // never change).
    unsafe extern "C" {
        static __kernel_start: u8;
    }
    let text = (&raw const __kernel_start) as u64 - KERNEL_VMA;
    check!(phys(text, 64 * 1024) == phys(base + text, 64 * 1024), "running image differs from the loaded one");
    check!(a.stack_size > 0, "no stack handed over");
    let (bs, bn) = (a.bootstrap_base, a.bootstrap_size);
    check!(bs % PAGE_SIZE == 0 && bn >= PAGE_SIZE, "bootstrap {bs:#x}+{bn:#x}: Redox needs a whole page");
    check!(phys(bs, bn).iter().all(|&b| b == 0), "the bootstrap page is not zeroed");
    Ok(())
});

ktest!(redox_boot::memory_areas_describe_the_machine [explicit = true] => |ctx| {
    let h = handover()?;
    let a = h.args;
    let areas = h.areas();
    check_eq!(a.areas_size % size_of::<Area>() as u64, 0, "areas_size is not a whole number of areas");
    check_eq!(areas.len() as u64, a.areas_size / size_of::<Area>() as u64, "more areas than the kernel keeps");
    check!(!areas.is_empty(), "no memory areas");
    for w in areas.windows(2) {
        check!(end(&w[0]) <= w[1].base, "areas out of order or overlapping: {:x?} then {:x?}", w[0], w[1]);
    }
    for x in areas {
        let (base, size, kind) = (x.base, x.size, x.kind);
        check!(size > 0 && matches!(kind, FREE | RECLAIM | RESERVED), "bad area {x:x?}");
        check!(kind != FREE || (base % PAGE_SIZE == 0 && size % PAGE_SIZE == 0), "free area not page aligned: {x:x?}");
    }

    // RAM is everything but reserved areas, plus the kernel image (reserved
    // because it stays in use).
    let (kbase, ksize) = (a.kernel_base, a.kernel_size);
    let is_kernel = |x: &Area| x.kind == RESERVED && x.base == kbase && x.size == ksize;
    check!(areas.iter().any(is_kernel), "the kernel image {kbase:#x}+{ksize:#x} is not a reserved area");
    let ram: u64 = areas.iter().filter(|x| x.kind != RESERVED || is_kernel(x)).map(|x| x.size).sum();
    let mib = ctx.args.expect_mem_mib.ok_or(Failure::Fail("expect_mem_mib= missing (QEMU's -m)".into()))?;
    // QEMU's e820 keeps the legacy hole below 1 MiB and a few firmware pages
    // out of RAM: less than 1 MiB in all.
    check!(ram <= mib << 20 && ram > (mib - 1) << 20, "areas describe {ram:#x} bytes of RAM, QEMU has {mib} MiB");

    // Nothing handed over lies in free memory.
    for (what, base, size) in handed_over(h) {
        for x in areas.iter().filter(|x| x.kind == FREE) {
            check!(base + size <= x.base || end(x) <= base, "{what} {base:#x}+{size:#x} lies in free area {x:x?}");
        }
    }
    // The range the testkernel moved itself to was free, as its entry requires.
    let image = (0x100000, mem::kernel_end_phys());
    let fits = |x: &Area| x.kind == FREE && x.base <= image.0 && image.1 <= end(x);
    check!(areas.iter().any(fits), "image range {image:x?} is not in one free area");
    // The frame allocator manages exactly the free areas.
    check_eq!(mem::frames::counters().total, bootinfo::usable_frames(), "allocator total vs free areas");
    Ok(())
});

ktest!(redox_boot::rsdp_is_a_valid_copy_of_qemus [explicit = true] => |ctx| {
    let h = handover()?;
    let (base, size) = (h.args.hwdesc_base, h.args.hwdesc_size);
    check!(base != 0 && (20..=64).contains(&size), "no RSDP handed over (hwdesc {base:#x}+{size})");
    let copy = phys(base, size);
    check!(&copy[..8] == b"RSD PTR ", "hwdesc starts with {:02x?}", &copy[..8]);
    check_eq!(checksum(&copy[..20]), 0, "RSDP checksum");
    if copy[15] >= 2 {
        let len = u32::from_le_bytes([copy[20], copy[21], copy[22], copy[23]]) as u64;
        check_eq!(size, len, "hwdesc_size vs the XSDP's length");
        check_eq!(checksum(copy), 0, "XSDP extended checksum");
    } else {
        check_eq!(size, 20, "hwdesc_size of a revision-0 RSDP");
    }
    let qemu = bios_rsdp().ok_or(Failure::Fail("QEMU's RSDP not found in the BIOS area".into()))?;
    check!(qemu != base, "hwdesc is QEMU's RSDP itself, not a copy");
    check!(copy == phys(qemu, size), "copy {copy:02x?} differs from QEMU's RSDP at {qemu:#x}");
    // The kernel found its CPUs through this copy.
    if let Some(n) = ctx.args.expect_cpus {
        check_eq!(percpu::cpus_up(), n, "CPUs found through the handed-over RSDP vs QEMU's -smp");
    }
    Ok(())
});

ktest!(redox_boot::env_arrived_intact [explicit = true] => |ctx| {
    let h = handover()?;
    let env = h.env();
    check_eq!(env.len() as u64, h.args.env_size, "env cut short");
    let text = core::str::from_utf8(env).map_err(|e| Failure::Fail(format!("env is not UTF-8: {e}")))?;
    check!(text.ends_with('\n'), "env does not end with a newline: {text:?}");
    for line in text.lines() {
        check!(line.split_once('=').is_some_and(|(k, _)| !k.is_empty()), "env line {line:?} is not KEY=VALUE");
    }
    let has = |want: String| text.lines().any(|l| l == want);
    check_eq!(ctx.args.redox_env_check.as_deref(), Some(ENV_TOKEN), "redox_env_check= as parsed from the env");
    check!(has(format!("redox_env_check={ENV_TOKEN}")), "no redox_env_check line in {text:?}");
    // The harness ran with exactly what these lines say.
    let words: Vec<&str> = text.lines().collect();
    let parsed = Args::parse(&words.join(" "), &[]);
    check_eq!(parsed, Ok(ctx.args.clone()), "the env parsed vs the harness's arguments");
    Ok(())
});
