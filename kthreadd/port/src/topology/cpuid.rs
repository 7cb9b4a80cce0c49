//! x86 CPU topology from CPUID, decoded from the raw leaves a port reads
//! (Linux: `arch/x86/kernel/cpu/topology*.c`, the x2APIC id split into
//! levels, and `cacheinfo.c`, `cpu_llc_id`). Both x86 ports (the testkernel
//! and the Redox glue) read CPUID on each CPU themselves and hand the reads
//! to [`decode`] as a function of (leaf, subleaf); the decoding is plain
//! code, tested on the host with recorded leaves.
//!
//! * Leaf 0x1F where it has levels, else leaf 0xB: the x2APIC id and, per
//!   level, how far to shift it right to get the id of the next level up.
//!   The SMT level's shift strips the thread; the last level's strips
//!   everything below the package. The bits between are the core within the
//!   package (modules, tiles and dies included, so it is unique there).
//! * Without them: leaf 1 (initial APIC id, and with HTT the logical
//!   processors per package) and leaf 4 (cores per package), as Linux's
//!   legacy `detect_ht`: without leaf 4 a package is one core and its
//!   logical processors are SMT threads. AMD (and Hygon) CPUs have no leaf
//!   4: the core bits come from leaf 0x8000_0008, without SMT.
//! * Last-level cache: the highest cache level of leaf 4 (0x8000_001D on
//!   AMD) and its "logical processors sharing this cache": the APIC id
//!   shifted by that many bits is the cache's machine-wide id. Without cache
//!   leaves the last-level cache is the package's, as Linux assumes.
//!
//! The leaves are decoded here rather than with a CPUID crate's iterators:
//! those panic on level types they do not know (leaf 0x1F defines more than
//! they do) or refuse AMD-vendor CPUs, which QEMU's default model is.

use super::CpuTopology;

/// What one CPUID instruction returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Regs {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Which CPUID leaves a topology came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Leaf 0x1F (V2 extended topology).
    Leaf1F,
    /// Leaf 0xB (extended topology).
    LeafB,
    /// Leaves 1 and 4, or 0x8000_0008 on AMD (no extended topology).
    Legacy,
}

/// What one CPU's CPUID says about where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Its (x2)APIC id, as CPUID reports it.
    pub apic_id: u32,
    /// The leaves it came from.
    pub source: Source,
    /// Bits of the APIC id below the core (the thread).
    pub smt_shift: u32,
    /// Bits of the APIC id below the package.
    pub pkg_shift: u32,
    /// Bits of the APIC id below the last-level cache.
    pub llc_shift: u32,
}

impl Decoded {
    /// The topology these bits give, on NUMA node `node` (which CPUID does
    /// not tell: the port finds it in the SRAT by [`Decoded::apic_id`]).
    pub fn topology(&self, node: u32) -> CpuTopology {
        let id = self.apic_id;
        let mask = |bits: u32| 1u32.checked_shl(bits).map_or(u32::MAX, |v| v - 1);
        let shr = |bits: u32| id.checked_shr(bits).unwrap_or(0);
        CpuTopology {
            package: shr(self.pkg_shift),
            core: shr(self.smt_shift) & mask(self.pkg_shift.saturating_sub(self.smt_shift)),
            thread: id & mask(self.smt_shift),
            llc: shr(self.llc_shift),
            node,
        }
    }
}

/// Most x2APIC topology levels read (SMT, core, module, tile, die, die
/// group: six are defined; a bound in case a CPU never reports the end).
const MAX_LEVELS: u32 = 8;
/// Most cache subleaves read (L1d, L1i, L2, L3 and a spare).
const MAX_CACHES: u32 = 8;

/// ceil(log2(n)) for n >= 1 (Linux `get_count_order`).
fn count_order(n: u32) -> u32 {
    if n <= 1 { 0 } else { 32 - (n - 1).leading_zeros() }
}

