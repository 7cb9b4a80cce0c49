//! `kthread-ps` (the `kthread` listing) on the format before `%CPU` (eight
//! columns): the first sys:kthread sample captured in the guest (Redox
//! under QEMU, 4 CPUs, November 2026) and hand-made broken inputs in that
//! format. The tool still reads it; its rows have no `%CPU`.

mod common;

use common::{cli, lines, sample, temp_file};
use kthread_ps::kthread::{Kthread, cpu_list, cpu_time, tree};
use kthread_ps::listing::{LineError, Listing, parse};

const SAMPLE: &str = include_str!("sample-sys-kthread-8col.txt");

/// A row of the eight-column format (no `%CPU`) from its numbers `(pid, ppid, state, cpu,
/// affinity, time_us)`, wait channel and name.
fn row(n: (u64, u64, char, u32, u64, u64), wchan: Option<&str>, name: &str) -> Kthread {
    let (pid, ppid, state, cpu, affinity, time_us) = n;
    Kthread { pid, ppid, state, cpu, affinity, pcpu: None, time_us, wchan: wchan.map(String::from), name: name.into() }
}

// Golden output, worked out from the table's widths: PID and PPID right in
// 5, S, CPU right in 3, AFFINITY left in 8, TIME (M:SS.uuuuuu) right in 11,
// WCHAN left in 16, NAME.
const HEADER: &str = "  PID  PPID S CPU AFFINITY  %CPU        TIME WCHAN            NAME";
const KTHREADD: &str = "    5     0 S   0 all          - 0:00.348263 kthreadd         [kthreadd]";
const KW0: &str = "    7     5 S   0 0            - 0:00.000319 kthread_worker   [kworker/0:0]";
const KW1: &str = "    8     5 S   1 1            - 0:00.000050 kthread_worker   [kworker/1:0]";
const KW2: &str = "    9     5 S   2 2            - 0:00.000043 kthread_worker   [kworker/2:0]";
const KW3: &str = "   10     5 S   3 3            - 0:00.000164 kthread_worker   [kworker/3:0]";
const EXITER: &str = "   23     5 Z   0 all          - 0:00.000239 -                [exiter]";

#[test]
fn every_row_of_the_guest_sample_parses_kthreadd_first() {
    let p = parse::<Kthread>(SAMPLE, true).unwrap();
    assert_eq!(p.warnings, []);
    assert_eq!(p.rows.len(), 6);
    assert_eq!(p.rows.iter().map(|r| r.pid).collect::<Vec<_>>(), [5, 7, 8, 9, 10, 23]);
    assert_eq!(p.rows[0], row((5, 0, 'S', 0, u64::MAX, 348263), Some("kthreadd"), "[kthreadd]"));
    assert_eq!(p.rows[1], row((7, 5, 'S', 0, 0x1, 319), Some("kthread_worker"), "[kworker/0:0]"));
    assert_eq!(p.rows[4], row((10, 5, 'S', 3, 0x8, 164), Some("kthread_worker"), "[kworker/3:0]"));
    assert_eq!(p.rows[5], row((23, 5, 'Z', 0, u64::MAX, 239), None, "[exiter]"));
    assert!(p.rows[1..].iter().all(|r| r.ppid == 5), "every other thread is kthreadd's child");
}

