//! CPU topology for `Port::cpu_topology`, read by each CPU about itself with CPUID (the boot CPU
//! in `init`, the others at their first `switch()`), as the testkernel reads it
//! (`testkernel/src/arch/topology.rs` and `docs/hardware.md` in the kthreadd project; Linux:
//! `arch/x86/kernel/cpu/topology*.c`, `cacheinfo.c`):
//!
//! * the leaves are decoded by `kport::topology::cpuid` (shared with the testkernel, tested on
//!   the host): the x2APIC id split at leaf 0x1F's or 0xB's levels, else leaves 1 and 4 (0x8000_0008
//!   on AMD), and the last-level cache from the deterministic cache leaf;
//! * the NUMA node from Redox's own SRAT table (`numa::cpu_belongs_to_which_node`, by APIC id),
//!   0 without one. Redox at the series' commit walks only the first half of an RSDT (its
//!   `RxsdtIter` divides the table's length by 8, the XSDT's entry size, where RSDT entries are
//!   4 bytes), and QEMU lists its SRAT (and HPET) late in a 32-bit RSDT: booted there, Redox has
//!   no NUMA information and every CPU is on node 0.

use raw_cpuid::cpuid;

// The subsystem's API (the only lines to adapt when its crates change).
use kport::{
    topology::cpuid::{decode, Regs},
    CpuTopology,
};

/// Read the calling CPU's topology.
pub fn read_this_cpu() -> CpuTopology {
    let d = decode(|leaf, sub| {
        let r = cpuid!(leaf, sub);
        Regs {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        }
    });
    let node = usize::try_from(d.apic_id)
        .ok()
        .and_then(crate::numa::cpu_belongs_to_which_node)
        .filter(|&n| n != u32::MAX)
        .unwrap_or(0);
    d.topology(node)
}
