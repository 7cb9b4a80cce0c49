//! The runner's side of `trace_dump=`: a dump is found in a serial log, its JSON lines parsed,
//! a cut dump reported, and the reports written.

use ktest_runner::trace::{BootTag, extract, finish};

const LOG: &str = "\
# ktest: done passed=1 failed=0 skipped=0
# trace-dump: begin
# trace-text: # tracer: nop
# trace-text:      kworker/0:1-16      [000] .....     0.515123: workqueue_execute_start: work struct 0x10: function f
# trace-json: {\"ts_ns\":515123962,\"cpu\":0,\"pid\":16,\"event\":\"workqueue_execute_start\",\"fields\":{\"work\":\"0x10\",\"function\":\"f\"}}
# trace-json: {\"ts_ns\":5151
# hist-text: @work_run_ns[f]: count=3 avg_ns=300
# hist-json: {\"kind\":\"work_run_ns\",\"id\":0,\"name\":\"f\",\"count\":3,\"sum_ns\":900,\"buckets\":[[128,1],[256,2]]}
# trace-summary: recorded=40 in_buffer=2 lost=38 histograms=1 hist_dropped=0
# trace-dump: end
";

#[test]
fn a_dump_is_extracted_with_its_counts_and_bad_lines() {
    let d = extract(LOG).expect("a dump").expect("complete");
    assert_eq!(d.events.len(), 1);
    assert_eq!(d.events[0]["fields"]["function"], "f");
    assert_eq!(d.hists.len(), 1);
    assert_eq!((d.recorded, d.lost, d.bad_lines), (40, 38, 1));
    assert_eq!(d.text.len(), 3);
    assert!(d.text[1].ends_with("function f"));
}

#[test]
fn no_dump_and_a_cut_dump_are_told_apart() {
    assert!(extract("# ktest: done passed=1 failed=0 skipped=0\n").is_none());
    let cut = &LOG[..LOG.find("# hist-text").unwrap()];
    let e = extract(cut).expect("a begin marker").unwrap_err();
    assert!(e.contains("end marker"), "{e}");
}

#[test]
fn reports_and_summary_are_written() {
    let dir = std::env::temp_dir().join(format!("ktest-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = extract(LOG).unwrap().unwrap();
    let line = finish(&dir, &[(BootTag { smp: 2, preempt: "full" }, &d)]).unwrap().expect("a summary");
    assert!(line.starts_with("ktest: trace: 40 events recorded, 1 dumped, 38 lost; 1 histograms"), "{line}");
    assert!(line.contains("1 dump lines did not parse"), "{line}");
    let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("trace.json")).unwrap()).unwrap();
    assert_eq!(t[0]["smp"], 2);
    assert_eq!(t[0]["events"][0]["event"], "workqueue_execute_start");
    let h: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("hist.json")).unwrap()).unwrap();
    assert_eq!(h[0]["histograms"][0]["count"], 3);
    let svg = std::fs::read_to_string(dir.join("hist.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("work_run_ns[f] n=3"), "{svg}");
    // One bar per non-empty bucket.
    assert_eq!(svg.matches("<rect x=").count(), 2);
    assert!(finish(&dir, &[]).unwrap().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
