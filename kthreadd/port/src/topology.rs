//! CPU topology and the affinity scopes of unbound workqueues.
//!
//! [`CpuTopology`] says where one CPU sits in the machine: its package
//! (socket), its core in that package, its SMT thread in that core, the
//! last-level cache it uses and its NUMA node. Ports answer
//! [`Port::cpu_topology`](crate::Port::cpu_topology) from the hardware (the
//! testkernel and the Redox glue from CPUID and the ACPI SRAT); the default
//! describes a machine of single-thread cores with a cache each, in one
//! package and one node.
//!
//! [`AffinityScope`] and [`pods`] are Linux's workqueue affinity scopes
//! (`kernel/workqueue.c`: `enum wq_affn_scope`, `wq_pod_types`,
//! `init_pod_type`): an unbound workqueue keeps one pool per *pod*, a group
//! of CPUs that share what the scope names, and runs an item on the pod of
//! the CPU that queued it.

use alloc::vec::Vec;

use crate::{CpuMask, port};

pub mod cpuid;

/// Where one CPU sits in the machine.
///
/// Every field is an id to compare, not a count or an index: two CPUs are SMT
/// siblings when they have the same `package` and `core`, share a last-level
/// cache when they have the same `llc`, and are on the same node when they
/// have the same `node`. Ids need not be dense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuTopology {
    /// Physical package (socket).
    pub package: u32,
    /// Core within the package (unique in the package, not machine-wide).
    pub core: u32,
    /// SMT thread within the core (0 on a core without SMT).
    pub thread: u32,
    /// Last-level cache, machine-wide: CPUs that share their last-level
    /// cache have the same id, and no other CPUs do.
    pub llc: u32,
    /// NUMA node (0 on a machine without NUMA information).
    pub node: u32,
}

impl CpuTopology {
    /// The default topology of `cpu`: a single-thread core of its own, with a
    /// last-level cache of its own, in package 0 and node 0. What
    /// [`Port::cpu_topology`](crate::Port::cpu_topology) answers when a port
    /// knows nothing better.
    ///
    /// Context: any.
    pub const fn alone(cpu: usize) -> Self {
        CpuTopology { package: 0, core: cpu as u32, thread: 0, llc: cpu as u32, node: 0 }
    }

    /// The topology of `cpu` on a symmetric machine of packages with
    /// `cores` cores of `threads` SMT threads each, numbered as Linux and
    /// QEMU number such a machine (the threads of a core next to each other,
    /// then the cores of a package): one last-level cache per package, one
    /// NUMA node per package. For synthetic topologies (the host port, tests).
    ///
    /// Context: any.
    pub const fn symmetric(cpu: usize, cores: usize, threads: usize) -> Self {
        assert!(cores > 0 && threads > 0, "a package has at least one core of one thread");
        let package = (cpu / (cores * threads)) as u32;
        CpuTopology {
            package,
            core: ((cpu / threads) % cores) as u32,
            thread: (cpu % threads) as u32,
            llc: package,
            node: package,
        }
    }

    /// Are `self` and `other` SMT threads of the same core (or the same CPU)?
    ///
    /// Context: any.
    pub fn same_core(&self, other: &CpuTopology) -> bool {
        self.package == other.package && self.core == other.core
    }

    /// Do the CPUs of `self` and `other` belong to the same pod of `scope`?
    /// For [`AffinityScope::Cpu`], only when the topologies are equal (no two
    /// CPUs share package, core and thread; [`pods_of`] still groups that
    /// scope by CPU number, whatever a port answers).
    ///
    /// Context: any.
    pub fn shares(&self, other: &CpuTopology, scope: AffinityScope) -> bool {
        match scope {
            AffinityScope::Cpu => self == other,
            AffinityScope::Smt => self.same_core(other),
            AffinityScope::Cache => self.llc == other.llc,
            AffinityScope::Numa => self.node == other.node,
            AffinityScope::System => true,
        }
    }
}

