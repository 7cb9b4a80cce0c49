//! CPU topology: package, core, SMT thread and last-level cache from CPUID,
//! read by each CPU as it comes up, and the NUMA node from the ACPI SRAT.
//! Linux: `arch/x86/kernel/cpu/topology*.c` (the x2APIC id split into
//! levels), `cacheinfo.c` (`cpu_llc_id`), `arch/x86/mm/srat.c`.
//!
//! The leaves are decoded by `kport::topology::cpuid` (shared with the
//! Redox glue, tested on the host); this file reads them with the `x86`
//! crate's `cpuid!` on each CPU as it comes up and adds the NUMA node: the
//! SRAT's proximity domain of the CPU's APIC id, numbered densely in the
//! order the table first names each domain (as Linux's
//! `acpi_map_pxm_to_node` does for CPU entries); 0 without an SRAT or for a
//! CPU it does not list.

use kport::CpuTopology;
pub use kport::topology::cpuid::Source;
use kport::topology::cpuid::{Regs, decode};
use spin::Once;
use x86::cpuid::cpuid;

use super::acpi::Srat;
use crate::percpu::MAX_CPUS;

/// What one CPU read about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Its (x2)APIC id, as CPUID reports it.
    pub apic_id: u32,
    /// Where it sits.
    pub topology: CpuTopology,
    /// The leaves it came from.
    pub source: Source,
    /// Bits of the APIC id below the core (thread) and below the package.
    pub smt_shift: u32,
    /// Bits of the APIC id below the package.
    pub pkg_shift: u32,
    /// Bits of the APIC id below the last-level cache.
    pub llc_shift: u32,
}

/// Each CPU's probe, set once by the CPU itself.
static PROBES: [Once<Probe>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
/// The SRAT's CPU entries (set at boot, before the APs start), if any.
static SRAT: Once<Option<Srat>> = Once::new();

/// Read this CPU's topology from CPUID, with its NUMA node from `node_of`
/// (by APIC id).
fn read(node_of: impl Fn(u32) -> u32) -> Probe {
    let d = decode(|leaf, sub| {
        let r = cpuid!(leaf, sub);
        Regs { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
    });
    Probe {
        apic_id: d.apic_id,
        topology: d.topology(node_of(d.apic_id)),
        source: d.source,
        smt_shift: d.smt_shift,
        pkg_shift: d.pkg_shift,
        llc_shift: d.llc_shift,
    }
}

/// Keep the SRAT's CPU entries (boot CPU, once, before any CPU reads its
/// topology; `None` without an SRAT).
pub fn set_srat(srat: Option<Srat>) {
    SRAT.call_once(|| srat);
}

/// The NUMA node of the CPU with APIC id `apic_id` (see the module
/// documentation).
fn node_of(apic_id: u32) -> u32 {
    let Some(Some(srat)) = SRAT.get() else { return 0 };
    let cpus = &srat.cpus[..srat.nr_cpus];
    let Some(&(_, pxm)) = cpus.iter().find(|&&(a, _)| a == apic_id) else { return 0 };
    let first = cpus.iter().position(|&(_, p)| p == pxm).expect("the CPU's own entry names it");
    // Distinct domains named before this one's first appearance.
    cpus[..first].iter().enumerate().filter(|&(i, &(_, p))| !cpus[..i].iter().any(|&(_, q)| q == p)).count() as u32
}

/// Read the calling CPU's topology and keep it as CPU `cpu`'s (each CPU as
/// it comes up, before it is marked online).
pub fn init_this_cpu(cpu: usize) {
    let probe = read(node_of);
    PROBES[cpu].call_once(|| probe);
}

/// What CPU `cpu` read about itself, if it came up.
pub fn probe(cpu: usize) -> Option<Probe> {
    PROBES.get(cpu)?.get().copied()
}

/// CPU `cpu`'s topology; the port's default for a CPU that did not come up.
pub fn topology(cpu: usize) -> CpuTopology {
    probe(cpu).map_or(CpuTopology::alone(cpu), |p| p.topology)
}
