//! The PVH entry: QEMU's `-kernel` loader finds the Xen PVH note, enters
//! `pvh_start32` in 32-bit protected mode with paging off and `ebx` pointing at
//! `hvm_start_info`. The trampoline zeroes `.bss`, builds the boot page tables
//! (low 4 GiB identity-mapped and mirrored at [`PHYS_OFFSET`], the kernel at
//! `KERNEL_VMA`), enables SSE and long mode, and calls [`crate::kernel_main`].
//!
//! [`PHYS_OFFSET`]: crate::mem::PHYS_OFFSET

use core::arch::global_asm;

// Boot page tables. They live at physical addresses (in `.boot.data`) because
// the 32-bit code fills them before paging is on.
//   boot_pml4[0]   -> boot_pdpt_low  (identity 0..4 GiB, needed by the AP trampoline)
//   boot_pml4[256] -> boot_pdpt_low  (the direct map at PHYS_OFFSET)
//   boot_pml4[511] -> boot_pdpt_high (entry 510: the kernel at KERNEL_VMA -> phys 0)
// boot_pd holds 4 page directories of 2 MiB pages covering 0..4 GiB; the top GiB
// (PCI hole: LAPIC, IOAPIC, MMIO) is mapped uncached.
global_asm!(
    r#"
    .section .note.pvh, "a"
    .p2align 2
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .p2align 2
    .quad pvh_start32

    .section .boot.data, "aw"
    .p2align 12
    .global boot_pml4
boot_pml4:
    .quad boot_pdpt_low + 3
    .fill 255, 8, 0
    .quad boot_pdpt_low + 3
    .fill 254, 8, 0
    .quad boot_pdpt_high + 3
boot_pdpt_low:
    .quad boot_pd + 0x0003
    .quad boot_pd + 0x1003
    .quad boot_pd + 0x2003
    .quad boot_pd + 0x3003
    .fill 508, 8, 0
boot_pdpt_high:
    .fill 510, 8, 0
    .quad boot_pd + 3
    .quad 0
boot_pd:
    .fill 2048, 8, 0
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_ptr:
    .word 23
    .quad boot_gdt

    .section .boot.text, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, %esi

    movl $__bss_start_phys, %edi
    movl $__bss_end_phys, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    movl $boot_pd, %edi
    xorl %ecx, %ecx
1:
    movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    cmpl $1536, %ecx
    jb 2f
    orl $0x18, %eax
2:
    movl %eax, (%edi,%ecx,8)
    movl $0, 4(%edi,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jb 1b

    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x900, %eax
    wrmsr
    movl %cr0, %eax
    andl $0xfffffff3, %eax
    orl $0x80010023, %eax
    movl %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $pvh_long_mode

    .code64
pvh_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $bsp_boot_stack_top, %rsp
    xorq %rbp, %rbp
    movl %esi, %edi
    movabsq $kernel_main, %rax
    pushq $0
    jmpq *%rax

    .section .bss.boot_stack, "aw", @nobits
    .p2align 12
    .global bsp_boot_stack_bottom
bsp_boot_stack_bottom:
    .skip 65536
    .global bsp_boot_stack_top
bsp_boot_stack_top:
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static boot_pml4: u8;
}

/// Physical address of the boot PML4, used by the AP trampoline.
pub fn boot_pml4_phys() -> u64 {
    (&raw const boot_pml4) as u64
}
