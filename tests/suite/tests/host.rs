//! The shared `port` suite on the host port: every registered case of suite
//! `port`, run by the KTAP harness exactly as in the guest.

use ktests::Args;
use ktests::harness::{all_cases, plan, run};

/// Virtual CPUs of the host port (the suite has cases that need several).
const CPUS: usize = 4;

fn args() -> Args {
    Args { tests: vec!["port".into()], ..Default::default() }
}

#[test]
fn port_suite_passes_on_the_host_port() {
    kthreadd::host::install_host_port(CPUS);
    // The cases are found through the `ktest_cases` link section: make sure
    // the linker kept them before blaming the port.
    let n = all_cases().iter().filter(|c| c.suite == "port").count();
    assert!(n > 0, "no case of suite `port` is registered: the ktest_cases section was dropped");
    let planned: usize = plan(&args()).expect("plan").iter().map(|(_, cases)| cases.len()).sum();
    assert_eq!(planned, n);
    assert!(run(&args()), "a case of suite `port` failed on the host port (KTAP output above)");
}
