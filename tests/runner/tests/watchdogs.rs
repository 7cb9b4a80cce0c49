//! The runner's count of the kernel's watchdog reports (`ktest_runner::watchdogs`), on console
//! text as the testkernel and the Redox glue print it.

use ktest_runner::watchdogs::{scan, summary};

const LOG: &str = "\
    ok 1 something
INFO: task observe_hung:29 blocked for more than 1 seconds.
      \"sysctl.kernel.hung_task_timeout_secs=0\" (sys:sysctl inside Redox) disables this message.
task:observe_hung    state:D wchan:observe_d_wait cpu:0 pid:29 ppid:1
# backtrace:
#  0: 0xffffffff8010deac
BUG: soft lockup - CPU#1 stuck for 5s! [observe_spin:25]
Watchdog detected hard LOCKUP on cpu 1 [observe_irqoff:25] (seen from cpu 0)
    # BUG: workqueue lockup - pool 0 (id 0) stuck for 31.2s! first pending: x; running: y
INFO: task counts as nothing without the rest of the sentence
";

#[test]
fn each_kind_of_report_is_counted_once() {
    let r = scan(LOG);
    assert_eq!(r.lines[0], vec!["INFO: task observe_hung:29 blocked for more than 1 seconds.".to_string()]);
    assert_eq!(r.lines[1], vec!["BUG: soft lockup - CPU#1 stuck for 5s! [observe_spin:25]".to_string()]);
    assert_eq!(r.lines[2].len(), 1);
    // The workqueue's report comes as a KTAP diagnostic line.
    assert_eq!(r.lines[3].len(), 1);
    assert_eq!(r.total(), 4);
    let line = summary(&[&r]).expect("a summary");
    assert!(
        line.starts_with("ktest: watchdog reports: 1 hung_task, 1 soft_lockup, 1 hard_lockup, 1 wq_lockup"),
        "{line}"
    );
    assert!(line.contains("first: INFO: task observe_hung:29"), "{line}");
}

#[test]
fn a_quiet_run_has_no_summary() {
    let r = scan("KTAP version 1\n1..1\nok 1 boot\n");
    assert_eq!(r.total(), 0);
    assert_eq!(summary(&[&r]), None);
}
