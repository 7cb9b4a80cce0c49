//! `kthread-ps` (the `kthread` listing) against the sys:kthread sample
//! captured in the guest with `%CPU` (the nine-column format; its header
//! comment says which run), and against hand-made broken inputs.
//! `kthread_8col.rs` covers the older eight-column format.

mod common;

use common::{cli, lines, sample};
use kthread_ps::kthread::{Kthread, tree};
use kthread_ps::listing::{LineError, Listing, parse};

const SAMPLE: &str = include_str!("sample-sys-kthread.txt");

/// A row from its numbers `(pid, ppid, state, cpu, affinity, pcpu, time_us)`, wait channel and
/// name.
fn row(n: (u64, u64, char, u32, u64, u32, u64), wchan: Option<&str>, name: &str) -> Kthread {
    let (pid, ppid, state, cpu, affinity, pcpu, time_us) = n;
    Kthread {
        pid,
        ppid,
        state,
        cpu,
        affinity,
        pcpu: Some(pcpu),
        time_us,
        wchan: wchan.map(String::from),
        name: name.into(),
    }
}

// Golden output, worked out from the table's widths: PID and PPID right in
// 5, S, CPU right in 3, AFFINITY left in 8, %CPU right in 5, TIME
// (M:SS.uuuuuu) right in 11, WCHAN left in 16, NAME.
const HEADER: &str = "  PID  PPID S CPU AFFINITY  %CPU        TIME WCHAN            NAME";
const KTHREADD: &str = "    5     0 S   2 all        0.4 0:00.423549 kthreadd         [kthreadd]";
const SPIN: &str = " 1299     5 R   1 1         99.9 0:01.504843 -                [ps-spin]";
const HOG: &str = " 1236     5 I   3 3          3.6 0:01.775712 worker_thread    [kworker/3:10-wq-hog]";
const CSYNC: &str = " 1261     5 I   0 0          1.3 0:00.053728 worker_thread    [kworker/0:14-wq-csync-handed]";
const UNBOUND: &str = " 1192     5 I   3 0-3        0.3 0:00.148126 worker_thread    [kworker/u16:1-wq-scopes]";

#[test]
fn every_row_of_the_guest_sample_parses_kthreadd_first() {
    let p = parse::<Kthread>(SAMPLE, true).unwrap();
    assert_eq!(p.warnings, []);
    assert_eq!(p.rows.len(), 38);
    assert_eq!(p.rows[0], row((5, 0, 'S', 2, u64::MAX, 4, 423549), Some("kthreadd"), "[kthreadd]"));
    assert_eq!(p.rows[1], row((7, 5, 'S', 0, 0x1, 0, 2654), Some("smpboot"), "[ksoftirqd/0]"));
    let spin = p.rows.iter().find(|r| r.pid == 1299).unwrap();
    assert_eq!(*spin, row((1299, 5, 'R', 1, 0x2, 999, 1504843), None, "[ps-spin]"));
    let hog = p.rows.iter().find(|r| r.pid == 1236).unwrap();
    assert_eq!(*hog, row((1236, 5, 'I', 3, 0x8, 36, 1775712), Some("worker_thread"), "[kworker/3:10-wq-hog]"));
    assert!(p.rows[1..].iter().all(|r| r.ppid == 5), "every other thread is kthreadd's child");
    let count = |s| p.rows.iter().filter(|r| r.state == s).count();
    assert_eq!((count('R'), count('S'), count('I')), (1, 6, 31));
}

#[test]
fn the_table_of_the_sample() {
    let out = cli(&["--file", &sample("sample-sys-kthread.txt")]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got.len(), 39);
    assert_eq!((got[0], got[1], got[38]), (HEADER, KTHREADD, SPIN));
    assert!(got.contains(&HOG) && got.contains(&UNBOUND), "{}", out.stdout);
}

#[test]
fn sort_by_cpu_most_first_then_by_time() {
    let out = cli(&["--file", &sample("sample-sys-kthread.txt"), "--sort", "cpu"]);
    assert_eq!(out.code, 0);
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got[..6], [HEADER, SPIN, HOG, CSYNC, KTHREADD, UNBOUND]);
    // The rest: %CPU never rises, and among equal %CPU the time never rises.
    let mut rows = parse::<Kthread>(SAMPLE, true).unwrap().rows;
    kthread_ps::kthread::sort(&mut rows, kthread_ps::kthread::Sort::Cpu);
    assert!(rows.windows(2).all(|w| (w[0].pcpu, w[0].time_us) >= (w[1].pcpu, w[1].time_us)));
    assert_eq!(rows.last().unwrap().pid, 14, "least %CPU and least time: [kworker/1:0H], 6 µs");
}

#[test]
fn sort_by_cpu_time_most_first() {
    let out = cli(&["--file", &sample("sample-sys-kthread.txt"), "--sort", "time"]);
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got[..4], [HEADER, HOG, SPIN, KTHREADD]);
}

