//! `make redox-test` (`kernel-patch/redox-test.sh`) as far as CI can run it without Redox's
//! source, a nightly toolchain or the Redox target: its arguments, its error messages, and its
//! preparation of the scratch tree (copy, series check and application, the project's place,
//! the cargo configuration) on a fake kernel checkout. The fake checkout is a git repository
//! whose files hold exactly the lines the series' hunks show, at their line numbers, and filler
//! lines elsewhere, so that the series applies to it as to the real commit; the script stops
//! before building (`PREPARE_ONLY=1`). Also checked: the kernel's lock file, resolved with the
//! dependencies the series adds, holds no model-checking crate.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The commit the series is made for (kernel-patch/mkseries.sh's BASE).
const SERIES_BASE: &str = "663e66410bac71cd7e335501118a7cee746d15f9";
const SYSCALL_REV: &str = "e4277c29f70dd96679f236727757d57c36d7af25";
const FDT_REV: &str = "2fb1409edd1877c714a0aa36b6a7c5351004be54";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn series() -> Vec<(String, String)> {
    let dir = repo().join("kernel-patch");
    let list = fs::read_to_string(dir.join("series")).expect("series");
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|n| (n.to_string(), fs::read_to_string(dir.join(n)).expect("patch")))
        .collect()
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("redox-test-cmd").join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// One line of a file as the series knows it: a line of the original, or one a patch added.
#[derive(Clone)]
enum Line {
    Orig(usize),
    New(String),
}

/// The original text of every file the series touches, as far as its hunks show it: each
/// context or removed line at its line number (following the line numbers through the
/// patches in order), `// filler N` elsewhere, ending at the last line a hunk shows.
fn files_before_series() -> BTreeMap<String, Vec<String>> {
    const SLOTS: usize = 5000;
    let mut orig: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    let mut current: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for (name, text) in series() {
        let mut file = String::new();
        let mut pos = 0usize;
        let mut shift: BTreeMap<String, isize> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("diff --git a/") {
                file = rest.split(" b/").next().unwrap().to_string();
                orig.entry(file.clone()).or_insert_with(|| vec![None; SLOTS]);
                current.entry(file.clone()).or_insert_with(|| (0..SLOTS).map(Line::Orig).collect());
                continue;
            }
            if line.starts_with("--- ") || line.starts_with("+++ ") || line.starts_with("index ") {
                continue;
            }
            if let Some(h) = line.strip_prefix("@@ -") {
                let old = h.split(' ').next().unwrap();
                let (start, len) = old.split_once(',').unwrap_or((old, "1"));
                let (start, len): (usize, usize) = (start.parse().unwrap(), len.parse().unwrap());
                let s = *shift.get(&file).unwrap_or(&0);
                pos = ((if len == 0 { start } else { start - 1 }) as isize + s) as usize;
                continue;
            }
            if file.is_empty() || line.starts_with('\\') {
                continue;
            }
            let (kind, body) = match line.chars().next() {
                Some(c @ (' ' | '-' | '+')) => (c, &line[1..]),
                _ if line.is_empty() => continue,
                _ => {
                    file.clear();
                    continue;
                }
            };
            let cur = current.get_mut(&file).unwrap();
            let known = orig.get_mut(&file).unwrap();
            if kind == '+' {
                cur.insert(pos, Line::New(body.to_string()));
                pos += 1;
                *shift.entry(file.clone()).or_default() += 1;
                continue;
            }
            match &cur[pos] {
                Line::Orig(i) => match &known[*i] {
                    Some(t) => assert_eq!(t, body, "{name}: {file}: two texts for original line {}", i + 1),
                    None => known[*i] = Some(body.to_string()),
                },
                Line::New(t) => assert_eq!(t, body, "{name}: {file}: a line an earlier patch added differs"),
            }
            if kind == '-' {
                cur.remove(pos);
                *shift.entry(file.clone()).or_default() -= 1;
            } else {
                pos += 1;
            }
        }
    }
    orig.into_iter()
        .map(|(f, lines)| {
            let last = lines.iter().rposition(Option::is_some).unwrap_or(0);
            let text = lines[..=last]
                .iter()
                .enumerate()
                .map(|(i, l)| l.clone().unwrap_or(format!("// filler {}", i + 1)))
                .collect();
            (f, text)
        })
        .collect()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A fake Redox kernel checkout (a git repository with one commit) the series applies to,
