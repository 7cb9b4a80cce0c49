//! The harness's leak check fails a suite that leaks and names each leak
//! (docs/leaks.md): one boot of the real testkernel with the explicit
//! `leak_demo` suite, whose four cases each leak one resource on purpose and
//! pass.

use ktest_runner::run::{build_kernel, default_kernel_path, repo_root};

#[allow(dead_code)]
mod common;

#[test]
fn leak_demo_fails_its_suite_naming_every_leak() {
    let repo = repo_root().unwrap_or_else(|e| panic!("{}", e.message));
    build_kernel(&repo).unwrap_or_else(|e| panic!("cannot build the testkernel: {}", e.message));
    let run = common::ktest(
        "leak-demo",
        &default_kernel_path(&repo),
        None,
        &["--smp", "2", "--tests", "leak_demo", "--timeout", "300"],
    );
    assert_eq!(run.code, 1, "a suite that leaks must fail the run");
    // Each case itself passed: the suite fails on what it left behind.
    for case in [
        "a_kthread_left_running",
        "a_heap_allocation_forgotten",
        "a_timer_left_armed",
        "items_queued_on_a_queue_never_flushed",
    ] {
        assert!(
            run.stdout.lines().any(|l| l.trim_start().starts_with("ok ") && l.ends_with(case)),
            "case {case} did not pass"
        );
    }
    let leak = run
        .stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("# leak: suite leak_demo: "))
        .unwrap_or_else(|| panic!("no leak line for the suite"));
    let heap: u64 = leak
        .split_once("heap +")
        .and_then(|(_, r)| r.split_once(" bytes"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no heap figure in {leak:?}"));
    assert!(heap >= 1 << 20, "the forgotten MiB is not in the heap figure: {leak:?}");
    // The thread's stack: frames on the testkernel.
    assert!(leak.contains("frames +"), "no frames figure in {leak:?}");
    assert!(leak.contains("kthreads +1 [leak-demo]"), "the thread is not named: {leak:?}");
    assert!(leak.contains("timers +1"), "the armed timer is not counted: {leak:?}");
    assert!(leak.contains("work items +2 [leak-demo: 2]"), "the queued items are not counted: {leak:?}");
    // The suite line carries the reason, and the runner's summary repeats it.
    assert!(
        run.stdout.lines().any(|l| l.starts_with("not ok 1 leak_demo # leak: ")),
        "the suite is not reported not ok with the leak as its reason"
    );
    assert!(run.stdout.contains("FAIL: suite leak_demo not ok: leak: "), "the summary does not name the leak");
}
