//! The explicit `torture` suite on the host port, a few seconds per case,
//! once as it is and once in its fault-injection mode: what the port
//! offers there (kthreads, every kind of queue, tasklets, the threaded test
//! interrupt, CPU offline/online on four virtual CPUs) under the same
//! invariants as in the guest (no disks and no watermarks: those parts are
//! left out with a note). Its own binary: the host port is installed once
//! per process.

use ktests::Args;
use ktests::harness::run;

#[test]
fn the_torture_suite_passes_on_the_host_port() {
    kport::host::install_host_port(4);
    kthreadd::kthread::init().expect("kthreadd");
    workqueue::init().expect("workqueue");
    let args = Args { tests: vec!["torture".into()], torture_s: Some(2), seed: 5, ..Default::default() };
    assert!(run(&args), "a torture case failed on the host port (KTAP output above)");
    let faults = Args { torture_fault: 10, seed: 6, ..args };
    assert!(run(&faults), "a torture case failed on the host port with fault injection (KTAP output above)");
}