/// plus an uncommitted change, an untracked file and ignored build output. Returns its commit.
fn fake_kernel(dir: &Path) -> String {
    fs::create_dir_all(dir).unwrap();
    for (file, lines) in files_before_series() {
        write(&dir.join(&file), &(lines.join("\n") + "\n"));
    }
    write(&dir.join("Makefile"), "all:\n\ttrue\n");
    write(
        &dir.join("rust-toolchain.toml"),
        "[toolchain]\nchannel = \"nightly-2026-05-24\"\ncomponents = [\"rust-src\"]\n",
    );
    write(&dir.join("targets/x86_64-unknown-kernel.json"), "{}\n");
    write(&dir.join("linkers/x86_64.ld"), "/* fake */\n");
    write(&dir.join(".gitignore"), "target\n/build\n");
    let lock = format!(
        "version = 4\n\n[[package]]\nname = \"fdt\"\nversion = \"0.2.0\"\n\
         source = \"git+https://github.com/repnop/fdt.git?rev={FDT_REV}#{FDT_REV}\"\n\n\
         [[package]]\nname = \"kernel\"\nversion = \"0.5.12\"\n\n\
         [[package]]\nname = \"redox_syscall\"\nversion = \"0.9.2\"\n\
         source = \"git+https://gitlab.redox-os.org/redox-os/syscall#{SYSCALL_REV}\"\n"
    );
    write(&dir.join("Cargo.lock"), &lock);
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "fake kernel"]);
    // The working tree as a developer has it: a change, a new file, build output.
    let rmm = dir.join("src/main.rs");
    let text = fs::read_to_string(&rmm).unwrap();
    fs::write(&rmm, text.replacen("// filler 1\n", "// my uncommitted change\n", 1)).unwrap();
    write(&dir.join("src/new_file.rs"), "// not committed yet\n");
    write(&dir.join("target/release/junk"), "build output\n");
    write(&dir.join("build/x86_64/kernel"), "an old kernel\n");
    git(dir, &["rev-parse", "HEAD"])
}

/// Fake checkouts of the kernel's two git dependencies.
fn fake_deps(dir: &Path) -> (PathBuf, PathBuf) {
    let sys = dir.join("syscall");
    let fdt = dir.join("fdt");
    write(&sys.join("Cargo.toml"), "[package]\nname = \"redox_syscall\"\nversion = \"0.9.2\"\n");
    write(&fdt.join("Cargo.toml"), "[package]\nname = \"fdt\"\nversion = \"0.2.0\"\n");
    (sys, fdt)
}

