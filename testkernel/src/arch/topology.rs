//! CPU topology: package, core, SMT thread and last-level cache from CPUID,
//! read by each CPU as it comes up, and the NUMA node from the ACPI SRAT.
//! Linux: `arch/x86/kernel/cpu/topology*.c` (the x2APIC id split into
//! levels), `cacheinfo.c` (`cpu_llc_id`), `arch/x86/mm/srat.c`.
//!
//! * Leaf 0x1F (where it has levels), else leaf 0xB: the x2APIC id and, per
//!   level, how far to shift it right to get the id of the next level up.
//!   The SMT level's shift strips the thread; the last level's strips
//!   everything below the package. The bits between are the core within the
//!   package (modules, tiles and dies included, so it is unique there).
//! * Without them (leaf 0xB absent or empty): leaf 1 (initial APIC id, and
//!   with HTT the logical processors per package) and leaf 4 (cores per
//!   package), as Linux's legacy `detect_ht`: without leaf 4 a package is
//!   one core and its logical processors are SMT threads. AMD CPUs have no
//!   leaf 4: the core bits come from leaf 0x8000_0008, without SMT.
//! * Last-level cache: the highest cache level of leaf 4 (0x8000_001D on AMD)
//!   and its "logical processors sharing this cache": the APIC id shifted by
//!   that many bits is the cache's machine-wide id. Without cache leaves the
//!   last-level cache is the package's, as Linux assumes.
//! * NUMA node: the SRAT's proximity domain of the CPU's APIC id, numbered
//!   densely in the order the table first names each domain (as Linux's
//!   `acpi_map_pxm_to_node` does for CPU entries); 0 without an SRAT or for a
//!   CPU it does not list.
//!
//! The raw leaves come from the `x86` crate's `cpuid!`; the vendor and leaf 1
//! are decoded by its `CpuId`. The topology and cache leaves are decoded here, because the
//! crate's level iterator panics on level types it does not know (leaf 0x1F
//! defines more than it does) and its leaf-4 iterator refuses AMD-vendor
//! CPUs, which QEMU's default model is (see `docs/hardware.md`).

use kport::CpuTopology;
use spin::Once;
use x86::cpuid::{CpuId, CpuIdResult, cpuid};

use super::acpi::Srat;
use crate::percpu::MAX_CPUS;

/// Most x2APIC topology levels read (SMT, core, module, tile, die, die
/// group: six are defined; a bound in case a CPU never reports the end).
const MAX_LEVELS: u32 = 8;
/// Most cache subleaves read from leaf 4 (L1d, L1i, L2, L3 and a spare).
const MAX_CACHES: u32 = 8;

/// Which CPUID leaves a topology came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Leaf 0x1F (V2 extended topology).
    Leaf1F,
    /// Leaf 0xB (extended topology).
    LeafB,
    /// Leaves 1 and 4 (no extended topology).
    Legacy,
}

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

/// The x2APIC id and the shifts of an extended topology leaf (0xB or 0x1F),
/// or `None` if the leaf reports no level.
fn x2apic_levels(leaf: u32) -> Option<(u32, u32, u32)> {
    let first = cpuid!(leaf, 0);
    // No logical processor at the first level: the leaf is not implemented.
    if first.ebx & 0xffff == 0 {
        return None;
    }
    let (mut smt, mut pkg) = (0, 0);
    for sub in 0..MAX_LEVELS {
        let r = cpuid!(leaf, sub);
        let kind = (r.ecx >> 8) & 0xff;
        if kind == 0 {
            break;
        }
        let shift = r.eax & 0x1f;
        // Level type 1 is SMT; the last level's shift gives the package.
        if kind == 1 {
            smt = shift;
        }
        pkg = shift;
    }
    Some((first.edx, smt, pkg))
}

/// ceil(log2(n)) for n >= 1 (Linux `get_count_order`).
fn count_order(n: u32) -> u32 {
    if n <= 1 { 0 } else { 32 - (n - 1).leading_zeros() }
}

