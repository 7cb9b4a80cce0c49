//! x86-64 specifics: boot (PVH, and the Redox protocol in `redox_entry`), CPU
//! instructions, descriptor tables, interrupts, exceptions, ACPI, APIC, IOAPIC, the
//! PIT's channel 0, SMP bring-up, CPU topology.

pub mod acpi;
pub mod apic;
pub mod boot;
pub mod cpu;
pub mod exceptions;
pub mod gdt;
pub mod interrupts;
pub mod ioapic;
pub mod pit;
pub mod redox_entry;
pub mod smp;
pub mod topology;