/// Every file under `dir` with its bytes (to show the checkout is left as it was).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn script(args: &[String], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(repo().join("kernel-patch/redox-test.sh"));
    cmd.args(args).current_dir(repo());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kernel-patch/redox-test.sh");
    println!(
        "---- stdout ----\n{}---- stderr ----\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run(args: &[&str]) -> Output {
    script(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn arguments_are_checked_before_anything_runs() {
    let cases: [(&[&str], &str); 10] = [
        (&[], "redox-test: give REDOX_KERNEL=<path to a redox-os/kernel checkout>"),
        (&["REDOX_KERNEL=/x", "FOO=1"], "redox-test: unknown argument 'FOO=1'"),
        (&["REDOX_KERNEL=/x", "--help"], "redox-test: unknown argument '--help'"),
        (
            &["REDOX_KERNEL=/x", "PREEMPT=full,none"],
            "redox-test: PREEMPT=full,none: Redox never preempts kernel code; only PREEMPT=none runs inside Redox",
        ),
        (&["REDOX_KERNEL=/x", "SMP=0"], "redox-test: SMP must be a comma list of CPU counts, not '0'"),
        (
            &["REDOX_KERNEL=/x", "TESTS=port kthread"],
            "redox-test: TESTS must be a comma list of suites, not 'port kthread'",
        ),
        (&["REDOX_KERNEL=/x", "USERSPACE=yes"], "redox-test: USERSPACE must be auto, 0 or 1, not 'yes'"),
        (
            &["REDOX_KERNEL=/x", "TESTS=torture", "APPEND=torture_s=60 torture_fault"],
            "redox-test: APPEND takes key=value words (the guest's command line), not 'torture_fault'",
        ),
        (&["REDOX_KERNEL=/x", "KERNEL_BUILD=gcc"], "redox-test: KERNEL_BUILD must be auto, redox or host, not 'gcc'"),
        (
            &["REDOX_KERNEL=/x", "MODE=bench", "SMP=4"],
            "redox-test: redox-bench runs the benchmark configuration (-smp 2 -m 512M); SMP=4 is not for it",
        ),
    ];
    for (args, want) in cases {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().next(), Some(want), "{args:?}");
        assert!(err.lines().nth(1).unwrap().starts_with("redox-test: usage: make redox-test REDOX_KERNEL="), "{err}");
        assert!(stdout(&o).is_empty(), "nothing runs before the arguments are good");
    }
}

#[test]
fn a_directory_that_is_not_a_redox_kernel_is_named() {
    let d = scratch("not-a-kernel");
    let o = run(&[&format!("REDOX_KERNEL={}", d.join("missing").display())]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        format!("redox-test: error: REDOX_KERNEL={} does not exist", d.join("missing").display())
    );
    let o = run(&[&format!("REDOX_KERNEL={}", d.display())]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "redox-test: error: {} is not a Redox kernel checkout (no Cargo.toml; expected a clone of \
             https://gitlab.redox-os.org/redox-os/kernel)",
            d.display()
        )
    );
    let k = d.join("other-crate");
    fake_kernel(&k);
    let manifest = fs::read_to_string(k.join("Cargo.toml")).unwrap();
    fs::write(k.join("Cargo.toml"), manifest.replace("name = \"kernel\"", "name = \"bootloader\"")).unwrap();
    let o = run(&[&format!("REDOX_KERNEL={}", k.display())]);
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "redox-test: error: {} is not a Redox kernel checkout (its Cargo.toml is not the package \"kernel\")",
            k.display()
        )
    );
}