/// The subleaves of a deterministic cache leaf (4, or 0x8000_001D, which has
/// its layout), up to the first null one.
fn caches(leaf: u32) -> impl Iterator<Item = CpuIdResult> {
    (0..MAX_CACHES).map(move |sub| cpuid!(leaf, sub)).take_while(|r| r.eax & 0x1f != 0)
}

/// Bits of the APIC id below the last-level cache: from the highest cache
/// level's "maximum logical processors sharing this cache" (EAX bits 25:14,
/// plus one). `None` without cache leaves.
fn llc_shift(max_leaf: u32, amd: bool) -> Option<u32> {
    let leaf = if amd {
        let max_ext = cpuid!(0x8000_0000).eax;
        if max_ext < 0x8000_001D {
            return None;
        }
        0x8000_001D
    } else if max_leaf >= 4 {
        4
    } else {
        return None;
    };
    let llc = caches(leaf).max_by_key(|r| (r.eax >> 5) & 7)?;
    Some(count_order(((llc.eax >> 14) & 0xfff) + 1))
}

/// The shifts without extended topology leaves: the SMT and package shifts
/// from leaf 1's logical processors per package and leaf 4's cores per
/// package (Intel, Linux `detect_ht`), or on AMD from leaf 0x8000_0008's
/// core id size, without SMT (Linux `amd_detect_cmp`).
fn legacy_shifts(cpuid: &CpuId, max_leaf: u32, amd: bool) -> (u32, u32) {
    if amd && cpuid!(0x8000_0000).eax >= 0x8000_0008 {
        let ecx = cpuid!(0x8000_0008).ecx;
        let bits = (ecx >> 12) & 0xf;
        return (0, if bits != 0 { bits } else { count_order((ecx & 0xff) + 1) });
    }
    let Some(f) = cpuid.get_feature_info() else { return (0, 0) };
    let logical = if f.has_htt() { u32::from(f.max_logical_processor_ids()).max(1) } else { 1 };
    let cores = if !amd && max_leaf >= 4 { caches(4).next().map_or(1, |r| (r.eax >> 26) + 1) } else { 1 };
    (count_order((logical / cores).max(1)), count_order(logical))
}

/// Read this CPU's topology from CPUID, with its NUMA node from `node_of`
/// (by APIC id).
fn read(node_of: impl Fn(u32) -> u32) -> Probe {
    let max_leaf = cpuid!(0).eax;
    let id = CpuId::new();
    // AMD and Hygon: no leaf 4; the cache leaf is 0x8000_001D.
    let amd = id.get_vendor_info().is_some_and(|v| matches!(v.as_str(), "AuthenticAMD" | "HygonGenuine"));
    let extended = [(0x1F, Source::Leaf1F), (0xB, Source::LeafB)]
        .into_iter()
        .filter(|&(leaf, _)| max_leaf >= leaf)
        .find_map(|(leaf, src)| x2apic_levels(leaf).map(|l| (l, src)));
    let ((apic_id, smt_shift, pkg_shift), source) = extended.unwrap_or_else(|| {
        let (smt, pkg) = legacy_shifts(&id, max_leaf, amd);
        let apic_id = id.get_feature_info().map_or(0, |f| u32::from(f.initial_local_apic_id()));
        ((apic_id, smt, pkg), Source::Legacy)
    });
    let llc_shift = llc_shift(max_leaf, amd).unwrap_or(pkg_shift);
    let mask = |bits: u32| if bits >= 32 { u32::MAX } else { (1u32 << bits) - 1 };
    let shr = |bits: u32| if bits >= 32 { 0 } else { apic_id >> bits };
    let topology = CpuTopology {
        package: shr(pkg_shift),
        core: shr(smt_shift) & mask(pkg_shift.saturating_sub(smt_shift)),
        thread: apic_id & mask(smt_shift),
        llc: shr(llc_shift),
        node: node_of(apic_id),
    };
    Probe { apic_id, topology, source, smt_shift, pkg_shift, llc_shift }
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
