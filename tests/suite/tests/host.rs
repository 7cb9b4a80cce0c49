//! The shared suites on the host port (`port`, `kthread`, `kthread_worker`,
//! `workqueue`, the bottom halves, `misuse`, `observe`'s tracing cases),
//! run by the KTAP harness exactly as in the guest.

use ktests::Args;
use ktests::harness::{all_cases, plan, run};

/// Virtual CPUs of the host port (the suite has cases that need several).
const CPUS: usize = 4;

/// The suites written against the port only (the guest-only ones need the
/// testkernel's internals).
const SUITES: [&str; 13] = [
    "port",
    "kthread",
    "kthread_worker",
    "workqueue",
    "might_sleep",
    "misuse",
    "softirq",
    "tasklet",
    "bh_workqueue",
    "threaded_irq",
    "observe",
    "fault_inject",
    "hotplug",
];

fn args() -> Args {
    Args { tests: SUITES.iter().map(|s| (*s).into()).collect(), ..Default::default() }
}

#[test]
fn shared_suites_pass_on_the_host_port() {
    kport::host::install_host_port(CPUS);
    kthreadd::kthread::init().expect("kthreadd");
    workqueue::init().expect("workqueue");
    // The cases are found through the `ktest_cases` link section: make sure
    // the linker kept them before blaming the port.
    for suite in SUITES {
        let n = all_cases().iter().filter(|c| c.suite == suite && !c.bench).count();
        assert!(n > 0, "no case of suite `{suite}` is registered: the ktest_cases section was dropped");
    }
    let want = all_cases().iter().filter(|c| SUITES.contains(&c.suite) && !c.bench).count();
    let planned: usize = plan(&args()).expect("plan").iter().map(|(_, cases)| cases.len()).sum();
    assert_eq!(planned, want);
    assert!(run(&args()), "a case failed on the host port (KTAP output above)");
}

#[test]
fn cases_word_keeps_only_the_named_cases() {
    let a = Args::parse("tests=softirq,tasklet bench=only cases=raise_run,schedule_run", &[]).expect("parse");
    let picked: Vec<&str> = plan(&a).expect("plan").iter().flat_map(|(_, cs)| cs.iter().map(|c| c.name)).collect();
    assert_eq!(picked.len(), 2, "{picked:?}");
    assert!(picked.iter().any(|n| n.contains("softirq_raise_run")), "{picked:?}");
    assert!(picked.iter().any(|n| n.contains("tasklet_schedule_run")), "{picked:?}");
    let all = Args::parse("tests=softirq bench=only", &[]).expect("parse");
    let n: usize = plan(&all).expect("plan").iter().map(|(_, cs)| cs.len()).sum();
    assert!(n > 1, "without cases= every benchmark of the suite runs");
    let thrice = Args::parse("tests=softirq bench=only cases=raise_run repeat=3", &[]).expect("parse");
    let names: Vec<&str> = plan(&thrice).expect("plan").iter().flat_map(|(_, cs)| cs.iter().map(|c| c.name)).collect();
    assert_eq!(names.len(), 3, "repeat=3 runs the one case three times: {names:?}");
    assert!(names.iter().all(|n| *n == names[0]));
    assert_eq!(Args::parse("repeat=0", &[]).unwrap_err(), "repeat is 1 to 100000, not 0");
}