#[test]
fn the_table_of_the_sample() {
    let out = cli(&["--file", &sample("sample-sys-kthread-8col.txt")]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    assert_eq!(out.stdout, lines(&[HEADER, KTHREADD, KW0, KW1, KW2, KW3, EXITER]));
    // `kthread` is the default command; -f is --file; --sort pid the default.
    assert_eq!(cli(&["kthread", "-f", &sample("sample-sys-kthread-8col.txt"), "--sort=pid"]), out);
}

#[test]
fn sort_by_cpu_time_most_first() {
    let out = cli(&["--file", &sample("sample-sys-kthread-8col.txt"), "--sort", "time"]);
    assert_eq!(out.stdout, lines(&[HEADER, KTHREADD, KW0, EXITER, KW3, KW1, KW2]));
}

#[test]
fn filter_by_state() {
    let f = sample("sample-sys-kthread-8col.txt");
    assert_eq!(cli(&["--file", &f, "--state", "Z"]).stdout, lines(&[HEADER, EXITER]));
    assert_eq!(cli(&["--file", &f, "--state", "s"]).stdout, lines(&[HEADER, KTHREADD, KW0, KW1, KW2, KW3]));
    assert_eq!(cli(&["--file", &f, "--state", "D"]).stdout, lines(&[HEADER]));
    assert_eq!(cli(&["--file", &f, "--state", "DZ", "--sort", "time"]).stdout, lines(&[HEADER, EXITER]));
}

#[test]
fn tree_indents_kthreadds_children() {
    let f = sample("sample-sys-kthread-8col.txt");
    let child = |l: &str| l.replace(" [", "  \\_ [");
    let kids: Vec<String> = [KW0, KW1, KW2, KW3, EXITER].iter().map(|l| child(l)).collect();
    assert_eq!(kids[0], "    7     5 S   0 0            - 0:00.000319 kthread_worker    \\_ [kworker/0:0]");
    let mut want = vec![HEADER, KTHREADD];
    want.extend(kids.iter().map(String::as_str));
    assert_eq!(cli(&["--file", &f, "--tree"]).stdout, lines(&want));
    // Siblings follow the sort.
    let by_time = [HEADER, KTHREADD, &kids[0], &kids[4], &kids[3], &kids[1], &kids[2]];
    assert_eq!(cli(&["--file", &f, "--tree", "--sort", "time"]).stdout, lines(&by_time));
    // kthreadd filtered out: its children are roots.
    assert_eq!(cli(&["--file", &f, "--tree", "--state", "Z"]).stdout, lines(&[HEADER, EXITER]));
}

#[test]
fn tree_of_deeper_orphaned_and_cyclic_parents() {
    let r = |pid, ppid| row((pid, ppid, 'S', 0, 1, 0), None, "[t]");
    let rows = [r(2, 0), r(3, 2), r(4, 3), r(5, 2), r(6, 99), r(7, 8), r(8, 7), r(9, 9)];
    let got: Vec<(u64, usize)> = tree(&rows).iter().map(|(k, d)| (k.pid, *d)).collect();
    // 2 > 3 > 4 and 2 > 5; 6's parent is not listed; 9 is its own parent;
    // 7 and 8 are each other's parent, listed from the first met.
    assert_eq!(got, [(2, 0), (3, 1), (4, 2), (5, 1), (6, 0), (9, 0), (7, 0), (8, 1)]);
    let deep = kthread_ps::kthread::table(&tree(&rows[..3]));
    assert!(deep.ends_with("     \\_ [t]\n"), "{deep}");
}

#[test]
fn json_of_the_sample() {
    let out = cli(&["--file", &sample("sample-sys-kthread-8col.txt"), "--json", "--state", "Z", "--sort", "time"]);
    let obj = r#"{"pid":23,"ppid":5,"state":"Z","cpu":0,"affinity":"0xffffffffffffffff","pcpu":null,"time_us":239,"wchan":null,"name":"[exiter]"}"#;
    assert_eq!(out.stdout, format!("[\n  {obj}\n]\n"));
    let all = cli(&["--file", &sample("sample-sys-kthread-8col.txt"), "--json"]).stdout;
    let first = r#"  {"pid":5,"ppid":0,"state":"S","cpu":0,"affinity":"0xffffffffffffffff","pcpu":null,"time_us":348263,"wchan":"kthreadd","name":"[kthreadd]"},"#;
    let second = r#"  {"pid":7,"ppid":5,"state":"S","cpu":0,"affinity":"0x1","pcpu":null,"time_us":319,"wchan":"kthread_worker","name":"[kworker/0:0]"},"#;
    let got: Vec<&str> = all.lines().collect();
    assert_eq!((got.len(), got[0], got[1], got[2], got[7]), (8, "[", first, second, "]"));
    assert_eq!(cli(&["--file", &sample("sample-sys-kthread-8col.txt"), "--json", "--state", "D"]).stdout, "[]\n");
}

#[test]
fn json_escapes_names() {
    let r = row((9, 5, 'R', 1, 3, 7), None, "[a \"b\\c\"\u{1}]");
    assert_eq!(
        kthread_ps::kthread::to_json(&[r]),
        "[\n  {\"pid\":9,\"ppid\":5,\"state\":\"R\",\"cpu\":1,\"affinity\":\"0x3\",\"pcpu\":null,\"time_us\":7,\"wchan\":null,\"name\":\"[a \\\"b\\\\c\\\"\\u0001]\"}\n]\n"
    );
}

#[test]
fn names_with_spaces_and_wide_values() {
    let r = Kthread::parse_old_row("123456 5 D 12 0x5 3723000001 some_wait_channel_longer [irq/9 acpi]", 0).unwrap();
    assert_eq!(r, row((123456, 5, 'D', 12, 5, 3723000001), Some("some_wait_channel_longer"), "[irq/9 acpi]"));
    let t = kthread_ps::kthread::table(&[(&r, 0)]);
    assert_eq!(
        t.lines().nth(1).unwrap(),
        "123456     5 D  12 0,2          - 62:03.000001 some_wait_channel_longer [irq/9 acpi]"
    );
}

#[test]
fn cpu_lists_and_times() {
    assert_eq!(cpu_list(u64::MAX), "all");
    assert_eq!(cpu_list(0), "none");
    assert_eq!(cpu_list(0b1), "0");
    assert_eq!(cpu_list(0b1111), "0-3");
    assert_eq!(cpu_list(0b1101_0110), "1-2,4,6-7");
    assert_eq!(cpu_list(1 << 63 | 1 << 62), "62-63");
    assert_eq!(cpu_list(u64::MAX - 1), "1-63");
    assert_eq!(cpu_time(0), "0:00.000000");
    assert_eq!(cpu_time(59_999_999), "0:59.999999");
    assert_eq!(cpu_time(61_000_042), "1:01.000042");
}

#[test]
fn malformed_rows_say_what_is_wrong() {
    let err = |l: &str| Kthread::parse_old_row(l, 0).unwrap_err();
    assert_eq!(err("5 0 S 0"), "expected 8 columns (PID PPID S CPU AFFINITY TIME_US WCHAN NAME), found 4");
    assert_eq!(err("5 0 S 0 0x1 3 wchan"), "expected 8 columns (PID PPID S CPU AFFINITY TIME_US WCHAN NAME), found 7");
    assert_eq!(err("x 0 S 0 0x1 3 - [a]"), "PID: `x` is not a number");
    assert_eq!(err("5 -1 S 0 0x1 3 - [a]"), "PPID: `-1` is not a number");
    assert_eq!(err("5 0 SS 0 0x1 3 - [a]"), "S: `SS` is not a state letter");
    assert_eq!(err("5 0 S 0 1 3 - [a]"), "AFFINITY: `1` is not a 0x-prefixed hex mask");
    assert_eq!(
        err("5 0 S 0 0x1ffffffffffffffff 3 - [a]"),
        "AFFINITY: `0x1ffffffffffffffff` is not a 0x-prefixed hex mask"
    );
    assert_eq!(err("5 0 S 0 0x1 3.5 - [a]"), "TIME_US: `3.5` is not a number");
}

const BROKEN: &str = "   PID   PPID S CPU           AFFINITY      TIME_US WCHAN            NAME
     5      0 S   0 0xffffffffffffffff       348263 kthreadd         [kthreadd]
     7      5 S   0                0x1
     8      5 Q!  1                0x2           50 kthread_worker   [kworker/1:0]

     9      5 S   2                0x4           43 kthread_worker   [kworker/2:0]
";

#[test]
fn lenient_parse_skips_bad_lines_with_their_numbers() {
    let p = parse::<Kthread>(BROKEN, false).unwrap();
    assert_eq!(p.rows.iter().map(|r| r.pid).collect::<Vec<_>>(), [5, 9]);
    assert_eq!(
        p.warnings,
        [
            LineError {
                line: 3,
                msg: "expected 8 columns (PID PPID S CPU AFFINITY TIME_US WCHAN NAME), found 5 (line skipped)".into()
            },
            LineError { line: 4, msg: "S: `Q!` is not a state letter (line skipped)".into() },
        ]
    );
    assert_eq!(
        parse::<Kthread>(BROKEN, true),
        Err(LineError { line: 3, msg: p.warnings[0].msg.replace(" (line skipped)", "") })
    );
}

#[test]
fn cli_errors_are_one_line_with_file_and_line() {
    let f = temp_file("broken", BROKEN);
    let f = f.to_str().unwrap();
    let out = cli(&["--file", f]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    assert_eq!(
        out.stderr,
        format!(
            "kthread-ps: warning: {f}:3: expected 8 columns (PID PPID S CPU AFFINITY TIME_US WCHAN NAME), found 5 (line skipped)\n\
             kthread-ps: warning: {f}:4: S: `Q!` is not a state letter (line skipped)\n"
        )
    );
    let out = cli(&["--file", f, "--strict"]);
    assert_eq!((out.code, out.stdout.as_str()), (1, ""));
    assert_eq!(
        out.stderr,
        format!("kthread-ps: {f}:3: expected 8 columns (PID PPID S CPU AFFINITY TIME_US WCHAN NAME), found 5\n")
    );
    std::fs::remove_file(f).unwrap();

    let out = cli(&["--file", "/nonexistent/sys-kthread"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("kthread-ps: cannot read /nonexistent/sys-kthread: "), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1);
}

#[cfg(not(target_os = "redox"))]
#[test]
fn off_redox_the_file_must_be_given() {
    let o = cli(&[]);
    assert_eq!(o.code, 2);
    assert_eq!(
        o.stderr,
        "kthread-ps: /scheme/sys/kthread exists only on Redox: give the file with --file PATH (see --help)\n"
    );
}

#[test]
fn the_binary_reads_a_file_and_standard_input() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_kthread-ps");
    let out =
        Command::new(bin).args(["--file", &sample("sample-sys-kthread-8col.txt"), "--state", "Z"]).output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8(out.stdout).unwrap()), (Some(0), lines(&[HEADER, EXITER])));
    let mut child = Command::new(bin)
        .args(["--file", "-", "--strict"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(BROKEN.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "kthread-ps: <stdin>:3: expected 8 columns (PID PPID S CPU AFFINITY TIME_US WCHAN NAME), found 5\n"
    );
}