#[test]
fn a_fake_checkout_is_copied_patched_and_left_untouched() {
    let d = scratch("prepare");
    let k = d.join("kernel");
    let commit = fake_kernel(&k);
    let (sys, fdt) = fake_deps(&d);
    let work = d.join("work");
    let before = snapshot(&k);
    let status_before = git(&k, &["status", "--porcelain"]);
    let o = run(&[
        &format!("REDOX_KERNEL={}", k.display()),
        &format!("REDOX_SYSCALL={}", sys.display()),
        &format!("REDOX_FDT={}", fdt.display()),
        &format!("REDOX_WORK={}", work.display()),
        "PREPARE_ONLY=1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let head = git(&repo(), &["rev-parse", "HEAD"]);
    let k = k.canonicalize().unwrap();
    let work = work.canonicalize().unwrap();
    let tree = work.join("kernel");
    let mut want = vec![
        format!("redox-test: Redox kernel: {} at {commit}, with uncommitted changes (copied as they are)", k.display()),
        format!("redox-test: note: the series is made for redox-os/kernel {SERIES_BASE}; trying it on {commit}"),
        format!("redox-test: copied to {}", tree.display()),
    ];
    want.extend(series().iter().map(|(p, _)| format!("redox-test: applied {p}")));
    want.push(format!("redox-test: this project at subsys/kthreads: git archive of HEAD {head}"));
    let lines: Vec<&str> = out.lines().filter(|l| !l.contains("warning: this repository has")).collect();
    assert_eq!(lines[..want.len()], want.iter().map(String::as_str).collect::<Vec<_>>()[..]);
    assert!(out.contains(&format!(
        "redox-test: redox_syscall: {} (REDOX_SYSCALL, at unknown)",
        sys.canonicalize().unwrap().display()
    )));
    assert!(out.contains(&format!(
        "redox-test: warning: REDOX_FDT={} is at unknown; the kernel's Cargo.lock pins fdt at {FDT_REV}",
        fdt.canonicalize().unwrap().display()
    )));
    assert!(
        out.trim_end()
            .ends_with(&format!("redox-test: PREPARE_ONLY=1: the patched tree is {}; nothing built", tree.display()))
    );

    // The scratch tree: the working tree as it was, the hooks, this project at its place.
    let main_rs = fs::read_to_string(tree.join("src/main.rs")).unwrap();
    assert!(main_rs.contains("// my uncommitted change"), "uncommitted changes are copied");
    assert!(main_rs.contains("#[path = \"../subsys/kthreads/kernel-patch/glue/mod.rs\"]"), "0002 applied");
    assert!(fs::read_to_string(tree.join("src/scheme/proc.rs")).unwrap().contains("crate::kthread::signal_from_user("));
    assert!(fs::read_to_string(tree.join("Cargo.toml")).unwrap().contains("ktests = [\"dep:ktests\"]"), "0003 applied");
    assert!(tree.join("src/new_file.rs").is_file(), "untracked files are copied");
    assert!(!tree.join("target").exists() && !tree.join("build").exists(), "ignored build output is not copied");
    assert!(!tree.join(".git").exists());
    let project = tree.join("subsys/kthreads");
    for f in [
        "Cargo.toml",
        "kernel-patch/glue/mod.rs",
        "kthreadd/port/Cargo.toml",
        "tests/suite/Cargo.toml",
        "tests/redox-user/Cargo.toml",
    ] {
        assert!(project.join(f).is_file(), "{f} is in the project's copy");
    }
    assert!(!project.join("cookbook-recipe").exists(), "the recipe copy leaves cookbook-recipe out");
    let config = fs::read_to_string(work.join(".cargo/config.toml")).unwrap();
    let (sys, fdt) = (sys.canonicalize().unwrap(), fdt.canonicalize().unwrap());
    assert_eq!(
        config,
        format!(
            "# Written by kernel-patch/redox-test.sh for the scratch build in {} only.\n\
             [patch.\"https://gitlab.redox-os.org/redox-os/syscall\"]\nredox_syscall = {{ path = \"{}\" }}\n\
             [patch.crates-io]\nredox_syscall = {{ path = \"{}\" }}\n\
             [patch.\"https://github.com/repnop/fdt.git\"]\nfdt = {{ path = \"{}\" }}\n",
            work.display(),
            sys.display(),
            sys.display(),
            fdt.display()
        )
    );
    assert!(!repo().join(".cargo").exists(), "no cargo configuration is written where this repository's builds see it");

    // The user's checkout is exactly as it was.
    assert_eq!(snapshot(&k), before);
    assert_eq!(git(&k, &["status", "--porcelain"]), status_before);

    // A checkout that already has the series (the scratch tree itself, not a git repository)
    // is named as such.
    let o = run(&[&format!("REDOX_KERNEL={}", tree.display()), &format!("REDOX_WORK={}", d.join("work2").display())]);
    assert_eq!(o.status.code(), Some(1));
    let (first, _) = &series()[0];
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "redox-test: error: kernel-patch/{first} does not apply to {} (at unknown): \
             src/arch/x86_shared/device/local_apic.rs already has it (a checkout with the series applied? give an \
             unpatched one). The series is made for redox-os/kernel {SERIES_BASE}: check that commit out, or rebase the \
             series on yours (kernel-patch/README.md, \"Changing the glue or the hooks\")",
            tree.display()
        )
    );
}

