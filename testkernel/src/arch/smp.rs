//! Starting the application processors: INIT, then SIPI twice, through the
//! xAPIC. Each AP enters a real-mode trampoline copied to [`TRAMPOLINE_PA`],
//! switches to long mode on the boot page tables, takes the stack the boot CPU
//! prepared for it and calls [`ap_entry`].

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use super::acpi::Madt;
use super::{apic, gdt};
use crate::mem::stack::KernelStack;
use crate::mem::{frames, phys_to_virt};
use crate::percpu;

/// Physical page the trampoline runs from (SIPI vector 0x08).
pub const TRAMPOLINE_PA: u64 = 0x8000;
/// How long to wait for an AP to report in.
const AP_START_TIMEOUT_US: u64 = 1_000_000;

global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .p2align 4
    .global ap_tramp_start
ap_tramp_start:
    .code16
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl ap_gdt_ptr - ap_tramp_start + 0x8000
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(ap_pm - ap_tramp_start + 0x8000)

    .code32
ap_pm:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl ap_data_cr3 - ap_tramp_start + 0x8000, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x900, %eax
    wrmsr
    movl %cr0, %eax
    andl $0xfffffff3, %eax
    orl $0x80010023, %eax
    movl %eax, %cr0
    ljmpl $0x18, $(ap_lm - ap_tramp_start + 0x8000)

    .code64
ap_lm:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq ap_data_stack - ap_tramp_start + 0x8000, %rsp
    movq ap_data_arg - ap_tramp_start + 0x8000, %rdi
    movq ap_data_entry - ap_tramp_start + 0x8000, %rax
    xorq %rbp, %rbp
    pushq $0
    jmpq *%rax

    .p2align 3
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
ap_gdt_ptr:
    .word 31
    .long ap_gdt - ap_tramp_start + 0x8000
    .p2align 3
    .global ap_data_cr3
ap_data_cr3:
    .quad 0
    .global ap_data_stack
ap_data_stack:
    .quad 0
    .global ap_data_arg
ap_data_arg:
    .quad 0
    .global ap_data_entry
ap_data_entry:
    .quad 0
    .global ap_tramp_end
ap_tramp_end:
    .code64
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
    static ap_data_cr3: u8;
    static ap_data_stack: u8;
    static ap_data_arg: u8;
    static ap_data_entry: u8;
}

/// IST stack tops handed to each AP.
static AP_IST: [[AtomicU64; 3]; percpu::MAX_CPUS] =
    [const { [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)] }; percpu::MAX_CPUS];
/// Bottom of each CPU's boot (idle) stack, for reports.
static BOOT_STACK_BOTTOM: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];

fn tramp_field(sym: *const u8) -> *mut u64 {
    let off = sym as u64 - (&raw const ap_tramp_start) as u64;
    phys_to_virt(TRAMPOLINE_PA + off) as *mut u64
}

/// Start every CPU of the MADT other than this one. Returns how many started.
pub fn start_aps(madt: &Madt) -> usize {
    let me = apic::id();
    // SAFETY: copy the trampoline bytes (a static blob) to low memory that
    // the frame allocator never manages (below 1 MiB) and nothing else uses.
    unsafe {
        let start = &raw const ap_tramp_start;
        let len = (&raw const ap_tramp_end) as usize - start as usize;
        core::ptr::copy_nonoverlapping(start, phys_to_virt(TRAMPOLINE_PA) as *mut u8, len);
    }
    let mut started = 0;
    let mut cpu = 1;
    for &apic_id in &madt.apic_ids[..madt.nr_cpus] {
        if apic_id == me {
            continue;
        }
        let stack = KernelStack::new().expect("no memory for an AP stack");
        let mut ist = [0u64; 3];
        for t in ist.iter_mut() {
            let order = (gdt::IST_STACK_SIZE as u64 / crate::mem::PAGE_SIZE).trailing_zeros() as usize;
            let pa = frames::alloc(order).expect("no memory for an AP IST stack");
            *t = phys_to_virt(pa) + gdt::IST_STACK_SIZE as u64;
        }
        for (i, t) in ist.iter().enumerate() {
            AP_IST[cpu][i].store(*t, Ordering::Relaxed);
        }
        BOOT_STACK_BOTTOM[cpu].store(stack.bottom(), Ordering::Relaxed);
        let top = stack.top();
        crate::sched::adopt_boot_stack(cpu, stack);
        // SAFETY: the trampoline's data words are in the copied page; the AP
        // reads them only after the SIPI below.
        unsafe {
            tramp_field(&raw const ap_data_cr3).write_volatile(super::boot::boot_pml4_phys());
            tramp_field(&raw const ap_data_stack).write_volatile(top);
            tramp_field(&raw const ap_data_arg).write_volatile(cpu as u64);
            tramp_field(&raw const ap_data_entry).write_volatile(ap_entry as *const () as u64);
        }
        percpu::PERCPU[cpu].apic_id.store(apic_id, Ordering::Relaxed);
        let before = percpu::cpus_up();
        apic::send_init(apic_id);
        crate::time::udelay(10_000);
        apic::send_sipi(apic_id, (TRAMPOLINE_PA >> 12) as u8);
        crate::time::udelay(200);
        if percpu::cpus_up() == before {
            apic::send_sipi(apic_id, (TRAMPOLINE_PA >> 12) as u8);
        }
        let t0 = crate::time::now_ns();
        while percpu::cpus_up() == before {
            if crate::time::now_ns() - t0 > AP_START_TIMEOUT_US * 1000 {
                crate::kprintln!("# WARNING: cpu {cpu} (APIC id {apic_id}) did not start");
                break;
            }
            core::hint::spin_loop();
        }
        if percpu::cpus_up() > before {
            started += 1;
            cpu += 1;
        }
    }
    started
}

/// First Rust code on an AP.
extern "C" fn ap_entry(cpu: u64) -> ! {
    let cpu = cpu as usize;
    let ist = [0, 1, 2].map(|i| AP_IST[cpu][i].load(Ordering::Relaxed));
    gdt::init(cpu, ist);
    percpu::init_this_cpu(cpu, apic::id());
    super::interrupts::load_idt();
    apic::init_local();
    crate::ap_main(cpu)
}
