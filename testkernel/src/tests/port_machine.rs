//! Testkernel cases of suite `port` that need the machine behind the port:
//! the CPU topology it reads from CPUID and the SRAT, against the topology
//! the runner gave QEMU (`--topology`, `--numa`: `expect_topology=` and
//! `expect_numa_nodes=` on the command line), and the timer tick's calls of
//! the workqueue's tick hook, counted per context by the scheduler; and how
//! PCI configuration space is reached (`expect_pci=`).

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use kport::port;
use kport::sync::Completion;
use ktests::port_api::wait_for;
use ktests::{Failure, check, check_eq, diag, ktest};

use crate::arch::topology;
use crate::harness;
use crate::percpu::{self, PERCPU};
use crate::sched::{self, Prio, State, Task, wake_mask};

/// The NUMA node the runner puts CPU `cpu` in: with `nodes` nodes over
/// `max_cpus` CPUs, node k has CPUs `k * max_cpus / nodes` up to the next
/// node's first (`tests/runner/src/qemu.rs`, `numa_args`).
fn runner_node(cpu: usize, nodes: usize, max_cpus: usize) -> usize {
    (0..nodes).rev().find(|&k| k * max_cpus / nodes <= cpu).unwrap_or(0)
}

ktest!(port::cpu_topology_is_what_qemu_was_told => |ctx| {
    let n = percpu::cpus_up();
    let mut topo = alloc::vec::Vec::new();
    for (cpu, pc) in PERCPU.iter().enumerate().take(n) {
        let p = topology::probe(cpu).ok_or_else(|| Failure::Fail(format!("cpu {cpu} did not read its topology")))?;
        let t = p.topology;
        diag!(
            "cpu {cpu}: apic id {} package {} core {} thread {} llc {} node {} ({:?}; shifts smt {} llc {} package {})",
            p.apic_id, t.package, t.core, t.thread, t.llc, t.node, p.source, p.smt_shift, p.llc_shift, p.pkg_shift
        );
        check_eq!(p.apic_id, pc.apic_id.load(Ordering::Relaxed), "cpu {cpu}: CPUID's APIC id vs the LAPIC's");
        check_eq!(port().cpu_topology(cpu), t, "cpu {cpu}: the port's answer vs what the CPU read");
        topo.push(t);
    }
    let nodes = harness::expected_numa_nodes();
    let Some(shape) = harness::expected_shape() else {
        if nodes.is_none() {
            // No SRAT without -numa: one node.
            check!(topo.iter().all(|t| t.node == 0), "NUMA nodes without -numa: {topo:?}");
            return ktests::skip("no expect_topology= on the command line (runner --topology)");
        }
        let max = ctx.args.expect_cpus.unwrap_or(n);
        for i in 0..n {
            for j in 0..n {
                let want = runner_node(i, nodes.unwrap_or(1), max) == runner_node(j, nodes.unwrap_or(1), max);
                check_eq!(topo[i].node == topo[j].node, want, "cpus {i} and {j} on one node");
            }
        }
        return Ok(());
    };
    let per_die = shape.cores * shape.threads;
    let per_pkg = shape.dies * per_die;
    let mut siblings = 0;
    for i in 0..n {
        for j in 0..n {
            let (a, b) = (&topo[i], &topo[j]);
            check_eq!(a.package == b.package, i / per_pkg == j / per_pkg, "cpus {i} and {j} in one package");
            check_eq!(a.same_core(b), i / shape.threads == j / shape.threads, "cpus {i} and {j} SMT siblings");
            // QEMU's last-level cache is the die's (leaf 4), or the package's
            // where the CPU model has no cache leaf.
            if i / per_die == j / per_die {
                check_eq!(a.llc, b.llc, "cpus {i} and {j}: one die, one last-level cache");
            }
            let (nodes, max) = (nodes.unwrap_or(1), shape.max_cpus());
            let want = runner_node(i, nodes, max) == runner_node(j, nodes, max);
            check_eq!(a.node == b.node, want, "cpus {i} and {j} on one node");
            if i < j && a.same_core(b) {
                siblings += 1;
            }
        }
    }
    diag!("{shape:?}: {siblings} pairs of SMT siblings among {n} CPUs");
    if shape.threads > 1 && n >= 2 {
        check!(siblings > 0, "no SMT siblings found with {} threads per core", shape.threads);
    }
    Ok(())
});