/// The x2APIC id, the SMT shift and the package shift of an extended
/// topology leaf (0xB or 0x1F), or `None` if the leaf reports no level.
fn x2apic_levels(cpuid: &impl Fn(u32, u32) -> Regs, leaf: u32) -> Option<(u32, u32, u32)> {
    let first = cpuid(leaf, 0);
    // No logical processor at the first level: the leaf is not implemented.
    if first.ebx & 0xffff == 0 {
        return None;
    }
    let (mut smt, mut pkg) = (0, 0);
    for sub in 0..MAX_LEVELS {
        let r = cpuid(leaf, sub);
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

/// The subleaves of a deterministic cache leaf (4, or 0x8000_001D, which
/// has its layout), up to the first null one.
fn caches(cpuid: &impl Fn(u32, u32) -> Regs, leaf: u32) -> impl Iterator<Item = Regs> {
    (0..MAX_CACHES).map(move |sub| cpuid(leaf, sub)).take_while(|r| r.eax & 0x1f != 0)
}

/// Bits of the APIC id below the last-level cache: from the highest cache
/// level's "maximum logical processors sharing this cache" (EAX bits 25:14,
/// plus one). `None` without cache leaves.
fn llc_shift(cpuid: &impl Fn(u32, u32) -> Regs, max_leaf: u32, amd: bool) -> Option<u32> {
    let leaf = if amd {
        if cpuid(0x8000_0000, 0).eax < 0x8000_001D {
            return None;
        }
        0x8000_001D
    } else if max_leaf >= 4 {
        4
    } else {
        return None;
    };
    let llc = caches(cpuid, leaf).max_by_key(|r| (r.eax >> 5) & 7)?;
    Some(count_order(((llc.eax >> 14) & 0xfff) + 1))
}

/// The SMT and package shifts without extended topology leaves, from leaf
/// 1's logical processors per package and leaf 4's cores per package
/// (Intel, Linux `detect_ht`), or on AMD from leaf 0x8000_0008's core id
/// size, without SMT (Linux `amd_detect_cmp`).
fn legacy_shifts(cpuid: &impl Fn(u32, u32) -> Regs, max_leaf: u32, amd: bool) -> (u32, u32) {
    if amd && cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        let ecx = cpuid(0x8000_0008, 0).ecx;
        let bits = (ecx >> 12) & 0xf;
        return (0, if bits != 0 { bits } else { count_order((ecx & 0xff) + 1) });
    }
    if max_leaf < 1 {
        return (0, 0);
    }
    let leaf1 = cpuid(1, 0);
    // EDX bit 28 (HTT): EBX bits 23:16 count the logical processors.
    let logical = if leaf1.edx & (1 << 28) != 0 { ((leaf1.ebx >> 16) & 0xff).max(1) } else { 1 };
    let cores = if !amd && max_leaf >= 4 { caches(cpuid, 4).next().map_or(1, |r| (r.eax >> 26) + 1) } else { 1 };
    (count_order((logical / cores).max(1)), count_order(logical))
}

/// Is the vendor string of leaf 0 AMD's or Hygon's (no leaf 4; the cache
/// leaf is 0x8000_001D)?
fn amd_vendor(leaf0: Regs) -> bool {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    v[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    &v == b"AuthenticAMD" || &v == b"HygonGenuine"
}

/// Decode the calling CPU's topology from `cpuid(leaf, subleaf)`, the
/// CPU's own CPUID (see the module documentation).
pub fn decode(cpuid: impl Fn(u32, u32) -> Regs) -> Decoded {
    let leaf0 = cpuid(0, 0);
    let max_leaf = leaf0.eax;
    let amd = amd_vendor(leaf0);
    let extended = [(0x1F, Source::Leaf1F), (0xB, Source::LeafB)]
        .into_iter()
        .filter(|&(leaf, _)| max_leaf >= leaf)
        .find_map(|(leaf, src)| x2apic_levels(&cpuid, leaf).map(|l| (l, src)));
    let ((apic_id, smt_shift, pkg_shift), source) = extended.unwrap_or_else(|| {
        let (smt, pkg) = legacy_shifts(&cpuid, max_leaf, amd);
        let apic_id = if max_leaf >= 1 { cpuid(1, 0).ebx >> 24 } else { 0 };
        ((apic_id, smt, pkg), Source::Legacy)
    });
    let llc_shift = llc_shift(&cpuid, max_leaf, amd).unwrap_or(pkg_shift);
    Decoded { apic_id, source, smt_shift, pkg_shift, llc_shift }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendor(s: &[u8; 12], max_leaf: u32) -> Regs {
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        Regs { eax: max_leaf, ebx: w(0), edx: w(4), ecx: w(8) }
    }

    /// CPU 5 of 1 package x 2 dies x 2 cores x 2 threads, Intel, leaf 0xB:
    /// SMT shift 1, package shift 3; L3 shared by the die's 4 threads.
    fn intel_leaf_b(leaf: u32, sub: u32) -> Regs {
        match (leaf, sub) {
            (0, _) => vendor(b"GenuineIntel", 0xB),
            (0xB, 0) => Regs { eax: 1, ebx: 2, ecx: 1 << 8, edx: 5 },
            (0xB, 1) => Regs { eax: 3, ebx: 8, ecx: (2 << 8) | 1, edx: 5 },
            (0xB, _) => Regs { ecx: 2, edx: 5, ..Regs::default() },
            // L1d, L2, L3 (level in EAX 7:5, sharing in 25:14).
            (4, 0) => Regs { eax: (1 << 5) | 1 | (1 << 14) | (1 << 26), ..Regs::default() },
            (4, 1) => Regs { eax: (2 << 5) | 3 | (1 << 14) | (1 << 26), ..Regs::default() },
            (4, 2) => Regs { eax: (3 << 5) | 3 | (3 << 14) | (1 << 26), ..Regs::default() },
            _ => Regs::default(),
        }
    }

    #[test]
    fn extended_leaf_gives_thread_core_package_and_llc() {
        let d = decode(intel_leaf_b);
        assert_eq!(d, Decoded { apic_id: 5, source: Source::LeafB, smt_shift: 1, pkg_shift: 3, llc_shift: 2 });
        let t = d.topology(1);
        assert_eq!((t.package, t.core, t.thread, t.llc, t.node), (0, 2, 1, 1, 1));
    }

    #[test]
    fn amd_without_extended_leaves_uses_0x8000_0008_and_no_smt() {
        let cpuid = |leaf: u32, sub: u32| match (leaf, sub) {
            (0, _) => vendor(b"AuthenticAMD", 1),
            // Initial APIC id 6.
            (1, _) => Regs { ebx: 6 << 24, ..Regs::default() },
            (0x8000_0000, _) => Regs { eax: 0x8000_0008, ..Regs::default() },
            // Core id size 2 bits: 4 cores a package.
            (0x8000_0008, _) => Regs { ecx: 2 << 12, ..Regs::default() },
            _ => Regs::default(),
        };
        let d = decode(cpuid);
        assert_eq!(d, Decoded { apic_id: 6, source: Source::Legacy, smt_shift: 0, pkg_shift: 2, llc_shift: 2 });
        let t = d.topology(0);
        assert_eq!((t.package, t.core, t.thread, t.llc), (1, 2, 0, 1));
    }

    #[test]
    fn legacy_intel_splits_logical_processors_by_cores() {
        let cpuid = |leaf: u32, sub: u32| match (leaf, sub) {
            (0, _) => vendor(b"GenuineIntel", 4),
            // HTT, 4 logical processors a package, initial APIC id 3.
            (1, _) => Regs { ebx: (3 << 24) | (4 << 16), edx: 1 << 28, ..Regs::default() },
            // 2 cores a package; no sharing information beyond one thread.
            (4, 0) => Regs { eax: (1 << 5) | 1 | (1 << 26), ..Regs::default() },
            _ => Regs::default(),
        };
        let d = decode(cpuid);
        assert_eq!((d.smt_shift, d.pkg_shift, d.source), (1, 2, Source::Legacy));
        let t = d.topology(0);
        assert_eq!((t.package, t.core, t.thread), (0, 1, 1));
    }

    #[test]
    fn an_empty_leaf_0xb_falls_back_and_no_cache_leaf_means_the_package() {
        let cpuid = |leaf: u32, _sub: u32| match leaf {
            0 => vendor(b"GenuineIntel", 0xB),
            1 => Regs { ebx: 2 << 24, ..Regs::default() },
            _ => Regs::default(),
        };
        let d = decode(cpuid);
        assert_eq!(d, Decoded { apic_id: 2, source: Source::Legacy, smt_shift: 0, pkg_shift: 0, llc_shift: 0 });
        assert_eq!(d.topology(0).package, 2);
    }
}
