//! The PVH entry and the hand-off to the kernel.
//!
//! QEMU's `-kernel` loader finds the Xen PVH note and enters `shim_start32`
//! in 32-bit protected mode, paging off, `ebx` = physical address of
//! `hvm_start_info`. The trampoline zeroes `.bss`, turns on everything the
//! Redox kernel expects to find on (PAE paging, long mode, EFER.NXE, CR0.WP,
//! CR0.NE, CR0.MP, SSE), running first on static tables that identity-map the
//! low 4 GiB, and calls [`crate::shim_main`] on the shim's own stack. The
//! kernel later gets tables of its own ([`crate::paging`]) and this stack
//! ([`stack`]); [`enter_kernel`] switches to both and jumps.

use core::arch::{asm, global_asm};

/// Size of the shim's stack, handed over to the kernel as `KernelArgs.stack`.
pub const STACK_SIZE: u64 = 64 * 1024;

// shim_boot_pml4[0] -> shim_boot_pdpt -> 4 page directories of 2 MiB pages over
// 0..4 GiB (identity; the top GiB, the PCI hole with the LAPIC and IOAPIC,
// uncached). Complete at link time: no code fills them.
global_asm!(
    r#"
    .section .note.pvh, "a"
    .p2align 2
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .p2align 2
    .quad shim_start32

    .section .data.shim_boot_tables, "aw"
    .p2align 12
shim_boot_pml4:
    .quad shim_boot_pdpt + 3
    .fill 511, 8, 0
shim_boot_pdpt:
    .quad shim_boot_pd + 0x0003
    .quad shim_boot_pd + 0x1003
    .quad shim_boot_pd + 0x2003
    .quad shim_boot_pd + 0x3003
    .fill 508, 8, 0
shim_boot_pd:
    .set shim_pde, 0
    .rept 2048
    .quad (shim_pde << 21) | 0x83 | ((shim_pde / 1536) * 0x18)
    .set shim_pde, shim_pde + 1
    .endr
shim_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
shim_gdt_ptr:
    .word 23
    .quad shim_gdt

    .section .text.shim_start32, "ax"
    .code32
    .global shim_start32
shim_start32:
    cli
    cld
    movl %ebx, %esi

    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    movl $shim_boot_pml4, %eax
    movl %eax, %cr3
    // CR4: PAE, OSFXSR, OSXMMEXCPT.
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    // EFER: LME, NXE.
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x900, %eax
    wrmsr
    // CR0: clear EM and TS; set PG, WP, NE, MP, PE.
    movl %cr0, %eax
    andl $0xfffffff3, %eax
    orl $0x80010023, %eax
    movl %eax, %cr0
    lgdt shim_gdt_ptr
    ljmp $0x08, $shim_long_mode

    .code64
shim_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq $shim_stack_top, %rsp
    xorl %ebp, %ebp
    movl %esi, %edi
    call shim_main
1:
    cli
    hlt
    jmp 1b

    .section .bss.shim_stack, "aw", @nobits
    .p2align 12
    .global shim_stack_bottom
shim_stack_bottom:
    .skip 65536
    .global shim_stack_top
shim_stack_top:
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static shim_stack_bottom: u8;
    static __shim_start: u8;
    static __shim_end: u8;
}

/// The shim's stack as a physical range `(base, size)`.
pub fn stack() -> (u64, u64) {
    ((&raw const shim_stack_bottom) as u64, STACK_SIZE)
}

/// The shim's whole image (code, data, `.bss` with everything it hands
/// over) as a physical range `[start, end)`, page aligned.
pub fn image() -> (u64, u64) {
    ((&raw const __shim_start) as u64, (&raw const __shim_end) as u64)
}

/// Switch to the kernel's page tables (`cr3`) and stack (`stack_top`, a
/// virtual address valid in them) and jump to `entry` with `rdi` = `args`.
///
/// # Safety
/// `cr3` must map this code at its identity address and `stack_top`, `entry`
/// and `args` as the kernel expects; nothing of the shim runs afterwards.
pub unsafe fn enter_kernel(cr3: u64, stack_top: u64, entry: u64, args: u64) -> ! {
    // SAFETY: CPL 0, and the caller vouches that `cr3` maps this code, and the
    // identity-mapped stack it runs on, at their identity addresses: the shim
    // goes on running after the switch.
    unsafe { x86::controlregs::cr3_write(cr3) };
    // SAFETY: the caller vouches for the stack and the entry in the tables
    // now loaded. Switching stacks and jumping must be one asm block: no
    // compiler-generated code may run between them. The pushed zero is the
    // fake return address of the kernel's entry frame (rsp = 16n + 8 at
    // entry, as after a call).
    unsafe {
        asm!(
            "mov rsp, {stack}",
            "xor ebp, ebp",
            "push 0",
            "jmp {entry}",
            stack = in(reg) stack_top,
            entry = in(reg) entry,
            in("rdi") args,
            options(noreturn),
        )
    }
}