#[test]
fn filter_by_state_including_idle() {
    let f = sample("sample-sys-kthread.txt");
    assert_eq!(cli(&["--file", &f, "--state", "R"]).stdout, lines(&[HEADER, SPIN]));
    let idle = cli(&["--file", &f, "--state", "i"]).stdout;
    assert_eq!(idle.lines().count(), 32);
    assert!(idle.lines().skip(1).all(|l| l.contains(" I ") && l.contains("worker_thread")), "{idle}");
    assert_eq!(cli(&["--file", &f, "--state", "DZ"]).stdout, lines(&[HEADER]));
    let top = cli(&["--file", &f, "--state", "RI", "--sort", "cpu"]).stdout;
    assert_eq!(top.lines().take(4).collect::<Vec<_>>(), [HEADER, SPIN, HOG, CSYNC]);
}

#[test]
fn tree_puts_kthreadd_at_the_root_and_its_children_under_it() {
    let f = sample("sample-sys-kthread.txt");
    let out = cli(&["--file", &f, "--tree"]).stdout;
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 39);
    assert_eq!((got[0], got[1]), (HEADER, KTHREADD));
    assert_eq!(got[2], "    7     5 S   0 0          0.0 0:00.002654 smpboot           \\_ [ksoftirqd/0]");
    assert_eq!(got[38], SPIN.replace(" [", "  \\_ ["));
    assert!(got[2..].iter().all(|l| l.contains(" \\_ [")), "{out}");
    let depths: Vec<usize> = tree(&parse::<Kthread>(SAMPLE, true).unwrap().rows).iter().map(|(_, d)| *d).collect();
    assert_eq!((depths[0], depths[1..].iter().all(|&d| d == 1)), (0, true));
    // Siblings follow the sort.
    let by_cpu = cli(&["--file", &f, "--tree", "--sort", "cpu"]).stdout;
    let child = |l: &str| l.replace(" [", "  \\_ [");
    let want = [HEADER.to_string(), KTHREADD.to_string(), child(SPIN), child(HOG), child(CSYNC), child(UNBOUND)];
    assert_eq!(by_cpu.lines().take(6).collect::<Vec<_>>(), want);
}

