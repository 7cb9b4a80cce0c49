//! `kthread-ps wq` against a sample of `workqueue::monitor()`'s text (made
//! on the host, see the sample's header comment) and broken inputs.

mod common;

use common::{cli, lines, sample, temp_file};
use kthread_ps::listing::{LineError, Listing, parse};
use kthread_ps::wq::WqStat;

const SAMPLE: &str = include_str!("sample-workqueue-monitor.txt");

fn stat(name: &str, c: [u64; 7]) -> WqStat {
    let [total, in_flight, cpu_time_ms, cpu_intensive, cm_wakeups, mayday, rescued] = c;
    WqStat { name: name.into(), total, in_flight, cpu_time_ms, cpu_intensive, cm_wakeups, mayday, rescued }
}

// Golden lines, from the table's widths: the name left in 28 (the longest
// name; at least 24), then the counters right in 9, 6, 9, 7, 6, 6, 6.
const HEADER: &str = "WORKQUEUE                        TOTAL   INFL    CPU_MS CPUITSV    CMW     MD    RSC";
const EVENTS: &str = "events                              40      0       170       0     40      0      0";
const HIGHPRI: &str = "events_highpri                       0      0         0       0      0      0      0";
const LONG: &str = "events_long                          0      0         0       0      0      0      0";
const UNBOUND: &str = "events_unbound                       6      0         8       0      0      0      0";
const FREEZABLE: &str = "events_freezable                     0      0         0       0      0      0      0";
const POWER: &str = "events_power_efficient               0      0         0       0      0      0      0";
const CRUNCH: &str = "crunch                               8      0       224       8      0      0      0";
const WRITEBACK: &str = "writeback                           12      0        96       0      0      0      0";
const KBLOCKD: &str = "kblockd flush                        5      0         5       0      0      0      0";
const LONGNAME: &str = "events_with_a_longer_name_2x         1      1         0       0      0      0      0";

#[test]
fn every_row_of_the_sample_parses() {
    let p = parse::<WqStat>(SAMPLE, true).unwrap();
    assert_eq!(p.warnings, []);
    assert_eq!(p.rows.len(), 10);
    assert_eq!(p.rows[0], stat("events", [40, 0, 170, 0, 40, 0, 0]));
    assert_eq!(p.rows[6], stat("crunch", [8, 0, 224, 8, 0, 0, 0]));
    assert_eq!(p.rows[8], stat("kblockd flush", [5, 0, 5, 0, 0, 0, 0]));
    assert_eq!(p.rows[9], stat("events_with_a_longer_name_2x", [1, 1, 0, 0, 0, 0, 0]));
}

#[test]
fn the_table_keeps_the_kernels_order_by_default() {
    let out = cli(&["wq", "--file", &sample("sample-workqueue-monitor.txt")]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    let all = [HEADER, EVENTS, HIGHPRI, LONG, UNBOUND, FREEZABLE, POWER, CRUNCH, WRITEBACK, KBLOCKD, LONGNAME];
    assert_eq!(out.stdout, lines(&all));
    assert_eq!(cli(&["wq", "--file", &sample("sample-workqueue-monitor.txt"), "--sort", "file"]), out);
}

#[test]
fn sorts() {
    let f = sample("sample-workqueue-monitor.txt");
    let by = |key: &str| cli(&["wq", "--file", &f, "--sort", key]).stdout;
    let name = [HEADER, CRUNCH, EVENTS, FREEZABLE, HIGHPRI, LONG, POWER, UNBOUND, LONGNAME, KBLOCKD, WRITEBACK];
    assert_eq!(by("name"), lines(&name));
    let total = [HEADER, EVENTS, WRITEBACK, CRUNCH, UNBOUND, KBLOCKD, LONGNAME, HIGHPRI, LONG, FREEZABLE, POWER];
    assert_eq!(by("total"), lines(&total));
    let time = [HEADER, CRUNCH, EVENTS, WRITEBACK, UNBOUND, KBLOCKD, HIGHPRI, LONG, FREEZABLE, POWER, LONGNAME];
    assert_eq!(by("time"), lines(&time));
}

#[test]
fn names_no_wider_than_24_keep_the_kernels_width() {
    let rows = [stat("events", [1, 0, 0, 0, 0, 0, 0])];
    let t = kthread_ps::wq::table(&rows);
    assert_eq!(
        t,
        "WORKQUEUE                    TOTAL   INFL    CPU_MS CPUITSV    CMW     MD    RSC\n\
         events                           1      0         0       0      0      0      0\n"
    );
}

#[test]
fn json() {
    let out = cli(&["wq", "--json", "--file", &sample("sample-workqueue-monitor.txt"), "--sort", "time"]);
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got.len(), 12);
    assert_eq!(
        got[1],
        r#"  {"name":"crunch","total":8,"in_flight":0,"cpu_time_ms":224,"cpu_intensive":8,"cm_wakeups":0,"mayday":0,"rescued":0},"#
    );
    assert_eq!(
        got[10],
        r#"  {"name":"events_with_a_longer_name_2x","total":1,"in_flight":1,"cpu_time_ms":0,"cpu_intensive":0,"cm_wakeups":0,"mayday":0,"rescued":0}"#
    );
    assert_eq!((got[0], got[11]), ("[", "]"));
}

