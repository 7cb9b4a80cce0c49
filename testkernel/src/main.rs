//! The testkernel: a bare-metal x86-64 SMP kernel that hosts the kthread,
//! workqueue and bottom-half subsystem under QEMU and runs the in-guest suite.
//!
//! Boot path: PVH entry (`arch::boot`) -> [`kernel_main`] on the boot CPU:
//! descriptor tables, serial console, boot info, clock, frame allocator,
//! heap, ACPI, APIC, IOAPIC lines, scheduler, the other CPUs (`arch::smp`), then the suite
//! runs in a kernel thread and the machine exits through `isa-debug-exit`.
#![no_std]
#![no_main]
#![warn(missing_docs)]

extern crate alloc;

mod arch;
mod bootinfo;
mod bus;
mod console;
mod exit;
mod faults;
mod harness;
mod irq;
mod mem;
mod name;
mod panic;
mod percpu;
mod port;
mod sched;
mod sync;
mod tests;
mod time;

use core::sync::atomic::Ordering;

use arch::{acpi, apic, gdt, interrupts};
use mem::frames::Range;

/// The kernel image's physical range and the boot data to keep out of the
/// frame allocator.
fn holes(bi: &bootinfo::BootInfo) -> [Range; 6] {
    let mut h = [Range { start: 0, end: 0 }; 6];
    h[0] = Range { start: 0, end: mem::kernel_end_phys() };
    h[1..5].copy_from_slice(&bi.boot_data);
    if let Some(m) = bi.module {
        h[5] = m;
    }
    h
}

/// First Rust code on the boot CPU, called by the PVH trampoline with the
/// `hvm_start_info` address, or by the Redox-protocol entry
/// (`arch::redox_entry`) with the `KernelArgs` address.
#[unsafe(no_mangle)]
pub extern "C" fn kernel_main(start_info_pa: u64) -> ! {
    gdt::init(0, gdt::bsp_ist_tops());
    percpu::init_this_cpu(0, 0);
    kport::sync::set_lock_env(&sync::LOCK_ENV);
    interrupts::init_idt();
    interrupts::load_idt();
    console::init();
    let bi = if arch::redox_entry::entered() {
        arch::redox_entry::parse(start_info_pa)
    } else {
        bootinfo::parse(start_info_pa)
    };
    time::init();

    let mut ram = [Range { start: 0, end: 0 }; bootinfo::MEMMAP_MAX];
    let n = bi.ram(&mut ram);
    mem::frames::init(&ram[..n], &holes(&bi));
    mem::heap::init();
    mem::stack::init();
    bootinfo::save(&bi);

    let madt = match acpi::read_madt(bi.rsdp) {
        Ok(m) => m,
        Err(e) => {
            kprintln!("# ktest: error: cannot read the ACPI MADT: {e}");
            exit::exit_qemu(false);
        }
    };
    apic::init_global(madt.lapic_addr);
    apic::init_local();
    percpu::PERCPU[0].apic_id.store(apic::id(), Ordering::Relaxed);
    // The IOAPIC's lines, routed to this CPU and masked until attached.
    irq::init(&madt);
    percpu::set_present(madt.nr_cpus);
    time::calibrate_lapic();
    // NUMA nodes, if the machine has an SRAT; then this CPU's topology (each
    // AP reads its own in `ap_main`).
    match acpi::read_srat(bi.rsdp) {
        Ok(srat) => arch::topology::set_srat(srat),
        Err(e) => {
            kprintln!("# WARNING: cannot read the ACPI SRAT ({e}): one NUMA node");
            arch::topology::set_srat(None);
        }
    }
    arch::topology::init_this_cpu(0);

    sched::init_interrupts();
    percpu::mark_online(0);
    sched::init_cpu(0);
    port::install();
    if let Err(e) = kthreadd::kthread::init() {
        kprintln!("# ktest: error: cannot start kthreadd: {e:?}");
        exit::exit_qemu(false);
    }
    // PCI: through the MCFG's ECAM window if there is one; BARs sized and
    // devices enabled while this is the only CPU (`drivers::pci::boot_scan`
    // says why).
    bus::init(acpi::read_mcfg(bi.rsdp).unwrap_or_else(|e| {
        kprintln!("# WARNING: cannot read the ACPI MCFG ({e}): PCI through 0xCF8/0xCFC");
        None
    }));
    let functions = drivers::pci::boot_scan(&bus::BUS);
    kprintln!(
        "# ktest: pci: {functions} functions through {}",
        if bus::uses_ecam() { "ECAM" } else { "ports 0xCF8/0xCFC" }
    );
    arch::smp::start_aps(&madt);
    mem::paging::drop_identity_map();
    sched::timer::start_tick();
    arch::cpu::sti();
    // Boot code is done calling subsystem APIs with interrupts off.
    kport::context::scheduling_started();

    harness::start(bi.cmdline(), &bi);
    sched::idle_loop()
}

/// First code of an AP after its descriptor tables and LAPIC are set up.
pub fn ap_main(cpu: usize) -> ! {
    arch::topology::init_this_cpu(cpu);
    percpu::mark_online(cpu);
    sched::init_cpu(cpu);
    sched::timer::start_tick();
    arch::cpu::sti();
    // Boot code is done calling subsystem APIs with interrupts off.
    kport::context::scheduling_started();
    sched::idle_loop()
}
