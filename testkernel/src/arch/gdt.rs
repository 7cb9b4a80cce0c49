//! Per-CPU GDT and TSS. The TSS carries the interrupt-stack-table stacks that
//! double faults, NMIs and machine checks switch to, so they can be reported
//! even when the current stack is exhausted.

use core::cell::UnsafeCell;

use x86::Ring;
use x86::bits64::segmentation::Descriptor64;
use x86::bits64::task::TaskStateSegment;
use x86::dtables::{self, DescriptorTablePointer};
use x86::segmentation::{
    self, BuildDescriptor, CodeSegmentType, DataSegmentType, Descriptor, DescriptorBuilder, GateDescriptorBuilder,
    SegmentDescriptorBuilder, SegmentSelector,
};

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

/// The GDT: null, kernel code, kernel data, then the TSS descriptor (two
/// slots in long mode). The selectors above index it.
#[repr(C)]
struct Gdt {
    null: Descriptor,
    code: Descriptor,
    data: Descriptor,
    tss: Descriptor64,
}

#[repr(C, align(16))]
struct CpuTables {
    gdt: Gdt,
    tss: TaskStateSegment,
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
        gdt: Gdt { null: Descriptor::NULL, code: Descriptor::NULL, data: Descriptor::NULL, tss: Descriptor64::NULL },
        tss: TaskStateSegment::new(),
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
    t.tss = TaskStateSegment::new();
    for (slot, top) in ist_tops.iter().enumerate() {
        t.tss.set_ist(slot, *top);
    }
    // No I/O permission bitmap: its offset points past the TSS's limit.
    t.tss.iomap_base = core::mem::size_of::<TaskStateSegment>() as u16;
    let tss_addr = &t.tss as *const TaskStateSegment as u64;
    let tss_limit = (core::mem::size_of::<TaskStateSegment>() - 1) as u64;
    // Flat 4 GiB segments; in long mode only the code segment's L bit, the
    // types and the present bits matter.
    t.gdt = Gdt {
        null: Descriptor::NULL,
        code: DescriptorBuilder::code_descriptor(0u32, 0xF_FFFF, CodeSegmentType::ExecuteRead)
            .present()
            .dpl(Ring::Ring0)
            .l()
            .limit_granularity_4kb()
            .finish(),
        data: DescriptorBuilder::data_descriptor(0u32, 0xF_FFFF, DataSegmentType::ReadWrite)
            .present()
            .dpl(Ring::Ring0)
            .db()
            .limit_granularity_4kb()
            .finish(),
        tss: <DescriptorBuilder as GateDescriptorBuilder<u64>>::tss_descriptor(tss_addr, tss_limit, true)
            .present()
            .dpl(Ring::Ring0)
            .finish(),
    };

    let ptr = DescriptorTablePointer::new(&t.gdt);
    // SAFETY: CPL 0. The GDT is static and now valid; reloading CS (a far
    // return inside the crate's `load_cs`) picks the 64-bit kernel code
    // segment defined in it, the data selectors name its data segment, FS and
    // GS get the null selector (which also clears their bases), and the TSS
    // descriptor points at this CPU's static TSS, marked busy by `ltr`.
    unsafe {
        dtables::lgdt(&ptr);
        segmentation::load_cs(SegmentSelector::from_raw(KERNEL_CS));
        let ds = SegmentSelector::from_raw(KERNEL_DS);
        segmentation::load_ds(ds);
        segmentation::load_es(ds);
        segmentation::load_ss(ds);
        let null = SegmentSelector::from_raw(0);
        segmentation::load_fs(null);
        segmentation::load_gs(null);
        x86::task::load_tr(SegmentSelector::from_raw(TSS_SEL));
    }
}