#[test]
fn json_has_pcpu() {
    let f = sample("sample-sys-kthread.txt");
    let out = cli(&["--file", &f, "--json", "--state", "R"]);
    let obj = r#"{"pid":1299,"ppid":5,"state":"R","cpu":1,"affinity":"0x2","pcpu":99.9,"time_us":1504843,"wchan":null,"name":"[ps-spin]"}"#;
    assert_eq!(out.stdout, format!("[\n  {obj}\n]\n"));
    let all = cli(&["--file", &f, "--json", "--sort", "cpu"]).stdout;
    let got: Vec<&str> = all.lines().collect();
    let first = r#"  {"pid":1299,"ppid":5,"state":"R","cpu":1,"affinity":"0x2","pcpu":99.9,"time_us":1504843,"wchan":null,"name":"[ps-spin]"},"#;
    let kthreadd = r#"  {"pid":5,"ppid":0,"state":"S","cpu":2,"affinity":"0xffffffffffffffff","pcpu":0.4,"time_us":423549,"wchan":"kthreadd","name":"[kthreadd]"},"#;
    assert_eq!((got.len(), got[0], got[1], got[4], got[39]), (40, "[", first, kthreadd, "]"));
    assert!(all.contains(r#""pcpu":0.0,"#), "a whole number keeps its decimal");
}

#[test]
fn malformed_rows_say_what_is_wrong() {
    let err = |l: &str| Kthread::parse_row(l).unwrap_err();
    let cols = "expected 9 columns (PID PPID S CPU AFFINITY %CPU TIME_US WCHAN NAME)";
    assert_eq!(err("5 0 S 0"), format!("{cols}, found 4"));
    assert_eq!(err("5 0 S 0 0x1 0.0 3 wchan"), format!("{cols}, found 8"));
    // An eight-column row under the nine-column header: its time is read as %CPU.
    assert_eq!(err("5 0 S 0 0x1 3 wchan [a b]"), "%CPU: `3` is not a number with one decimal");
    assert_eq!(err("5 0 S 0 0x1 1.25 3 - [a]"), "%CPU: `1.25` is not a number with one decimal");
    assert_eq!(err("5 0 S 0 0x1 x.5 3 - [a]"), "%CPU: `x.5` is not a number with one decimal");
    assert_eq!(err("5 0 S 0 0x1 .5 3 - [a]"), "%CPU: `.5` is not a number with one decimal");
    assert_eq!(err("5 0 S 0 0x1 0.0 3.5 - [a]"), "TIME_US: `3.5` is not a number");
    assert_eq!(err("x 0 S 0 0x1 0.0 3 - [a]"), "PID: `x` is not a number");
    let r = Kthread::parse_row("123456 5 D 12 0x5 100.0 3723000001 some_wait_channel_longer [irq/9 acpi]").unwrap();
    assert_eq!(r, row((123456, 5, 'D', 12, 5, 1000, 3723000001), Some("some_wait_channel_longer"), "[irq/9 acpi]"));
    assert_eq!(
        kthread_ps::kthread::table(&[(&r, 0)]).lines().nth(1).unwrap(),
        "123456     5 D  12 0,2      100.0 62:03.000001 some_wait_channel_longer [irq/9 acpi]"
    );
}

#[test]
fn both_headers_are_read_and_a_third_is_not() {
    let old = include_str!("sample-sys-kthread-8col.txt");
    assert_eq!(parse::<Kthread>(old, true).unwrap().rows.len(), 6);
    assert_eq!(parse::<Kthread>(SAMPLE, true).unwrap().rows.len(), 38);
    // New rows under the old header: the %CPU word is read as the time.
    let body: String = SAMPLE.lines().skip(4).take(1).map(|l| format!("{l}\n")).collect();
    let mixed = format!("{}\n{body}", old.lines().next().unwrap());
    assert_eq!(
        parse::<Kthread>(&mixed, true).unwrap_err(),
        LineError { line: 2, msg: "TIME_US: `0.4` is not a number".into() }
    );
}
#[test]
fn header_problems() {
    let want = "expected the header line `PID PPID S CPU AFFINITY %CPU TIME_US WCHAN NAME`";
    // No header, first line a row: kept, with a warning (strict: an error).
    let rows_only: String = SAMPLE.lines().skip(4).map(|l| format!("{l}\n")).collect();
    let p = parse::<Kthread>(&rows_only, false).unwrap();
    assert_eq!(p.rows.len(), 38);
    let msg = "no header line (expected `PID PPID S CPU AFFINITY %CPU TIME_US WCHAN NAME`); read as a row";
    assert_eq!(p.warnings, [LineError { line: 1, msg: msg.into() }]);
    assert_eq!(parse::<Kthread>(&rows_only, true).unwrap_err(), LineError { line: 1, msg: want.into() });
    // Another file's header (the workqueue statistics): skipped.
    let wq = include_str!("sample-workqueue-monitor.txt");
    let p = parse::<Kthread>(wq, false).unwrap();
    assert_eq!(p.rows, []);
    assert_eq!(p.warnings[0], LineError { line: 11, msg: format!("{want} (line skipped)") });
    assert_eq!(p.warnings[1].line, 12);
    // Empty file; blank lines and comment lines before the header are fine.
    assert_eq!(parse::<Kthread>("\n \n", true).unwrap_err().msg, format!("empty file, {want}"));
    let p = parse::<Kthread>(&format!("\n# a note\n{SAMPLE}\n\n"), true).unwrap();
    assert_eq!(p.rows.len(), 38);
}

#[test]
fn cli_usage_errors() {
    let f = sample("sample-sys-kthread.txt");
    let msg = |args: &[&str]| {
        let o = cli(args);
        assert_eq!((o.code, o.stdout.as_str()), (2, ""), "{args:?}");
        o.stderr
    };
    assert_eq!(
        msg(&["--file", &f, "--sort", "mem"]),
        "kthread-ps: `--sort mem`: `kthread` sorts by pid, cpu, time (see --help)\n"
    );
    assert_eq!(
        msg(&["--file", &f, "--state", "1"]),
        "kthread-ps: `--state 1`: expected state letters such as D or RS (see --help)\n"
    );
    assert_eq!(msg(&["--file"]), "kthread-ps: `--file` needs a value (see --help)\n");
    assert_eq!(msg(&["--bogus"]), "kthread-ps: unknown option `--bogus` (see --help)\n");
    assert_eq!(msg(&["top"]), "kthread-ps: unknown command `top` (commands: kthread, wq) (see --help)\n");
    assert_eq!(msg(&["--file", &f, "extra"]), "kthread-ps: unexpected argument `extra` (see --help)\n");
    assert_eq!(msg(&["--json=yes"]), "kthread-ps: `--json` takes no value (see --help)\n");
    assert_eq!(msg(&["--help=x"]), "kthread-ps: `--help` takes no value (see --help)\n");
    assert!(msg(&["--file", &f, "--tree", "--json"]).contains("`--tree` and `--json` do not combine"));
    let help = cli(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(
        help.stdout.contains("kthread-ps [kthread] [--file PATH] [--sort pid|cpu|time] [--state LETTERS] [--tree]")
    );
    assert!(help.stdout.contains("kthread-ps wq [--file PATH] [--sort file|name|total|time] [--json] [--strict]"));
    assert!(help.stdout.contains("--state LETTERS  only threads in one of these states (R S D P I Z)"));
}