#[test]
fn a_hunk_that_does_not_apply_is_named_with_the_series_commit() {
    let d = scratch("conflict");
    let k = d.join("kernel");
    fake_kernel(&k);
    // Redox changed the line 0002 inserts its tick() hook after.
    let switch = k.join("src/context/switch.rs");
    let text = fs::read_to_string(&switch).unwrap();
    fs::write(
        &switch,
        text.replace("pub fn tick(token: &mut CleanLockToken) {", "pub fn tick(token: &mut LockToken) {"),
    )
    .unwrap();
    git(&k, &["commit", "-q", "-am", "Redox moved on"]);
    let commit = git(&k, &["rev-parse", "HEAD"]);
    let (name, patch) = series().into_iter().find(|(n, _)| n.starts_with("0002")).unwrap();
    let header = patch
        .split("diff --git a/src/context/switch.rs")
        .nth(1)
        .and_then(|s| s.lines().find(|l| l.starts_with("@@ ")))
        .unwrap()
        .to_string();
    let o = run(&[&format!("REDOX_KERNEL={}", k.display()), &format!("REDOX_WORK={}", d.join("work").display())]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "redox-test: error: kernel-patch/{name} does not apply to {} (at {commit}): hunk #1 of \
             src/context/switch.rs ({header}) does not match. The series is made for redox-os/kernel {SERIES_BASE}: \
             check that commit out, or rebase the series on yours (kernel-patch/README.md, \"Changing the glue or the \
             hooks\")",
            k.canonicalize().unwrap().display()
        )
    );
    assert!(stdout(&o).contains("redox-test: applied 0001-"), "the patches before it applied");
}

#[test]
fn unreachable_git_dependencies_are_named_with_their_commits() {
    let d = scratch("deps");
    let k = d.join("kernel");
    fake_kernel(&k);
    let work = format!("REDOX_WORK={}", d.join("work").display());
    // git may not use https here: the remotes are unreachable at once, whatever the network.
    let env = [("GIT_ALLOW_PROTOCOL", "file")];
    let o = script(&[format!("REDOX_KERNEL={}", k.display()), work.clone(), "PREPARE_ONLY=1".into()], &env);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "redox-test: error: the kernel's git dependencies are not reachable from here: redox_syscall from \
             https://gitlab.redox-os.org/redox-os/syscall at {SYSCALL_REV}: give REDOX_SYSCALL=<a checkout of it at that \
             commit>; fdt from https://github.com/repnop/fdt.git at {FDT_REV}: give REDOX_FDT=<a checkout of it at that \
             commit>"
        )
    );
    let (sys, fdt) = fake_deps(&d);
    let o = script(
        &[
            format!("REDOX_KERNEL={}", k.display()),
            work.clone(),
            format!("REDOX_SYSCALL={}", sys.display()),
            "PREPARE_ONLY=1".into(),
        ],
        &env,
    );
    assert!(
        stderr(&o).trim().ends_with(&format!(
            "reachable from here: fdt from https://github.com/repnop/fdt.git at {FDT_REV}: give REDOX_FDT=<a checkout of it \
             at that commit>"
        )),
        "only the missing one is named"
    );
    let o = script(
        &[
            format!("REDOX_KERNEL={}", k.display()),
            work.clone(),
            format!("REDOX_SYSCALL={}", fdt.display()),
            "PREPARE_ONLY=1".into(),
        ],
        &env,
    );
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "redox-test: error: REDOX_SYSCALL={} is not a checkout of redox_syscall (its Cargo.toml is not the package \
             \"redox_syscall\")",
            fdt.canonicalize().unwrap().display()
        )
    );
    let o = script(&[format!("REDOX_KERNEL={}", k.display()), work, "REDOX_FDT=/nonexistent".into()], &env);
    assert_eq!(stderr(&o).trim(), "redox-test: error: REDOX_FDT=/nonexistent is not a directory");
}

#[test]
fn make_passes_only_what_was_given() {
    let make = |args: &[&str]| {
        let o = Command::new("make")
            .args(["-s", "-n", "--no-print-directory"])
            .args(args)
            .current_dir(repo())
            .env_remove("PREEMPT")
            .env_remove("SMP")
            .env_remove("TESTS")
            .env_remove("APPEND")
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL")
            .output()
            .expect("make");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.lines().find(|l| l.contains("kernel-patch/redox-test.sh")).unwrap_or_default().to_string()
    };
    assert_eq!(make(&["redox-test", "REDOX_KERNEL=/k"]), "kernel-patch/redox-test.sh MODE=test REDOX_KERNEL=\"/k\"");
    assert_eq!(
        make(&["redox-test", "REDOX_KERNEL=/k", "SMP=1", "TESTS=port", "REDOX_SYSCALL=/s", "PREEMPT=none"]),
        "kernel-patch/redox-test.sh MODE=test REDOX_KERNEL=\"/k\" REDOX_SYSCALL=\"/s\" SMP=\"1\" PREEMPT=\"none\" TESTS=\"port\""
    );
    assert_eq!(
        make(&["redox-test", "REDOX_KERNEL=/k", "TESTS=torture", "APPEND=torture_s=60 torture_fault=10"]),
        "kernel-patch/redox-test.sh MODE=test REDOX_KERNEL=\"/k\" TESTS=\"torture\" APPEND=\"torture_s=60 torture_fault=10\""
    );
    assert_eq!(make(&["redox-bench", "REDOX_KERNEL=/k"]), "kernel-patch/redox-test.sh MODE=bench REDOX_KERNEL=\"/k\"");
}

