//! KTAP parser tests on sample guest outputs.

use ktest_runner::ktap::{Line, Parser, Status, Summary};
use ktest_runner::qemu::Exit;
use ktest_runner::report::judge;

fn parse(text: &str) -> (Vec<Line>, Summary) {
    let mut p = Parser::new();
    let lines = text.lines().map(|l| p.feed(l)).collect();
    (lines, p.finish())
}

const ALL_PASS: &str = "\
# ktest: testkernel cpus=4 preempt=full mem_mib=256
KTAP version 1
# seed: 42
1..2
    KTAP version 1
    # Subtest: boot
    1..2
    ok 1 cpus_online
    ok 2 clock_monotonic
ok 1 boot
    KTAP version 1
    # Subtest: sched
    1..1
    ok 1 yield
ok 2 sched
# ktest: done passed=3 failed=0 skipped=0
";

#[test]
fn all_pass() {
    let (_, s) = parse(ALL_PASS);
    assert_eq!(s.counts(), (3, 0, 0));
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert!(!s.has_failure());
    assert_eq!(s.top_plan, Some(2));
    let leaves: Vec<(&str, &str)> = s.leaves().map(|r| (r.suite.as_str(), r.name.as_str())).collect();
    assert_eq!(leaves, [("boot", "cpus_online"), ("boot", "clock_monotonic"), ("sched", "yield")]);
    // The suite summaries are results too, but not leaves.
    assert_eq!(s.results.iter().filter(|r| !r.leaf).count(), 2);
    assert!(judge(Exit::Code(33), &s, 900).is_empty());
}

#[test]
fn not_ok_with_reason() {
    let text = ALL_PASS.replace(
        "    ok 2 clock_monotonic",
        "    not ok 2 clock_monotonic # assertion failed: a <= b at tests/suite/src/boot.rs:10:5",
    );
    let text = text.replace("ok 1 boot", "not ok 1 boot");
    let (_, s) = parse(&text);
    assert_eq!(s.counts(), (2, 1, 0));
    let failed: Vec<_> = s.leaves().filter(|r| r.status == Status::NotOk).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].name, "clock_monotonic");
    assert_eq!(failed[0].reason.as_deref(), Some("assertion failed: a <= b at tests/suite/src/boot.rs:10:5"));
    assert!(s.has_failure());
    let f = judge(Exit::Code(35), &s, 900);
    assert!(f.iter().any(|m| m.contains("1 test(s) failed")), "{f:?}");
    // The guest claiming a pass does not hide the failure.
    let f = judge(Exit::Code(33), &s, 900);
    assert!(f.iter().any(|m| m.contains("guest reported pass")), "{f:?}");
}

#[test]
fn skip_is_not_failure() {
    let text = ALL_PASS.replace("    ok 1 yield", "    ok 1 yield # SKIP needs 2 CPUs");
    let (_, s) = parse(&text);
    assert_eq!(s.counts(), (2, 0, 1));
    let skipped = s.leaves().find(|r| r.status == Status::Skip).expect("a skip");
    assert_eq!(skipped.reason.as_deref(), Some("needs 2 CPUs"));
    assert!(judge(Exit::Code(33), &s, 900).is_empty());
    // A fail exit with nothing failing in KTAP is inconsistent, and reported.
    let f = judge(Exit::Code(35), &s, 900);
    assert_eq!(f.len(), 1);
    assert!(f[0].contains("shows none"), "{f:?}");
}

#[test]
fn guest_timeout() {
    let text = ALL_PASS
        .replace("    ok 1 yield", "    not ok 1 yield # TIMEOUT after 5 s")
        .replace("ok 2 sched", "not ok 2 sched");
    let (_, s) = parse(&text);
    let t = s.leaves().find(|r| r.name == "yield").expect("yield");
    assert_eq!(t.status, Status::Timeout);
    assert_eq!(t.reason.as_deref(), Some("TIMEOUT after 5 s"));
    assert_eq!(s.counts(), (2, 1, 0));
    assert!(!judge(Exit::Code(35), &s, 900).is_empty());
}

