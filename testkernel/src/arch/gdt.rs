//! Per-CPU GDT and TSS. The TSS carries the interrupt-stack-table stacks that
//! double faults, NMIs and machine checks switch to, so they can be reported
//! even when the current stack is exhausted.

use core::arch::asm;
use core::cell::UnsafeCell;

use crate::percpu::MAX_CPUS;

/// Kernel code segment selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data segment selector.
pub const KERNEL_DS: u16 = 0x10;
const TSS_SEL: u16 = 0x18;

/// IST slot (1-based, as the IDT encodes it) for double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot for NMIs.
pub const IST_NMI: u8 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;
/// Size of each IST stack.
pub const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, packed(4))]
#[derive(Clone, Copy)]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct CpuTables {
    gdt: [u64; 5],
    tss: Tss,
}

struct TablesCell(UnsafeCell<CpuTables>);
// SAFETY: each CPU writes only its own entry, once, during its bring-up,
// before any other CPU could look at it.
unsafe impl Sync for TablesCell {}

#[repr(C, align(4096))]
struct IstStacks([[u8; IST_STACK_SIZE]; 3]);
struct IstCell(UnsafeCell<IstStacks>);
// SAFETY: only the CPU owning the stacks ever runs on them.
unsafe impl Sync for IstCell {}

static TABLES: [TablesCell; MAX_CPUS] = [const {
    TablesCell(UnsafeCell::new(CpuTables {
        gdt: [0; 5],
        tss: Tss {
            _reserved0: 0,
            rsp: [0; 3],
            _reserved1: 0,
            ist: [0; 7],
            _reserved2: 0,
            _reserved3: 0,
            iomap_base: 104,
        },
    }))
}; MAX_CPUS];

/// The boot CPU's IST stacks (the APs get theirs from the frame allocator).
static BSP_IST: IstCell = IstCell(UnsafeCell::new(IstStacks([[0; IST_STACK_SIZE]; 3])));

/// The IST stack tops of the boot CPU.
pub fn bsp_ist_tops() -> [u64; 3] {
    let base = BSP_IST.0.get() as u64;
    [1, 2, 3].map(|i| base + (i * IST_STACK_SIZE) as u64)
}

/// Build and load this CPU's GDT and TSS, with `ist_tops` as the tops of its
/// three IST stacks. Reloading the segment registers clears the GS base, so
/// this runs before `percpu::init_this_cpu`.
pub fn init(cpu: usize, ist_tops: [u64; 3]) {
    let cell = &TABLES[cpu];
    // SAFETY: this CPU alone touches its entry, during its own bring-up (see
    // TablesCell).
    let t = unsafe { &mut *cell.0.get() };
    t.tss.ist[0] = ist_tops[0];
    t.tss.ist[1] = ist_tops[1];
    t.tss.ist[2] = ist_tops[2];
    let tss_addr = &t.tss as *const Tss as u64;
    let limit = (core::mem::size_of::<Tss>() - 1) as u64;
    t.gdt[0] = 0;
    t.gdt[1] = 0x00af_9a00_0000_ffff;
    t.gdt[2] = 0x00cf_9200_0000_ffff;
    t.gdt[3] = (limit & 0xffff)
        | ((tss_addr & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((tss_addr >> 24) & 0xff) << 56);
    t.gdt[4] = tss_addr >> 32;

    #[repr(C, packed)]
    struct Ptr {
        limit: u16,
        base: u64,
    }
    let ptr = Ptr { limit: (5 * 8 - 1) as u16, base: t.gdt.as_ptr() as u64 };
    // SAFETY: the GDT is static and valid; the far return reloads CS with the
    // kernel code selector defined in it; the data selectors are valid; the
    // TSS descriptor points at this CPU's static TSS.
    unsafe {
        asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "xor {tmp:e}, {tmp:e}",
            "mov fs, {tmp:x}",
            "mov gs, {tmp:x}",
            "ltr {tss:x}",
            ptr = in(reg) &ptr,
            cs = const KERNEL_CS as u64,
            ds = in(reg) KERNEL_DS as u64,
            tss = in(reg) TSS_SEL as u64,
            tmp = out(reg) _,
        );
    }
}
