//! The Redox boot protocol: the testkernel can also be started the way Redox's
//! bootloader starts the Redox kernel, which is how `kernel-patch/shim` (the
//! PVH shim that boots a Redox kernel under QEMU) is tested without Redox.
//!
//! The loader enters `redox_kstart` (the ELF entry point; the PVH path uses
//! the Xen note instead, so both entries coexist) in 64-bit mode with paging
//! on, interrupts off, SSE enabled and `rdi` = the physical, identity-mapped
//! address of a [`KernelArgs`]. Its page tables map low physical memory at 0
//! and at `PHYS_OFFSET`, and the kernel's higher half `0xFFFF_FFFF_8000_0000 +
//! x` at `kernel_base + x`.
//!
//! The testkernel is linked for `KERNEL_VMA + x -> physical x` (its PVH
//! layout), while the loader chooses `kernel_base`. So the entry relocates
//! itself: it copies its file-backed higher half (`.text` to the end of
//! `.data`) from `kernel_base + x` down to `x`, points the shared
//! `boot_pml4` at tables that map `KERNEL_VMA -> 0` (static data in the image,
//! so the copy brings them along), switches to them, zeroes `.bss` and goes on
//! exactly like the PVH path, in [`crate::kernel_main`], with a
//! [`BootInfo`] built from the `KernelArgs` ([`parse`], through
//! [`bootproto::redox`], whose layout the shim fills).
//!
//! Requirements on the loader (the shim meets them by placing everything it
//! hands over in its own image at 32 MiB and the kernel above it): the
//! physical range the testkernel is linked for, 1 MiB up to `__kernel_end`,
//! is free memory that holds none of the hand-over, and `kernel_base` is 0
//! (already in place) or at or above the image's physical end, so that the
//! copy never overlaps its source. The entry checks the last two and stops
//! with a `# ktest: error:` line and the fail exit otherwise.
//!
//! Everything the entry leaves behind of the hand-over (KernelArgs, env,
//! memory areas, RSDP copy) is copied by [`parse`] and kept for the
//! `redox_boot` suite ([`handover`]).

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

use bootproto::PhysMem;
use bootproto::pvh::MemmapEntry;
pub use bootproto::redox::{Area, FREE, KernelArgs, RECLAIM, RESERVED};

use crate::bootinfo::{BootInfo, CMDLINE_MAX, MEMMAP_MAX, boot_memory};
use crate::kprintln;
use crate::mem::frames::Range;

