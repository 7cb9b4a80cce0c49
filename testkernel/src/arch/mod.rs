//! x86-64 specifics: boot, CPU instructions, descriptor tables, interrupts,
//! exceptions, ACPI, APIC, SMP bring-up.

pub mod acpi;
pub mod apic;
pub mod boot;
pub mod cpu;
pub mod exceptions;
pub mod gdt;
pub mod interrupts;
pub mod smp;