/// Linux's workqueue affinity scopes (`WQ_AFFN_*`, the `affinity_scope`
/// attribute of an unbound workqueue): which CPUs share a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AffinityScope {
    /// Each CPU is a pod of its own (`cpu`).
    Cpu,
    /// The SMT threads of a core (`smt`).
    Smt,
    /// The CPUs that share a last-level cache (`cache`, Linux's default).
    Cache,
    /// The CPUs of a NUMA node (`numa`).
    Numa,
    /// Every CPU (`system`).
    System,
}

impl AffinityScope {
    /// Every scope, narrowest first.
    pub const ALL: [AffinityScope; 5] =
        [AffinityScope::Cpu, AffinityScope::Smt, AffinityScope::Cache, AffinityScope::Numa, AffinityScope::System];

    /// Linux's name of the scope (`wq_affn_names`).
    ///
    /// Context: any.
    pub fn name(self) -> &'static str {
        match self {
            AffinityScope::Cpu => "cpu",
            AffinityScope::Smt => "smt",
            AffinityScope::Cache => "cache",
            AffinityScope::Numa => "numa",
            AffinityScope::System => "system",
        }
    }

    /// The scope called `name` (as [`AffinityScope::name`] spells it).
    ///
    /// Context: any.
    pub fn from_name(name: &str) -> Option<AffinityScope> {
        AffinityScope::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The pods of `scope` over the CPUs of `online`, with the installed port's
/// topology: every CPU of `online` is in exactly one pod, and each pod is
/// non-empty. Pods come in the order of their lowest CPU. Linux
/// `init_pod_type` (which groups the possible CPUs; pass the CPUs to group).
///
/// Context: any (allocates).
pub fn pods(scope: AffinityScope, online: CpuMask) -> Vec<CpuMask> {
    let p = port();
    pods_of(scope, online, |cpu| p.cpu_topology(cpu))
}

/// [`pods`] with the topology of each CPU from `topology` instead of the
/// installed port.
///
/// A CPU joins the first pod whose first CPU it shares the scope's unit with
/// (Linux compares with the pod's first CPU the same way); since sharing is
/// equality of ids, that is the same as grouping by id.
///
/// Context: any (allocates).
pub fn pods_of(scope: AffinityScope, online: CpuMask, topology: impl Fn(usize) -> CpuTopology) -> Vec<CpuMask> {
    let mut pods: Vec<(CpuTopology, CpuMask)> = Vec::new();
    for cpu in online.iter() {
        if scope == AffinityScope::Cpu {
            pods.push((topology(cpu), CpuMask::one(cpu)));
            continue;
        }
        let t = topology(cpu);
        match pods.iter_mut().find(|(first, _)| first.shares(&t, scope)) {
            Some((_, mask)) => mask.0 |= 1 << cpu,
            None => pods.push((t, CpuMask::one(cpu))),
        }
    }
    pods.into_iter().map(|(_, mask)| mask).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that `pods` partitions `online`.
    fn assert_partition(pods: &[CpuMask], online: CpuMask) {
        let mut union = 0u64;
        for p in pods {
            assert!(!p.is_empty(), "empty pod in {pods:?}");
            assert_eq!(union & p.0, 0, "pods overlap: {pods:?}");
            union |= p.0;
        }
        assert_eq!(union, online.0, "pods {pods:?} do not cover {online:?}");
    }

    fn masks(v: &[u64]) -> Vec<CpuMask> {
        v.iter().map(|&m| CpuMask(m)).collect()
    }

    #[test]
    fn default_topology_is_one_core_and_cache_per_cpu() {
        let t: Vec<CpuTopology> = (0..4).map(CpuTopology::alone).collect();
        let online = CpuMask::first(4);
        for scope in [AffinityScope::Cpu, AffinityScope::Smt, AffinityScope::Cache] {
            assert_eq!(pods_of(scope, online, |c| t[c]), masks(&[1, 2, 4, 8]), "{scope:?}");
        }
        for scope in [AffinityScope::Numa, AffinityScope::System] {
            assert_eq!(pods_of(scope, online, |c| t[c]), masks(&[0xf]), "{scope:?}");
        }
    }

    #[test]
    fn symmetric_numbering_matches_linux_and_qemu() {
        // 2 packages x 2 cores x 2 threads: CPUs 0,1 are the threads of core
        // 0 of package 0; CPU 4 starts package 1.
        let t = |c| CpuTopology::symmetric(c, 2, 2);
        assert_eq!(t(0), CpuTopology { package: 0, core: 0, thread: 0, llc: 0, node: 0 });
        assert_eq!(t(1), CpuTopology { package: 0, core: 0, thread: 1, llc: 0, node: 0 });
        assert_eq!(t(2), CpuTopology { package: 0, core: 1, thread: 0, llc: 0, node: 0 });
        assert_eq!(t(5), CpuTopology { package: 1, core: 0, thread: 1, llc: 1, node: 1 });
        assert!(t(0).same_core(&t(1)) && !t(1).same_core(&t(2)) && !t(0).same_core(&t(4)));
    }

    #[test]
    fn pods_of_each_scope_on_two_smt_packages() {
        let t = |c| CpuTopology::symmetric(c, 2, 2);
        let online = CpuMask::first(8);
        assert_eq!(pods_of(AffinityScope::Cpu, online, t), (0..8).map(CpuMask::one).collect::<Vec<_>>());
        assert_eq!(pods_of(AffinityScope::Smt, online, t), masks(&[0x03, 0x0c, 0x30, 0xc0]));
        assert_eq!(pods_of(AffinityScope::Cache, online, t), masks(&[0x0f, 0xf0]));
        assert_eq!(pods_of(AffinityScope::Numa, online, t), masks(&[0x0f, 0xf0]));
        assert_eq!(pods_of(AffinityScope::System, online, t), masks(&[0xff]));
    }

    #[test]
    fn pods_group_only_the_given_cpus() {
        // CPUs 1 and 6 offline: their pods shrink, none is empty.
        let t = |c| CpuTopology::symmetric(c, 2, 2);
        let online = CpuMask(0xff & !(1 << 1) & !(1 << 6));
        for scope in AffinityScope::ALL {
            assert_partition(&pods_of(scope, online, t), online);
        }
        assert_eq!(pods_of(AffinityScope::Smt, online, t), masks(&[0x01, 0x0c, 0x30, 0x80]));
        assert!(pods_of(AffinityScope::System, CpuMask::NONE, t).is_empty());
    }

    #[test]
    fn pods_follow_ids_not_numbering() {
        // Interleaved numbering (siblings are CPU n and n + 2, as some
        // firmware numbers them), a cache shared by two cores, and nodes
        // that split a package: each scope groups by its own id only.
        let table = [
            CpuTopology { package: 0, core: 0, thread: 0, llc: 7, node: 0 },
            CpuTopology { package: 0, core: 1, thread: 0, llc: 7, node: 1 },
            CpuTopology { package: 0, core: 0, thread: 1, llc: 7, node: 0 },
            CpuTopology { package: 0, core: 1, thread: 1, llc: 7, node: 1 },
            CpuTopology { package: 1, core: 0, thread: 0, llc: 9, node: 2 },
        ];
        let online = CpuMask::first(table.len());
        let t = |c: usize| table[c];
        assert_eq!(pods_of(AffinityScope::Smt, online, t), masks(&[0b00101, 0b01010, 0b10000]));
        assert_eq!(pods_of(AffinityScope::Cache, online, t), masks(&[0b01111, 0b10000]));
        assert_eq!(pods_of(AffinityScope::Numa, online, t), masks(&[0b00101, 0b01010, 0b10000]));
        for scope in AffinityScope::ALL {
            assert_partition(&pods_of(scope, online, t), online);
        }
    }

    #[test]
    fn scope_names_round_trip() {
        for scope in AffinityScope::ALL {
            assert_eq!(AffinityScope::from_name(scope.name()), Some(scope));
        }
        assert_eq!(AffinityScope::from_name("numa"), Some(AffinityScope::Numa));
        assert_eq!(AffinityScope::from_name("socket"), None);
    }
}