#[test]
fn missing_result() {
    let text = "\
KTAP version 1
1..1
    KTAP version 1
    # Subtest: boot
    1..3
    ok 1 a
    ok 2 b
ok 1 boot
";
    let (_, s) = parse(text);
    assert_eq!(s.counts(), (2, 0, 0));
    assert!(s.has_failure());
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert!(s.problems[0].message.contains("planned 3 results, got 2"));
    assert_eq!(s.problems[0].weight, 1);
    let f = judge(Exit::Code(33), &s, 900);
    assert!(f.iter().any(|m| m.contains("missing result")), "{f:?}");
}

#[test]
fn cut_short_output_is_missing_results() {
    let text = "\
KTAP version 1
1..2
    KTAP version 1
    # Subtest: boot
    1..3
    ok 1 a
";
    let (_, s) = parse(text);
    let msgs: Vec<&str> = s.problems.iter().map(|p| p.message.as_str()).collect();
    assert!(msgs.iter().any(|m| m.contains("subtest boot planned 3 results, got 1")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("top level planned 2 results, got 0")), "{msgs:?}");
    // Two missing in the suite, two missing suites.
    assert_eq!(s.problems.iter().map(|p| p.weight).sum::<usize>(), 4);
}

#[test]
fn no_plan_at_all() {
    let (_, s) = parse("SeaBIOS (version 1.16)\nBooting from ROM...\n");
    assert_eq!(s.garbage, 2);
    assert!(s.top_plan.is_none());
    assert!(s.problems.iter().any(|p| p.message.contains("no top-level KTAP plan")));
    let (_, empty) = parse("");
    assert!(empty.has_failure());
}

#[test]
fn garbage_between_and_inside_lines() {
    let text = "\
\x1b[2J\x1b[01;01Hfirmware noise
KTAP version 1
1..1
 garbage with one space
    KTAP version 1
    # Subtest: boot
\u{0}\u{7}partial li
    1..2
        random deeper noise
    ok 1 a
okay this is not a result
not ok x neither is this
    \x1b[0mok 2 b
ok 1 boot
trailing junk";
    let (lines, s) = parse(text);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.counts(), (2, 0, 0));
    assert!(s.garbage >= 5, "garbage {}", s.garbage);
    assert_eq!(lines[0], Line::Garbage);
}

#[test]
fn nested_subtests() {
    let text = "\
KTAP version 1
1..1
    KTAP version 1
    # Subtest: wq
    1..2
        KTAP version 1
        # Subtest: params
        1..2
        ok 1 one
        not ok 2 two
    not ok 1 params
    ok 2 flat
not ok 1 wq
";
    let (_, s) = parse(text);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    let leaves: Vec<(&str, &str, Status)> = s.leaves().map(|r| (r.suite.as_str(), r.name.as_str(), r.status)).collect();
    assert_eq!(
        leaves,
        [("wq", "params.one", Status::Ok), ("wq", "params.two", Status::NotOk), ("wq", "flat", Status::Ok),]
    );
    assert_eq!(s.counts(), (2, 1, 0));
}

#[test]
fn suite_name_from_result_line_when_header_missing() {
    let text = "KTAP version 1\n1..1\n    1..1\n    ok 1 a\nok 1 mysuite\n";
    let (_, s) = parse(text);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.leaves().next().expect("leaf").suite, "mysuite");
}

#[test]
fn panic_block() {
    let text = "\
KTAP version 1
1..1
    KTAP version 1
    # Subtest: boot
    1..2
    ok 1 a
    # PANIC at tests/suite/src/boot.rs:20:9: boom
    # backtrace:
    #  0: 0xffffffff80012345
    #  1: 0xffffffff80023456
    not ok 2 b # PANIC boom
not ok 1 boot
";
    let (lines, s) = parse(text);
    assert_eq!(lines[6], Line::Panic("PANIC at tests/suite/src/boot.rs:20:9: boom".into()));
    assert_eq!(lines[7], Line::Backtrace);
    assert_eq!(lines[8], Line::Frame(0xffff_ffff_8001_2345));
    assert_eq!(lines[9], Line::Frame(0xffff_ffff_8002_3456));
    assert_eq!(s.counts(), (1, 1, 0));
    assert!(s.problems.iter().any(|p| p.message.starts_with("PANIC at")));
    // A panic fails the run even when the guest exits with the pass code.
    let f = judge(Exit::Code(33), &s, 900);
    assert!(f.iter().any(|m| m.starts_with("PANIC")), "{f:?}");
}