#[test]
fn the_kernels_lock_file_holds_no_model_checking_crate() {
    // A package standing for the patched kernel: the dependencies and the feature the series
    // adds to the kernel's Cargo.toml, this repository at subsys/kthreads.
    let d = scratch("lock");
    let mut deps = String::new();
    let mut features = String::new();
    for (_, patch) in series() {
        let mut in_manifest = false;
        for line in patch.lines() {
            if line.starts_with("diff --git ") {
                in_manifest = line == "diff --git a/Cargo.toml b/Cargo.toml";
            } else if in_manifest && let Some(added) = line.strip_prefix('+') {
                if added.contains("path = \"subsys/kthreads/") {
                    deps.push_str(added);
                    deps.push('\n');
                } else if added.starts_with("ktests = [") {
                    features.push_str(added);
                    features.push('\n');
                }
            }
        }
    }
    assert_eq!(
        deps.lines().count(),
        6,
        "the series adds kport, kthreadd, softirq, workqueue, drivers and ktests: {deps}"
    );
    assert!(!features.is_empty(), "the series adds the ktests feature");
    write(
        &d.join("Cargo.toml"),
        &format!(
            "[workspace]\nresolver = \"3\"\nexclude = [\"subsys\"]\n\n[package]\nname = \"kernel\"\nversion = \"0.0.0\"\n\
             edition = \"2024\"\n\n[dependencies]\n{deps}\n[features]\n{features}"
        ),
    );
    write(&d.join("src/main.rs"), "fn main() {}\n");
    fs::create_dir_all(d.join("subsys")).unwrap();
    std::os::unix::fs::symlink(repo(), d.join("subsys/kthreads")).unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let resolve = |offline: bool| {
        let mut c = Command::new(&cargo);
        c.arg("generate-lockfile").current_dir(&d).env_remove("CARGO_TARGET_DIR");
        if offline {
            c.arg("--offline");
        }
        c.output().expect("cargo generate-lockfile")
    };
    let mut o = resolve(true);
    if !o.status.success() {
        o = resolve(false);
    }
    assert!(o.status.success(), "cargo generate-lockfile: {}", String::from_utf8_lossy(&o.stderr));
    let lock = fs::read_to_string(d.join("Cargo.lock")).unwrap();
    let names: Vec<&str> = lock.lines().filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"')).collect();
    for crate_name in ["kport", "kthreadd", "workqueue", "ktests", "redox_syscall", "spin"] {
        assert!(names.contains(&crate_name), "{crate_name} resolved: {names:?}");
    }
    for model_checking in ["loom", "generator", "scoped-tls", "tracing"] {
        assert!(!names.contains(&model_checking), "{model_checking} entered the kernel's lock file: {names:?}");
    }
}

#[test]
fn a_scratch_directory_around_this_repository_is_refused() {
    let d = scratch("work-around-repo");
    let k = d.join("kernel");
    fake_kernel(&k);
    for work in [repo(), repo().parent().unwrap().to_path_buf()] {
        let o = run(&[&format!("REDOX_KERNEL={}", k.display()), &format!("REDOX_WORK={}", work.display())]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            stderr(&o).trim(),
            format!(
                "redox-test: error: REDOX_WORK={} contains this repository: the cargo configuration written there would \
                 apply to this repository's builds",
                work.display()
            )
        );
    }
    assert!(!repo().join(".cargo").exists() && !repo().join("kernel").exists());
}
