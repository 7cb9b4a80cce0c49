//! Glue between the testkernel and the in-guest harness (`ktests`): parse the
//! command line, pick the preemption model, run the suite in a kernel thread
//! and exit QEMU with its verdict.
//!
//! Two words are the testkernel's own, for its machine checks: the runner's
//! `--topology` passes `expect_topology=sockets=S,dies=D,cores=C,threads=T`
//! (QEMU's `-smp` topology) and its `--numa N` passes `expect_numa_nodes=N`.
//! `expect_pci=ecam` or `expect_pci=ports` says how PCI configuration space
//! should be reached (the MCFG's ECAM window, or ports 0xCF8/0xCFC).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, Ordering};

use kport::{CpuMask, Priority, SpawnSpec, port};
use ktests::Args;

use crate::{bootinfo::BootInfo, exit, kprintln, mem, percpu, sched};

static STARTED: AtomicBool = AtomicBool::new(false);

/// The CPU topology the runner gave QEMU (`-smp N,sockets=S,dies=D,cores=C,threads=T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineShape {
    /// Packages.
    pub sockets: usize,
    /// Dies per package.
    pub dies: usize,
    /// Cores per die.
    pub cores: usize,
    /// SMT threads per core.
    pub threads: usize,
}

impl MachineShape {
    /// CPUs the topology has room for (QEMU's maximum CPU count).
    pub fn max_cpus(&self) -> usize {
        self.sockets * self.dies * self.cores * self.threads
    }
}

/// What the runner said about the machine: its topology and its NUMA nodes.
static MACHINE: spin::Once<(Option<MachineShape>, Option<usize>)> = spin::Once::new();

/// The topology the runner gave QEMU, if it said (`expect_topology=`).
pub fn expected_shape() -> Option<MachineShape> {
    MACHINE.get().and_then(|m| m.0)
}

/// The NUMA nodes the runner gave QEMU, if it said (`expect_numa_nodes=`).
pub fn expected_numa_nodes() -> Option<usize> {
    MACHINE.get().and_then(|m| m.1)
}

/// How the runner said PCI configuration space is reached (`expect_pci=ecam`
/// for a machine with an MCFG such as `q35`, `expect_pci=ports` for `pc`).
static EXPECT_PCI: spin::Once<Option<bool>> = spin::Once::new();

/// True: the runner expects ECAM; false: the legacy ports; `None`: it did
/// not say.
pub fn expected_pci_ecam() -> Option<bool> {
    EXPECT_PCI.get().copied().flatten()
}

/// The testkernel's own words (see the module documentation).
const OWN_KEYS: [&str; 3] = ["expect_topology", "expect_numa_nodes", "expect_pci"];

fn positive(key: &str, v: &str) -> Result<usize, String> {
    v.parse().ok().filter(|&n| n > 0).ok_or_else(|| format!("bad number for {key}: '{v}'"))
}

/// Parse the testkernel's own words.
fn parse_machine(cmdline: &str) -> Result<(Option<MachineShape>, Option<usize>), String> {
    let (mut shape, mut nodes) = (None, None);
    for (k, v) in cmdline.split_ascii_whitespace().filter_map(|w| w.split_once('=')) {
        match k {
            "expect_topology" => {
                let mut s = MachineShape { sockets: 0, dies: 1, cores: 0, threads: 0 };
                for item in v.split(',') {
                    let (name, n) = item.split_once('=').ok_or_else(|| format!("bad expect_topology item '{item}'"))?;
                    let n = positive(k, n)?;
                    match name {
                        "sockets" => s.sockets = n,
                        "dies" => s.dies = n,
                        "cores" => s.cores = n,
                        "threads" => s.threads = n,
                        _ => return Err(format!("bad expect_topology item '{item}'")),
                    }
                }
                if s.sockets == 0 || s.cores == 0 || s.threads == 0 {
                    return Err(format!("expect_topology needs sockets, cores and threads: '{v}'"));
                }
                shape = Some(s);
            }
            "expect_numa_nodes" => nodes = Some(positive(k, v)?),
            "expect_pci" => {
                let ecam = match v {
                    "ecam" => true,
                    "ports" => false,
                    _ => return Err(format!("bad expect_pci '{v}' (ecam or ports)")),
                };
                EXPECT_PCI.call_once(|| Some(ecam));
            }
            _ => {}
        }
    }
    Ok((shape, nodes))
}

/// Parse the command line and start the suite. On bad input print one
/// error line and exit with the fail code.
pub fn start(cmdline: &str, bi: &BootInfo) {
    let parsed = Args::parse(cmdline, &OWN_KEYS).and_then(|a| Ok((a, parse_machine(cmdline)?)));
    let args = match parsed {
        Ok((a, machine)) => {
            MACHINE.call_once(|| machine);
            a
        }
        Err(e) => {
            kprintln!("# ktest: error: {e}");
            exit::exit_qemu(false);
        }
    };
    sched::set_preempt_full(args.preempt_full);
    let mem_mib: u64 = bi.memmap().iter().filter(|e| e.kind == 1).map(|e| e.size).sum::<u64>() >> 20;
    kprintln!(
        "# ktest: testkernel cpus={} preempt={} mem_mib={} tsc_mhz={} frames_free={}",
        percpu::cpus_up(),
        if args.preempt_full { "full" } else { "none" },
        mem_mib,
        crate::time::tsc_hz() / 1_000_000,
        mem::frames::counters().free
    );
    STARTED.store(true, Ordering::Release);
    let t = port()
        .spawn(SpawnSpec {
            name: String::from("ktest"),
            entry: Box::new(move || {
                // Initialisation that sleeps (creating workers through
                // kthreadd) runs here, in a kernel thread, as Linux runs it
                // in kernel_init: never in an idle context.
                if let Err(e) = workqueue::init() {
                    kprintln!("# ktest: error: cannot start the workqueues: {e:?}");
                    exit::exit_qemu(false);
                }
                // kswapd0, and the memory users the out-of-memory report names.
                if let Err(e) = drivers::vmscan::init() {
                    kprintln!("# ktest: error: cannot start kswapd: {e:?}");
                    exit::exit_qemu(false);
                }
                kport::mm::register_user("kernel heap", || mem::heap::usage().1 / mem::PAGE_SIZE);
                let ok = ktests::harness::run(&args);
                exit::exit_qemu(ok);
            }),
            affinity: CpuMask::ALL,
            priority: Priority::Normal,
            data: None,
            worker_hooks: false,
        })
        .expect("cannot spawn the test harness thread");
    t.wake();
}

/// Report the running test on the fatal path (panic, exception).
pub fn report_fatal(reason: &str) {
    if STARTED.load(Ordering::Acquire) {
        ktests::harness::report_fatal(reason);
    }
}