#[test]
fn exception_block_with_registers() {
    let text = "\
KTAP version 1
1..1
# EXCEPTION: page fault (vector 14) on cpu 0, error code 0x2
# rip=0xffffffff80001000 rsp=0xffffffff80200000 rflags=0x46
# backtrace:
#  0: 0xffffffff80001000
";
    let (lines, s) = parse(text);
    assert!(matches!(&lines[2], Line::Exception(m) if m.contains("page fault")));
    assert_eq!(lines[3], Line::Registers(0xffff_ffff_8000_1000));
    assert!(s.problems.iter().any(|p| p.message.starts_with("EXCEPTION")));
    let f = judge(Exit::Code(35), &s, 900);
    assert!(f.iter().any(|m| m.contains("missing result")), "{f:?}");
}

#[test]
fn bench_lines() {
    let text = "\
KTAP version 1
1..1
    KTAP version 1
    # Subtest: bench
    1..3
    # bench: sched_yield_pingpong_same_cpu median_ns=1234 p99_ns=5678 n=10000
    ok 1 bench_sched_yield
    # bench: wq_throughput_bound items_per_s=967000 n=100000 cpu=0
    ok 2 bench_wq
    # bench: ipi_count count=17
    ok 3 bench_ipi
ok 1 bench
";
    let (lines, s) = parse(text);
    assert_eq!(lines[5], Line::Bench(0));
    assert_eq!(s.benches.len(), 3);
    let b = &s.benches[0];
    assert_eq!(b.name, "sched_yield_pingpong_same_cpu");
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(b.fields, [kv("median_ns", "1234"), kv("p99_ns", "5678"), kv("n", "10000")]);
    assert_eq!(s.benches[1].fields, [kv("items_per_s", "967000"), kv("n", "100000"), kv("cpu", "0")]);
    assert_eq!(s.benches[2].fields, [kv("count", "17")]);
    assert_eq!(s.counts(), (3, 0, 0));
}

#[test]
fn torture_figures_lines() {
    let text = "\
KTAP version 1
1..1
    KTAP version 1
    # Subtest: torture
    1..2
    # torture-note: no test interrupt on this port: no threaded IRQs
    # torture: everything seconds=20 cpus=2 item_runs=50822 faults=7 violations=0
    ok 1 everything
    # torture: kthread_churn_on_every_cpu seconds=20 cycles=9 violations=2
    # torture-violation: item 3 ran concurrently with itself
    # torture: nothing to see here
    not ok 2 kthread_churn_on_every_cpu # 2 invariant violation(s) (listed above)
not ok 1 torture
";
    let (lines, s) = parse(text);
    assert_eq!(lines[5], Line::Diagnostic, "a note is not a figures line");
    assert_eq!(lines[6], Line::Torture(0));
    assert_eq!(lines[9], Line::Diagnostic);
    assert_eq!(lines[10], Line::Diagnostic, "words without key=value are not figures");
    assert_eq!(s.tortures.len(), 2);
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(s.tortures[0].name, "everything");
    assert_eq!(
        s.tortures[0].fields,
        [kv("seconds", "20"), kv("cpus", "2"), kv("item_runs", "50822"), kv("faults", "7"), kv("violations", "0")]
    );
    let f = judge(Exit::Code(35), &s, 900);
    assert!(f.iter().any(|m| m == "torture kthread_churn_on_every_cpu: 2 invariant violation(s)"), "{f:?}");
    assert!(!f.iter().any(|m| m.contains("torture everything")), "{f:?}");
}

#[test]
fn guest_command_line_error() {
    let (_, s) = parse("# ktest: error: unknown key 'foo' \n");
    assert!(s.problems.iter().any(|p| p.message == "guest error: unknown key 'foo'"));
}

#[test]
fn extra_result_is_a_problem() {
    let (_, s) = parse("KTAP version 1\n1..1\nok 1 a\nok 2 b\n");
    assert_eq!(s.counts(), (2, 0, 0));
    assert!(s.problems.iter().any(|p| p.message.contains("planned 1 results, got 2")));
}

#[test]
fn progress_follows_top_level_plan() {
    let mut p = Parser::new();
    for l in ALL_PASS.lines().take(7) {
        p.feed(l);
    }
    assert_eq!(p.progress(), (0, Some(2), Some("boot")));
    for l in ALL_PASS.lines().skip(7).take(5) {
        p.feed(l);
    }
    assert_eq!(p.progress(), (1, Some(2), Some("sched")));
}
