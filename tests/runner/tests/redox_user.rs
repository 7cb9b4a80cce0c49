//! The Redox suite's user program (`tests/redox-user`), on the host: CI has no Redox target, so
//! its checks and its KTAP are tested here on their own, against `sys:` files captured in the
//! guest (`tests/redox-user/samples/`: Redox under QEMU with 4 CPUs, after the in-kernel
//! suites) and against broken ones, and its KTAP is fed to the runner's own parser nested where
//! the kernel's `redox_user` case puts it.

extern crate alloc;

#[allow(dead_code)]
#[path = "../../redox-user/src/checks.rs"]
mod checks;
#[allow(dead_code)]
#[path = "../../redox-user/src/ktap.rs"]
mod ktap;

use ktest_runner::ktap::{Parser, Status};
use std::path::PathBuf;

fn sample(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../redox-user/samples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn samples() -> (String, String, String) {
    (sample("sys-kthread.txt"), sample("sys-cpu.txt"), sample("sys-context.txt"))
}

/// `sys:kthread` with the line of PID `pid` replaced by `f(line)` (or removed on `None`).
fn edit_row(text: &str, pid: &str, f: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    for l in text.lines() {
        let line = if l.split_whitespace().next() == Some(pid) { f(l) } else { Some(l.to_string()) };
        if let Some(line) = line {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_guest_listings_pass_every_check() {
    let (kthread, cpu, context) = samples();
    let results = checks::check_listings(&kthread, &cpu, &context);
    assert_eq!(results.len(), 7);
    for (name, r) in &results {
        assert_eq!(r, &Ok(()), "{name}");
    }
    let rows = checks::parse_sys_kthread(&kthread).unwrap();
    assert_eq!(rows.len(), 37);
    assert_eq!(
        rows[0],
        checks::Row {
            pid: 5,
            ppid: 0,
            state: 'S',
            cpu: 1,
            affinity: u64::MAX,
            pcpu_permille: 0,
            time_us: 424402,
            wchan: "kthreadd",
            name: "[kthreadd]"
        }
    );
    let described = rows.iter().find(|r| r.pid == 1217).unwrap();
    assert_eq!((described.affinity, described.name), (0x2, "[kworker/1:3-wq-destroy]"));
    assert_eq!(checks::cpu_count(&cpu), Ok(4));
}

#[test]
fn broken_sys_kthread_is_reported_by_line() {
    let (kthread, _, _) = samples();
    let cases: [(&str, String, &str); 7] = [
        ("", String::new(), "sys:kthread is empty (is the subsystem started?)"),
        (
            "header",
            kthread.replacen("TIME_US", "TIME", 1),
            "sys:kthread header is `PID   PPID S CPU           AFFINITY  %CPU      TIME WCHAN            NAME`, \
             expected the columns PID PPID S CPU AFFINITY %CPU TIME_US WCHAN NAME",
        ),
        (
            "state",
            edit_row(&kthread, "7", |l| Some(l.replacen(" S ", " SS ", 1))),
            "sys:kthread line 3: state `SS` is not one letter",
        ),
        (
            "affinity",
            edit_row(&kthread, "7", |l| Some(l.replacen("0x1 ", "1 ", 1))),
            "sys:kthread line 3: affinity `1` is not a 0x mask",
        ),
        (
            "number",
            edit_row(&kthread, "7", |l| Some(l.replacen(" 2654 ", " 26a4 ", 1))),
            "sys:kthread line 3: TIME_US `26a4` is not a number",
        ),
        (
            "%CPU",
            edit_row(&kthread, "7", |l| Some(l.replacen(" 0.0 ", " 0,5 ", 1))),
            "sys:kthread line 3: %CPU `0,5` is not a number with one decimal",
        ),
        (
            "columns",
            edit_row(&kthread, "7", |_| Some(String::from("     7      5 S   0 0x1 0.0 2654"))),
            "sys:kthread line 3: fewer than 9 columns in `7      5 S   0 0x1 0.0 2654`",
        ),
    ];
    for (what, text, want) in cases {
        assert_eq!(checks::parse_sys_kthread(&text), Err(want.to_string()), "{what}");
    }
}

#[test]
fn each_check_names_what_is_wrong() {
    let (kthread, cpu, context) = samples();
    let rows_of = |t: &str| checks::parse_sys_kthread(t).map(|r| r.into_iter().map(|r| format!("{r:?}")).count());
    assert_eq!(rows_of(&kthread), Ok(37));

    let orphan = edit_row(&kthread, "1248", |l| Some(l.replacen("      5 I", "      7 I", 1)));
    let rows = checks::parse_sys_kthread(&orphan).unwrap();
    assert_eq!(
        checks::kthreadd_parents_all(&rows),
        Err("[kworker/u17:0] (PID 1248) has PPID 7, not kthreadd's 5".into())
    );
    let no_kthreadd = edit_row(&kthread, "5", |_| None);
    let rows = checks::parse_sys_kthread(&no_kthreadd).unwrap();
    assert_eq!(
        checks::kthreadd_parents_all(&rows),
        Err("the first row is [ksoftirqd/0] with PPID 5, expected [kthreadd] with PPID 0".into())
    );
    assert_eq!(checks::idle_threads_sleep(&rows), Err("no [kthreadd] row".into()));

    let rows = checks::parse_sys_kthread(&kthread).unwrap();
    assert_eq!(checks::rows_are_consistent(&rows, 2), Err("[ksoftirqd/2] is on CPU 2 of 2".into()));
    let over = edit_row(&kthread, "1236", |l| Some(l.replacen("   0.0 ", " 100.1 ", 1)));
    let rows = checks::parse_sys_kthread(&over).unwrap();
    assert_eq!(checks::rows_are_consistent(&rows, 4), Err("[kworker/3:10-wq-hog] uses 100.1% of one CPU".into()));
    let unbound_cpu2 = edit_row(&kthread, "16", |_| None);
    let unbound_cpu2 = edit_row(&unbound_cpu2, "1222", |_| None);
    let unbound_cpu2 = edit_row(&unbound_cpu2, "1251", |_| None);
    let rows = checks::parse_sys_kthread(&unbound_cpu2).unwrap();
    assert_eq!(checks::per_cpu_workers_bound(&rows, 4), Err("no live [kworker/2:*] bound to CPU 2 alone".into()));
    let twice = edit_row(&kthread, "12", |l| Some(l.replacen("12", " 9", 1)));
    let rows = checks::parse_sys_kthread(&twice).unwrap();
    assert_eq!(checks::rows_are_consistent(&rows, 4), Err("PID 9 is listed twice".into()));
    let (header, body) = kthread.split_once('\n').unwrap();
    let awake = format!("{header}\n{}", body.replace(" I ", " R ").replace("worker_thread", "-            "));
    let rows = checks::parse_sys_kthread(&awake).unwrap();
    assert_eq!(
        checks::idle_threads_sleep(&rows),
        Err("no worker waits idle in worker_thread (state I, WCHAN worker_thread)".into())
    );
    // A worker waiting for work in S (as before state I) or D (it would look hung).
    for letter in ["S", "D"] {
        let wrong = edit_row(&kthread, "1262", |l| Some(l.replacen(" I ", &format!(" {letter} "), 1)));
        let rows = checks::parse_sys_kthread(&wrong).unwrap();
        assert_eq!(
            checks::idle_threads_sleep(&rows),
            Err(format!("[kworker/0:15] waits for work in state {letter}, expected I"))
        );
    }

    let rows = checks::parse_sys_kthread(&kthread).unwrap();
    let missing: String =
        context.lines().filter(|l| !l.ends_with("[kworker/3:10]")).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        checks::listed_in_sys_context(&rows, &missing),
        Err("[kworker/3:10-wq-hog] (PID 1236) is not in sys:context".into())
    );
    assert_eq!(
        checks::cpu_count("Vendor: x\n"),
        Err("sys:cpu does not start with `CPUs: N` but with `Vendor: x`".into())
    );
    assert_eq!(checks::cpu_count(&cpu), Ok(4));

    // A file that cannot be parsed leaves the checks that need it unchecked, naming why.
    let results = checks::check_listings("", &cpu, &context);
    assert_eq!(results[1], ("sys_kthread_parses", Err("sys:kthread is empty (is the subsystem started?)".into())));
    assert_eq!(
        results[2],
        (
            "kthreadd_is_first_and_parent_of_all",
            Err("not checked: sys:kthread is empty (is the subsystem started?)".into())
        )
    );
}

#[test]
fn worker_descriptions_match_their_context() {
    assert!(checks::same_thread("[kworker/1:0-events]", "[kworker/1:0]"));
    assert!(checks::same_thread("[kthreadd]", "[kthreadd]"));
    assert!(!checks::same_thread("[kworker/1:0H]", "[kworker/1:0]"));
    assert!(!checks::same_thread("[kworker/1:0-events]", "[kworker/1:]"));
    let (_, _, context) = samples();
    let names = checks::kernel_context_names(&context);
    assert_eq!(names.len(), 44, "every context of the sample has a bracketed name");
    assert_eq!((names[0], names[43]), ("[kmain]", "[kworker/2:5]"));
}

/// What the kernel prints around the program's lines: the `redox_user` suite, its first case,
/// then (after the program's subtest) the case that started user space.
fn kernel_around(user: &[String], user_ok: bool) -> Vec<String> {
    let mut lines: Vec<String> =
        ["KTAP version 1", "# seed: 1", "1..1", "    KTAP version 1", "    # Subtest: redox_user", "    1..2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    lines.push("    ok 1 kill_path_refuses_kernel_threads".into());
    lines.extend(user.iter().cloned());
    lines.push(format!("    {} 2 user_space", if user_ok { "ok" } else { "not ok" }));
    lines.push(format!("{} 1 redox_user", if user_ok { "ok" } else { "not ok" }));
    lines
}

#[test]
fn the_programs_ktap_nests_under_the_kernels_case() {
    let mut user = Vec::new();
    let mut k = ktap::Ktap::start(|l: &str| user.push(l.to_string()), "user_space", 3);
    k.diag("Redox user space: # of threads\nnext");
    k.result("first", &Ok(()));
    k.result("second", &Err("went # wrong\nbadly".into()));
    k.result("third", &Ok(()));
    assert_eq!(k.failed(), 1);
    assert_eq!(
        user,
        [
            "        KTAP version 1",
            "        # Subtest: user_space",
            "        1..3",
            "        # Redox user space: % of threads next",
            "        ok 1 first",
            "        not ok 2 second # went % wrong badly",
            "        ok 3 third",
        ]
    );
    let mut parser = Parser::new();
    for l in kernel_around(&user, false) {
        parser.feed(&l);
    }
    let summary = parser.finish();
    assert!(summary.problems.is_empty(), "{:?}", summary.problems);
    let leaves: Vec<(String, String, Status)> =
        summary.leaves().map(|r| (r.suite.clone(), r.name.clone(), r.status)).collect();
    assert_eq!(
        leaves,
        [
            ("redox_user".into(), "kill_path_refuses_kernel_threads".into(), Status::Ok),
            ("redox_user".into(), "user_space.first".into(), Status::Ok),
            ("redox_user".into(), "user_space.second".into(), Status::NotOk),
            ("redox_user".into(), "user_space.third".into(), Status::Ok),
        ]
    );
    assert_eq!(summary.counts(), (3, 1, 0));
}

/// The bottom-half files captured in the guest (4 CPUs, after the suites; the kernel prints
/// them as `# sys:softirqs:` and `# sys:interrupts:` lines at the end of a run).
fn bh_samples() -> (String, String, String, String) {
    (sample("sys-softirqs.txt"), sample("sys-interrupts.txt"), sample("sys-kthread.txt"), sample("sys-cpu.txt"))
}

#[test]
fn the_guest_bottom_half_files_pass_every_check() {
    let (softirqs, interrupts, kthread, cpu) = bh_samples();
    let results = checks::check_bottom_halves(&softirqs, &interrupts, &kthread, &cpu);
    assert_eq!(results.len(), 3);
    for (name, r) in &results {
        assert_eq!(r, &Ok(()), "{name}");
    }
}

#[test]
fn broken_bottom_half_files_are_reported() {
    let (softirqs, interrupts, kthread, _) = bh_samples();
    // A CPU column missing from the header.
    let two = softirqs.replacen("CPU3", "", 1);
    assert!(checks::softirqs_table(&two, 4).unwrap_err().contains("header"));
    // A vector out of Linux's order.
    let swapped = softirqs.replacen("NET_TX:", "NET_XX:", 1);
    assert!(checks::softirqs_table(&swapped, 4).unwrap_err().contains("NET_TX was expected"));
    // A count that is not a number.
    let bad = softirqs.replacen("TIMER:          6", "TIMER:          x", 1);
    assert!(checks::softirqs_table(&bad, 4).unwrap_err().contains("not a count"), "{bad}");
    // TIMER never ran: delayed work could not have expired.
    let mut no_timer = String::new();
    for l in softirqs.lines() {
        if l.trim_start().starts_with("TIMER:") {
            no_timer.push_str("       TIMER:          0          0          0          0");
        } else {
            no_timer.push_str(l);
        }
        no_timer.push('\n');
    }
    assert!(checks::softirqs_table(&no_timer, 4).unwrap_err().contains("TIMER never ran"));
    // sys:interrupts without its delivery counters, or with a short row.
    let cut: String =
        interrupts.lines().take_while(|l| !l.starts_with("irq-scheme")).map(|l| format!("{l}\n")).collect();
    assert!(checks::interrupts_table(&cut, 4).unwrap_err().contains("irq-scheme delivery"));
    let short =
        interrupts.replacen("223:          0          0          0         20", "223:          0          0", 1);
    assert!(checks::interrupts_table(&short, 4).unwrap_err().contains("counts for 4 CPUs"), "{short}");
    // A ksoftirqd missing, or not bound to its CPU.
    let rows = checks::parse_sys_kthread(&kthread).unwrap();
    let without: Vec<_> = rows.iter().filter(|r| r.name != "[ksoftirqd/2]").cloned().collect();
    assert_eq!(checks::ksoftirqd_per_cpu(&without, 4), Err("no live [ksoftirqd/2]".to_string()));
    let mut unbound = rows.clone();
    unbound.iter_mut().filter(|r| r.name == "[ksoftirqd/1]").for_each(|r| r.affinity = 0x3);
    assert!(checks::ksoftirqd_per_cpu(&unbound, 4).unwrap_err().contains("affinity 0x3"));
}

#[test]
fn the_user_programs_disk_pattern_and_hash_are_the_runners() {
    use ktest_runner::disks;
    for sector in [0u64, 1, 8, 255, 256, 26625, 32767] {
        for i in [0usize, 7, 8, 100, 511] {
            assert_eq!(checks::image_byte(sector, i), disks::pattern_byte(sector, i), "sector {sector} byte {i}");
        }
    }
    let bytes = checks::image_bytes((13 << 20) + 777, 1000);
    assert_eq!(bytes[0], disks::pattern_byte(((13 << 20) + 777) / 512, 777 % 512));
    assert_eq!(checks::fnv1a64(&bytes), disks::fnv1a64(disks::FNV_OFFSET_BASIS, &bytes));
}

#[test]
fn the_memory_tables_pass_as_captured_and_fail_when_broken() {
    let (vmstat, meminfo) = (sample("sys-vmstat.txt"), sample("sys-meminfo.txt"));
    assert_eq!(checks::memory_tables(&vmstat, &meminfo), Ok(()));
    // A missing Linux name.
    let no_pageoutrun: String =
        vmstat.lines().filter(|l| !l.starts_with("pageoutrun ")).map(|l| format!("{l}\n")).collect();
    let e = checks::memory_tables(&no_pageoutrun, &meminfo).unwrap_err();
    assert!(e.contains("pageoutrun"), "{e}");
    // A value that is not a number.
    let bad = vmstat.replacen("nr_dirty 0", "nr_dirty zero", 1);
    assert!(checks::memory_tables(&bad, &meminfo).unwrap_err().contains("not a number"));
    // meminfo without its unit, or free above total, or disagreeing with vmstat.
    let no_unit = meminfo.replacen(" kB", "", 1);
    assert!(checks::memory_tables(&vmstat, &no_unit).unwrap_err().contains("Name: N kB"));
    let total: u64 = meminfo.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let over = meminfo
        .lines()
        .map(|l| if l.starts_with("MemFree:") { format!("MemFree: {} kB\n", total + 1) } else { format!("{l}\n") })
        .collect::<String>();
    assert!(checks::memory_tables(&vmstat, &over).unwrap_err().contains("MemFree"));
    let far = vmstat
        .lines()
        .map(|l| if l.starts_with("nr_free_pages ") { String::from("nr_free_pages 1\n") } else { format!("{l}\n") })
        .collect::<String>();
    assert!(checks::memory_tables(&far, &meminfo).unwrap_err().contains("nr_free_pages"));
}

#[test]
fn the_sysctl_table_passes_as_captured_and_fails_when_broken() {
    let text = sample("sys-sysctl.txt");
    let table = checks::sysctl_table(&text).expect("captured sys:sysctl");
    assert!(table.contains(&("kernel.hung_task_timeout_secs", 120)), "{table:?}");
    assert!(table.contains(&("kernel.watchdog_thresh", 10)), "{table:?}");
    // A name the program needs, missing.
    let no_thresh: String =
        text.lines().filter(|l| !l.starts_with("kernel.watchdog_thresh ")).map(|l| format!("{l}\n")).collect();
    assert!(checks::sysctl_table(&no_thresh).unwrap_err().contains("kernel.watchdog_thresh"));
    // Not `name = value`, not an integer, out of order.
    let bad = text.replacen(" = ", "=", 1);
    assert!(checks::sysctl_table(&bad).unwrap_err().contains("name = value"));
    let bad = text.replacen("= 120", "= lots", 1);
    assert!(checks::sysctl_table(&bad).unwrap_err().contains("not an integer"));
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(0, 1);
    assert!(checks::sysctl_table(&lines.join("\n")).unwrap_err().contains("out of order"));
}