/// Spawn a context bound to `cpu` through the scheduler (whose per-context
/// tick-hook counter the test reads), woken.
fn spawn_counted(name: &str, cpu: usize, hooks: bool, f: impl FnOnce() + Send + 'static) -> Result<Arc<Task>, Failure> {
    let t = sched::spawn(name, Prio::Normal, 1 << cpu, Box::new(f), Some(Arc::new(())), hooks)
        .map_err(|e| Failure::Fail(format!("spawn {name}: {e:?}")))?;
    sched::wake(&t, wake_mask::NEW);
    Ok(t)
}

/// Busy for `ms` milliseconds (holding the CPU under `preempt=none`).
fn spin_for(ms: u64) {
    let end = port().now_ns() + ms * 1_000_000;
    while port().now_ns() < end {
        core::hint::spin_loop();
    }
}

ktest!(port::tick_hook_for_running_workers_only => |ctx| {
    // The workqueue's hooks are the registered ones; they ignore contexts
    // that are not its workers, and the scheduler counts its calls.
    const SPIN_MS: u64 = 100;
    let cpu = port().cpu_count() - 1;
    let go = Arc::new(Completion::new());
    let g = go.clone();
    let sleeper = spawn_counted("tick-sleeper", cpu, true, move || g.wait("tick-sleeper"))?;
    check!(
        wait_for(10_000, || matches!(sleeper.state(), State::Uninterruptible | State::Interruptible)
            && !sleeper.on_cpu_now()),
        "the sleeper did not block: {:?}",
        sleeper.state()
    );
    // Off its CPU now: no tick can find it running until it is woken.
    let asleep = sleeper.hook_ticks();
    let worker = spawn_counted("tick-worker", cpu, true, || spin_for(SPIN_MS))?;
    let plain = spawn_counted("tick-plain", cpu, false, || spin_for(SPIN_MS))?;
    sched::join(&worker);
    sched::join(&plain);
    diag!("ticks: spinning worker {}, spinning plain context {}, sleeping worker {}",
        worker.hook_ticks(), plain.hook_ticks(), sleeper.hook_ticks() - asleep);
    // 25 ticks of 4 ms in 100 ms; a few are enough to show it.
    check!(worker.hook_ticks() >= 3, "a worker that spun {SPIN_MS} ms was ticked {} times", worker.hook_ticks());
    check_eq!(plain.hook_ticks(), 0, "a context without worker hooks was ticked");
    check_eq!(sleeper.hook_ticks(), asleep, "a sleeping worker was ticked");
    go.complete_all();
    sched::join(&sleeper);
    Ok(())
});

// PCI configuration space goes through the MCFG's ECAM window where the
// machine has one (q35) and through ports 0xCF8/0xCFC where not (pc); with
// ECAM, every function's header reads the same both ways.
ktest!(port::pci_configuration_space_is_reached_as_the_machine_offers => |_ctx| {
    let Some(want_ecam) = harness::expected_pci_ecam() else {
        return ktests::skip("no expect_pci= on the command line");
    };
    check_eq!(crate::bus::uses_ecam(), want_ecam, "configuration space through ECAM");
    let functions = drivers::pci::enumerate(&crate::bus::BUS);
    check!(!functions.is_empty(), "no PCI function found");
    check!(functions.iter().any(|f| f.addr.bus == 0 && f.addr.device == 0), "no host bridge at 00:00.0");
    for f in &functions {
        for off in (0..64u16).step_by(4) {
            let direct = kport::bus::DeviceBus::config_read(&crate::bus::BUS, f.addr, off);
            let ports = crate::bus::legacy_read(f.addr, off);
            check_eq!(direct, ports, "{} offset {off:#x}: the bus's read against the ports'", f.addr);
        }
    }
    diag!("pci: {} functions, ECAM {}", functions.len(), crate::bus::uses_ecam());
    Ok(())
});
