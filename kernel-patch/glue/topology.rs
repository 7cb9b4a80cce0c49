//! CPU topology for `Port::cpu_topology`, read by each CPU about itself with CPUID (the boot CPU
//! in `init`, the others at their first `switch()`), as the testkernel reads it
//! (`testkernel/src/arch/topology.rs` and `docs/hardware.md` in the kthreadd project; Linux:
//! `arch/x86/kernel/cpu/topology*.c`, `cacheinfo.c`):
//!
//! * leaf 0x1F where it has levels, else 0xB: the x2APIC id, the SMT level's shift (the thread)
//!   and the last level's (the package); the bits between are the core within the package;
//! * without them, leaf 1 (logical processors per package) and leaf 4 (cores per package), or on
//!   AMD leaf 0x8000_0008's core id size, without SMT;
//! * the last-level cache from the highest level of leaf 4 (0x8000_001D on AMD) and its count
//!   of logical processors sharing it, else the package's;
//! * the NUMA node from Redox's own SRAT table (`numa::cpu_belongs_to_which_node`, by APIC id),
//!   0 without one. Redox at the series' commit walks only the first half of an RSDT (its
//!   `RxsdtIter` divides the table's length by 8, the XSDT's entry size, where RSDT entries are
//!   4 bytes), and QEMU lists its SRAT (and HPET) late in a 32-bit RSDT: booted there, Redox has
//!   no NUMA information and every CPU is on node 0.
//!
//! The leaves are read with `raw_cpuid::cpuid!` and decoded here: raw-cpuid's level iterator
//! panics on level types it does not know, and its cache iterator refuses AMD-vendor CPUs (which
//! QEMU's default model is).

use raw_cpuid::{cpuid, CpuId, CpuIdResult};

// The subsystem's API (the only lines to adapt when its crates change).
use kport::CpuTopology;

/// Most x2APIC topology levels read (six are defined; a bound in case a CPU never reports the
/// end).
const MAX_LEVELS: u32 = 8;
/// Most cache subleaves read from leaf 4 (L1d, L1i, L2, L3 and a spare).
const MAX_CACHES: u32 = 8;

/// ceil(log2(n)) for n >= 1 (Linux `get_count_order`).
fn count_order(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32_u32.saturating_sub(n.saturating_sub(1).leading_zeros())
    }
}

/// The x2APIC id, the SMT shift and the package shift of an extended topology leaf (0xB or
/// 0x1F), or `None` if the leaf reports no level.
fn x2apic_levels(leaf: u32) -> Option<(u32, u32, u32)> {
    let first = cpuid!(leaf, 0);
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

/// The subleaves of a deterministic cache leaf (4, or 0x8000_001D with its layout), up to the
/// first null one.
fn caches(leaf: u32) -> impl Iterator<Item = CpuIdResult> {
    (0..MAX_CACHES)
        .map(move |sub| cpuid!(leaf, sub))
        .take_while(|r| r.eax & 0x1f != 0)
}

/// Bits of the APIC id below the last-level cache, from the highest cache level's "maximum
/// logical processors sharing this cache"; `None` without cache leaves.
fn llc_shift(max_leaf: u32, amd: bool) -> Option<u32> {
    let leaf = if amd {
        if cpuid!(0x8000_0000).eax < 0x8000_001D {
            return None;
        }
        0x8000_001D
    } else if max_leaf >= 4 {
        4
    } else {
        return None;
    };
    let llc = caches(leaf).max_by_key(|r| (r.eax >> 5) & 7)?;
    Some(count_order(((llc.eax >> 14) & 0xfff).saturating_add(1)))
}

/// The SMT and package shifts without extended topology leaves.
fn legacy_shifts(id: &CpuId, max_leaf: u32, amd: bool) -> (u32, u32) {
    if amd && cpuid!(0x8000_0000).eax >= 0x8000_0008 {
        let ecx = cpuid!(0x8000_0008).ecx;
        let bits = (ecx >> 12) & 0xf;
        let pkg = if bits != 0 {
            bits
        } else {
            count_order((ecx & 0xff).saturating_add(1))
        };
        return (0, pkg);
    }
    let Some(f) = id.get_feature_info() else {
        return (0, 0);
    };
    let logical = if f.has_htt() {
        u32::from(f.max_logical_processor_ids()).max(1)
    } else {
        1
    };
    let cores = if !amd && max_leaf >= 4 {
        caches(4)
            .next()
            .map_or(1, |r| (r.eax >> 26).saturating_add(1))
    } else {
        1
    };
    (
        count_order(logical.checked_div(cores).unwrap_or(1).max(1)),
        count_order(logical),
    )
}

/// Read the calling CPU's topology.
pub fn read_this_cpu() -> CpuTopology {
    let max_leaf = cpuid!(0).eax;
    let id = CpuId::new();
    let amd = id
        .get_vendor_info()
        .is_some_and(|v| matches!(v.as_str(), "AuthenticAMD" | "HygonGenuine"));
    let extended = [0x1F, 0xB]
        .into_iter()
        .filter(|&leaf| max_leaf >= leaf)
        .find_map(x2apic_levels);
    let (apic_id, smt_shift, pkg_shift) = extended.unwrap_or_else(|| {
        let (smt, pkg) = legacy_shifts(&id, max_leaf, amd);
        let apic_id = id
            .get_feature_info()
            .map_or(0, |f| u32::from(f.initial_local_apic_id()));
        (apic_id, smt, pkg)
    });
    let llc_shift = llc_shift(max_leaf, amd).unwrap_or(pkg_shift);
    let mask = |bits: u32| {
        1_u32
            .checked_shl(bits)
            .map_or(u32::MAX, |v| v.wrapping_sub(1))
    };
    let shr = |bits: u32| apic_id.checked_shr(bits).unwrap_or(0);
    let node = usize::try_from(apic_id)
        .ok()
        .and_then(crate::numa::cpu_belongs_to_which_node)
        .filter(|&n| n != u32::MAX)
        .unwrap_or(0);
    CpuTopology {
        package: shr(pkg_shift),
        core: shr(smt_shift) & mask(pkg_shift.saturating_sub(smt_shift)),
        thread: apic_id & mask(smt_shift),
        llc: shr(llc_shift),
        node,
    }
}