// The entry. It only uses the loader's page tables until it has copied
// itself and written `boot_pml4` (which lives in the PVH-only `.boot` segment
// at its link address = physical address, identity-mapped by the loader); from
// the `mov %cr3` on, it runs on the testkernel's own tables, on the copy.
//   redox_pdpt_low:  identity / direct map of 0..4 GiB (boot_pml4[0], [256])
//   redox_pdpt_high: entry 510 maps KERNEL_VMA -> 0 (boot_pml4[511])
//   redox_pd:        2 MiB pages over 0..4 GiB, the top GiB uncached,
// the same map the PVH trampoline builds in `.boot` (see `boot.rs`).
global_asm!(
    r##"
    .equ REDOX_KVMA, 0xffffffff80000000

    .section .data.redox_boot_tables, "aw"
    .p2align 12
redox_pdpt_low:
    .quad redox_pd - REDOX_KVMA + 0x0003
    .quad redox_pd - REDOX_KVMA + 0x1003
    .quad redox_pd - REDOX_KVMA + 0x2003
    .quad redox_pd - REDOX_KVMA + 0x3003
    .fill 508, 8, 0
redox_pdpt_high:
    .fill 510, 8, 0
    .quad redox_pd - REDOX_KVMA + 3
    .quad 0
redox_pd:
    .set redox_pde, 0
    .rept 2048
    .quad (redox_pde << 21) | 0x83 | ((redox_pde / 1536) * 0x18)
    .set redox_pde, redox_pde + 1
    .endr

    .section .rodata.redox_entry, "a"
    .p2align 3
redox_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
redox_gdt_ptr:
    .word 23
    .quad redox_gdt
redox_bad_layout_msg:
    .asciz "# ktest: error: redox entry: kernel_base or KernelArgs overlaps the physical range the testkernel is linked for\n"

    .section .text.redox_kstart, "ax"
    .code64
    .global redox_kstart
redox_kstart:
    cli
    cld
    movq %rdi, %r12

    // The hand-over must stay clear of [1 MiB, image end) ...
    movabsq $(__kernel_end - REDOX_KVMA), %r13
    cmpq %r13, %rdi
    jae 1f
    cmpq $0x100000, %rdi
    jae redox_bad_layout
1:
    // ... and so must the source of the copy, unless it is already in place.
    movq (%rdi), %rsi
    testq %rsi, %rsi
    jz 2f
    cmpq %r13, %rsi
    jb redox_bad_layout
    movabsq $(__kernel_start - REDOX_KVMA), %rdi
    addq %rdi, %rsi
    movabsq $__bss_start, %rcx
    movabsq $__kernel_start, %rax
    subq %rax, %rcx
    rep movsb
2:
    movabsq $boot_pml4, %rbx
    movq %rbx, %rdi
    movl $512, %ecx
    xorl %eax, %eax
    rep stosq
    movabsq $(redox_pdpt_low - REDOX_KVMA + 3), %rax
    movq %rax, (%rbx)
    movq %rax, 256*8(%rbx)
    movabsq $(redox_pdpt_high - REDOX_KVMA + 3), %rax
    movq %rax, 511*8(%rbx)
    movq %rbx, %cr3

    lgdt redox_gdt_ptr(%rip)
    movabsq $bsp_boot_stack_top, %rsp
    pushq $0x08
    leaq 3f(%rip), %rax
    pushq %rax
    lretq
3:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $__bss_start, %rdi
    movabsq $__bss_end, %rcx
    subq %rdi, %rcx
    xorl %eax, %eax
    rep stosb
    movabsq $bsp_boot_stack_top, %rsp
    xorl %ebp, %ebp
    movq %r12, %rdi
    pushq $0
    movabsq $redox_main, %rax
    jmpq *%rax

redox_bad_layout:
    leaq redox_bad_layout_msg(%rip), %rsi
4:
    movb (%rsi), %bl
    testb %bl, %bl
    jz 6f
    movw $0x3fd, %dx
5:
    inb %dx, %al
    testb $0x20, %al
    jz 5b
    movw $0x3f8, %dx
    movb %bl, %al
    outb %al, %dx
    incq %rsi
    jmp 4b
6:
    movl $0x11, %eax
    movw $0xf4, %dx
    outl %eax, %dx
7:
    hlt
    jmp 7b
"##,
    options(att_syntax)
);

/// Where the testkernel links its higher half (physical 0 maps here): where
/// Redox links its kernel, which is what a Redox loader maps.
pub const KERNEL_VMA: u64 = bootproto::redox::KERNEL_OFFSET;

/// Longest environment kept (it becomes the command line).
pub const ENV_MAX: usize = CMDLINE_MAX - 1;

/// The hand-over as it arrived, kept for the `redox_boot` suite.
pub struct Handover {
    /// The `KernelArgs`.
    pub args: KernelArgs,
    /// Its physical address.
    pub args_pa: u64,
    /// The environment bytes (at most [`ENV_MAX`]).
    pub env: [u8; ENV_MAX],
    /// How many of them.
    pub env_len: usize,
    /// The memory areas (at most [`MEMMAP_MAX`]).
    pub areas: [Area; MEMMAP_MAX],
    /// How many of them.
    pub areas_len: usize,
}

impl Handover {
    /// The environment as it arrived.
    pub fn env(&self) -> &[u8] {
        &self.env[..self.env_len]
    }

    /// The memory areas as they arrived.
    pub fn areas(&self) -> &[Area] {
        &self.areas[..self.areas_len]
    }
}

