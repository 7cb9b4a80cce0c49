//! The host-checkable parts of suite `torture`: the item tracker's checks
//! fail on the faults they exist for (and stay quiet on a correct
//! history), the `torture_fault=` word, and the documentation of every
//! figure the `everything` case prints.

use ktests::Args;
use ktests::torture::Op;
use ktests::torture::tracker::{KEPT, Tracker, Violation, Violations, check_cpu};

#[test]
fn a_correct_history_counts_nothing() {
    let v = Violations::new();
    let t = Tracker::new(2);
    for _ in 0..10 {
        assert!(t.queue_with(0, || true));
        assert!(!t.queue_with(0, || false));
        t.run(0, &v, || ());
        assert!(t.queue_with(1, || true));
        t.cancelled(1, true, &v);
        t.cancelled(1, false, &v);
    }
    // mod_delayed replacing a pending instance: the old one counts as
    // cancelled, the new one runs.
    assert!(t.queue_with(1, || true));
    assert!(t.replace_with(1, || true, &v));
    t.run(1, &v, || ());
    t.check_settled(0, &v);
    t.check_settled(1, &v);
    assert_eq!(t.check_all(&v), 0);
    assert_eq!(v.count(), 0, "{:?}", v.describe(&|_| "op"));
    assert_eq!(t.totals(), (22, 11, 11));
}

#[test]
fn a_double_run_a_nested_run_and_a_lost_instance_are_counted() {
    let v = Violations::new();
    let t = Tracker::with_base(3, 100);
    assert!(t.queue_with(0, || true));
    t.run(0, &v, || ());
    t.run(0, &v, || ());
    assert_eq!(v.kept_of(Violation::RanTwice), 1);
    // A run that begins while the item runs (the nested call stands for a
    // second CPU).
    assert!(t.queue_with(1, || true));
    assert!(t.queue_with(1, || true));
    t.run(1, &v, || t.run(1, &v, || ()));
    assert_eq!(v.kept_of(Violation::Concurrent), 1);
    assert_eq!(v.kept_of(Violation::RanTwice), 1, "two instances, two runs: only the overlap is wrong");
    // Queued, never ran, never cancelled.
    assert!(t.queue_with(2, || true));
    t.check_settled(2, &v);
    assert_eq!(v.kept_of(Violation::FlushEarly), 1);
    assert_eq!(t.check_all(&v), 2, "item 0 ran too often, item 2 never ran");
    let lines = v.describe(&|_| "op");
    assert!(lines.iter().any(|l| l == "item 100: 2 runs and cancels for 1 queueings at most"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "item 101 ran concurrently with itself"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "item 102: queued 1 times, ran or was cancelled 0 times"), "{lines:?}");
}

#[test]
fn a_cancel_of_an_instance_that_ran_is_counted() {
    let v = Violations::new();
    let t = Tracker::new(1);
    assert!(t.queue_with(0, || true));
    t.run(0, &v, || ());
    t.cancelled(0, true, &v);
    assert_eq!(v.kept_of(Violation::RanTwice), 1);
}

#[test]
fn the_affinity_check() {
    let v = Violations::new();
    assert!(check_cpu(3, kport::CpuMask(0b1010), 9, &v));
    assert!(!check_cpu(2, kport::CpuMask(0b1010), 9, &v));
    assert_eq!(v.describe(&|_| "op"), ["thread 9 ran on CPU 2, outside its affinity 0xa"]);
}

#[test]
fn every_violation_is_counted_and_the_first_ones_kept() {
    let v = Violations::new();
    for i in 0..KEPT as u64 + 5 {
        v.record(Violation::Hang, i, 3, 61);
    }
    assert_eq!(v.count(), KEPT as u64 + 5);
    let lines = v.describe(&|op| if op == 3 { "flush_work" } else { "?" });
    assert_eq!(lines.len(), KEPT);
    assert_eq!(lines[0], "actor 0 stuck in flush_work for 61 s");
}

#[test]
fn torture_fault_is_a_percentage() {
    assert_eq!(Args::parse("tests=torture torture_fault=10", &[]).unwrap().torture_fault, 10);
    assert_eq!(Args::parse("tests=torture", &[]).unwrap().torture_fault, 0);
    assert_eq!(Args::parse("torture_fault=101", &[]).unwrap_err(), "torture_fault is a percentage (0 to 100), not 101");
    assert_eq!(Args::parse("torture_fault=x", &[]).unwrap_err(), "bad number for torture_fault: 'x'");
}

#[test]
fn every_figure_is_documented() {
    let doc = include_str!("../../../docs/torture.md");
    let mut names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
    for op in Op::ALL {
        assert!(doc.contains(&format!("`{}`", op.name())), "docs/torture.md does not explain the figure {}", op.name());
        assert!(!op.doc().is_empty());
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Op::ALL.len(), "two figures share a name");
}