#[test]
fn malformed_rows() {
    let err = |l: &str| WqStat::parse_row(l).unwrap_err();
    let seven = "expected a name and 7 counters (total infl CPUtime CPUitsv CMW MD RSC)";
    assert_eq!(err("events 1 2 3"), format!("{seven}, found 4 words"));
    assert_eq!(err("1 2 3 4 5 6 7"), format!("{seven}, found 7 words"));
    assert_eq!(err("   1 2 3 4 5 6 7"), "no queue name before the counters");
    assert_eq!(err("events 1 2 3 x 5 6 7"), "CPUitsv: `x` is not a number");
    assert_eq!(err("events 1 2 3 4 5 6 -7"), "RSC: `-7` is not a number");
    // A name is whatever precedes the counters, spaces and digits included.
    assert_eq!(WqStat::parse_row("a 2 b 1 2 3 4 5 6 7").unwrap(), stat("a 2 b", [1, 2, 3, 4, 5, 6, 7]));
}

#[test]
fn bad_lines_are_reported_with_their_numbers() {
    let text = format!("{SAMPLE}oops 1 2\nok 1 2 3 4 5 6 7\n");
    // 10 comment lines, the header, 10 rows: the bad one is line 22.
    let p = parse::<WqStat>(&text, false).unwrap();
    assert_eq!(p.rows.len(), 11);
    let msg = "expected a name and 7 counters (total infl CPUtime CPUitsv CMW MD RSC), found 3 words";
    assert_eq!(p.warnings, [LineError { line: 22, msg: format!("{msg} (line skipped)") }]);
    let f = temp_file("wq-broken", &text);
    let f = f.to_str().unwrap();
    let out = cli(&["wq", "--strict", "--file", f]);
    assert_eq!((out.code, out.stdout.as_str()), (1, ""));
    assert_eq!(out.stderr, format!("kthread-ps: {f}:22: {msg}\n"));
    // The kthread listing is not a workqueue listing (its header is line 4, after the comments).
    let out = cli(&["wq", "--strict", "--file", &sample("sample-sys-kthread.txt")]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.ends_with(":4: expected the header line `total infl CPUtime CPUitsv CMW MD RSC`\n"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(f).unwrap();
}

#[test]
fn kthread_options_are_refused() {
    let f = sample("sample-workqueue-monitor.txt");
    let o = cli(&["wq", "--file", &f, "--tree"]);
    assert_eq!((o.code, o.stderr.as_str()), (2, "kthread-ps: `--tree` is not an option of `wq` (see --help)\n"));
    let o = cli(&["wq", "--file", &f, "--sort", "pid"]);
    assert_eq!(o.stderr, "kthread-ps: `--sort pid`: `wq` sorts by file, name, total, time (see --help)\n");
    assert_eq!(cli(&["wq", "--state", "D"]).code, 2);
}