static ENTERED: AtomicBool = AtomicBool::new(false);
static HANDOVER: spin::Once<Handover> = spin::Once::new();

/// Did the boot CPU come in through the Redox protocol?
pub fn entered() -> bool {
    ENTERED.load(Ordering::Acquire)
}

/// The Redox hand-over, if the kernel was booted that way.
pub fn handover() -> Option<&'static Handover> {
    HANDOVER.get()
}

/// First Rust code of the Redox path: from here on the boot is the PVH one.
#[unsafe(no_mangle)]
extern "C" fn redox_main(args_pa: u64) -> ! {
    ENTERED.store(true, Ordering::Release);
    crate::kernel_main(args_pa)
}

/// Build the boot information from the `KernelArgs` at physical `pa`: memory
/// map from the areas, RSDP from hwdesc, command line from the env (its lines
/// joined by spaces). Keeps a copy of everything for [`handover`].
pub fn parse(pa: u64) -> BootInfo {
    let mem = boot_memory();
    let args = KernelArgs::read(&mem, pa).unwrap_or_else(|e| panic!("KernelArgs: {e}"));
    let mut bi = BootInfo {
        cmdline: [0; CMDLINE_MAX],
        cmdline_len: 0,
        memmap: [MemmapEntry::default(); MEMMAP_MAX],
        memmap_len: 0,
        rsdp: 0,
        module: None,
        boot_data: [Range { start: 0, end: 0 }; 4],
    };
    let mut h = Handover {
        args,
        args_pa: pa,
        env: [0; ENV_MAX],
        env_len: 0,
        areas: [Area::default(); MEMMAP_MAX],
        areas_len: 0,
    };

    let env_size = args.env_size as usize;
    if env_size > ENV_MAX {
        kprintln!("# redox entry: warning: env of {env_size} bytes cut to {ENV_MAX}");
    }
    h.env_len = env_size.min(ENV_MAX);
    mem.read(args.env_base, &mut h.env[..h.env_len]).unwrap_or_else(|e| panic!("env: {e}"));
    // ENV_MAX < CMDLINE_MAX: every word of the env fits the command line.
    bi.cmdline_len = bootproto::redox::cmdline_from_env(h.env(), &mut bi.cmdline);

    let count = args.areas_len();
    if count > MEMMAP_MAX {
        kprintln!("# redox entry: warning: {count} memory areas, only {MEMMAP_MAX} kept");
    }
    h.areas_len = args.read_areas(&mem, &mut h.areas).unwrap_or_else(|e| panic!("memory areas: {e}"));
    for (e, a) in bi.memmap.iter_mut().zip(h.areas()) {
        // The boot memory map speaks e820: 1 RAM, 3 reclaimable, 2 reserved.
        *e = MemmapEntry { base: a.base, size: a.size, kind: bootproto::redox::e820_kind(a.kind) };
    }
    bi.memmap_len = h.areas_len;

    let mut sig = [0u8; 8];
    if args.hwdesc_base != 0 && args.hwdesc_size >= 20 {
        mem.read(args.hwdesc_base, &mut sig).unwrap_or_else(|e| panic!("hwdesc: {e}"));
    }
    if &sig == b"RSD PTR " {
        bi.rsdp = args.hwdesc_base;
    }

    let range = |base: u64, size: u64| Range { start: base, end: base + size };
    bi.boot_data = [
        range(pa, KernelArgs::SIZE as u64),
        range(args.env_base, args.env_size),
        range(args.areas_base, args.areas_size),
        range(args.hwdesc_base, args.hwdesc_size),
    ];
    kprintln!(
        "# redox entry: kernel_base={:#x} kernel_size={:#x} env={} bytes areas={} rsdp={:#x}",
        { args.kernel_base },
        { args.kernel_size },
        h.env_len,
        h.areas_len,
        bi.rsdp
    );
    HANDOVER.call_once(|| h);
    bi
}
