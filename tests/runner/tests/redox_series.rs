//! The Redox patch series (`kernel-patch/series`, `kernel-patch/*.patch`) against the glue it
//! hooks in (`kernel-patch/glue/`), checked without any Redox source: CI has none.
//!
//! The series only adds hook lines to Redox's own files; the glue is ordinary files in this
//! repository that Redox's `src/main.rs` includes with `#[path]` from the copy the kernel recipe
//! places at `subsys/kthreads/`. These tests check that the two agree: the series lists exactly
//! the patches present, the patches are well formed and create no file, the `#[path]` include
//! and the path dependencies point at what exists here, and every glue item a hook line names
//! is public in the glue.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Where the recipe copies this repository inside the Redox kernel tree.
const COPY_PREFIX: &str = "subsys/kthreads/";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn kernel_patch() -> PathBuf {
    repo().join("kernel-patch")
}

fn glue() -> PathBuf {
    kernel_patch().join("glue")
}

/// The patch names listed in `series`, in order.
fn series() -> Vec<String> {
    let text = fs::read_to_string(kernel_patch().join("series")).expect("kernel-patch/series");
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// One file's part of a patch: its path and the lines the hunks add.
struct FileDiff {
    path: String,
    added: Vec<String>,
}

/// A parsed patch: the files it changes. Panics, naming the patch and line, on anything that is
/// not a well-formed diff of an existing file.
fn parse_patch(name: &str, text: &str) -> Vec<FileDiff> {
    let lines: Vec<&str> = text.lines().collect();
    let mut files: Vec<FileDiff> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let at = |what: &str| format!("{name}:{}: {what}", i + 1);
        let here = i;
        if let Some(rest) = line.strip_prefix("diff --git a/") {
            let path = rest.split(" b/").next().expect("diff header").to_string();
            files.push(FileDiff { path, added: Vec::new() });
        } else if line.starts_with("new file mode") || line == "--- /dev/null" {
            panic!("{}", at("the patch creates a file: the glue belongs in kernel-patch/glue/"));
        } else if line.starts_with("deleted file mode") || line == "+++ /dev/null" {
            panic!("{}", at("the patch deletes a file"));
        } else if line.starts_with("rename from") || line.starts_with("copy from") {
            panic!("{}", at("the patch renames or copies a file"));
        } else if let Some(header) = line.strip_prefix("@@ ") {
            let file = files.last_mut().unwrap_or_else(|| panic!("{}", at("hunk before any diff header")));
            let (mut old, mut new) = hunk_counts(header).unwrap_or_else(|| panic!("{}", at("bad hunk header")));
            i += 1;
            while old > 0 || new > 0 {
                let body = *lines.get(i).unwrap_or_else(|| panic!("{name}:{here}: the patch ends inside a hunk"));
                let short = || panic!("{}", format!("{name}:{}: hunk shorter than its header says", i + 1));
                match body.as_bytes().first() {
                    Some(b' ') | None => {
                        if old == 0 || new == 0 {
                            short();
                        }
                        old -= 1;
                        new -= 1;
                    }
                    Some(b'-') => {
                        if old == 0 {
                            short();
                        }
                        old -= 1;
                    }
                    Some(b'+') => {
                        if new == 0 {
                            short();
                        }
                        new -= 1;
                        file.added.push(body[1..].to_string());
                    }
                    Some(b'\\') => {}
                    _ => short(),
                }
                i += 1;
            }
            // What follows a complete hunk: another hunk, the next file, or the end of the patch.
            if let Some(next) = lines.get(i) {
                let next = next.strip_prefix("\\ No newline").map_or(*next, |_| "@@");
                assert!(
                    next.starts_with("@@ ") || next.starts_with("diff --git ") || next == "-- " || next.is_empty(),
                    "{name}:{}: hunk longer than its header says: {next:?}",
                    i + 1
                );
            }
            continue;
        }
        i += 1;
    }
    files
}

/// The old and new line counts of a hunk header's `-a,b +c,d @@` (a missing count is 1).
fn hunk_counts(header: &str) -> Option<(usize, usize)> {
    let mut parts = header.split(' ');
    let count = |range: &str| -> Option<usize> {
        match range.split_once(',') {
            Some((start, n)) => {
                start.parse::<usize>().ok()?;
                n.parse().ok()
            }
            None => range.parse::<usize>().ok().map(|_| 1),
        }
    };
    let old = count(parts.next()?.strip_prefix('-')?)?;
    let new = count(parts.next()?.strip_prefix('+')?)?;
    (parts.next()? == "@@").then_some((old, new))
}

/// Every patch of the series, parsed, with its name.
fn patches() -> Vec<(String, String, Vec<FileDiff>)> {
    series()
        .into_iter()
        .map(|name| {
            let text = fs::read_to_string(kernel_patch().join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let files = parse_patch(&name, &text);
            (name, text, files)
        })
        .collect()
}

/// The lines the whole series adds to `path` (a Redox file).
fn added_to(path: &str) -> Vec<String> {
    patches().into_iter().flat_map(|(_, _, files)| files).filter(|f| f.path == path).flat_map(|f| f.added).collect()
}

/// `path` with `.` and `..` resolved lexically (no file system access).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                assert!(out.pop(), "{} leaves the kernel tree", path.display());
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A path inside the Redox kernel tree that lies in the recipe's copy of this repository, as a
/// path in this repository.
fn in_copy(kernel_path: &Path) -> PathBuf {
    let norm = normalize(kernel_path);
    let rest = norm
        .to_str()
        .and_then(|p| p.strip_prefix(COPY_PREFIX))
        .unwrap_or_else(|| panic!("{} is not inside the recipe's copy of the project ({COPY_PREFIX})", norm.display()));
    repo().join(rest)
}

/// The glue file that `mod name;` in `dir`'s module declares.
fn module_file(dir: &Path, name: &str) -> PathBuf {
    let flat = dir.join(format!("{name}.rs"));
    if flat.exists() { flat } else { dir.join(name).join("mod.rs") }
}

/// The modules `file` declares as `[pub] mod NAME;` (with their visibility).
fn declared_modules(file: &Path) -> Vec<(String, bool)> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (public, rest) = match l.strip_prefix("pub mod ") {
                Some(r) => (true, r),
                None => (false, l.strip_prefix("mod ")?),
            };
            let name = rest.strip_suffix(';')?;
            is_ident(name).then(|| (name.to_string(), public))
        })
        .collect()
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Does `file` define `name` as a public item (or re-export it)?
fn defines_pub(file: &Path, name: &str) -> bool {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let kinds = ["fn", "const fn", "unsafe fn", "struct", "enum", "static", "const", "type", "trait", "mod"];
    if pub_uses(&text).iter().any(|n| n == name) {
        return true;
    }
    text.lines().map(str::trim).any(|l| {
        let Some(rest) = l.strip_prefix("pub ") else {
            return false;
        };
        kinds.iter().any(|k| {
            rest.strip_prefix(k).and_then(|r| r.strip_prefix(' ')).is_some_and(|r| {
                r.starts_with(name) && !r[name.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
        })
    })
}

/// The names a file re-exports with `pub use` (`pub use a::b;` and `pub use a::{b, c};`, on one
/// line or several).
fn pub_uses(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(l) = lines.next() {
        let Some(rest) = l.strip_prefix("pub use ") else {
            continue;
        };
        let mut stmt = rest.to_string();
        while !stmt.contains(';') {
            match lines.next() {
                Some(more) => stmt.push_str(more),
                None => break,
            }
        }
        let stmt = stmt.trim_end_matches(';');
        match (stmt.find('{'), stmt.rfind('}')) {
            (Some(open), Some(close)) => names
                .extend(stmt[open + 1..close].split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from)),
            _ => names.extend(stmt.rsplit("::").next().map(String::from)),
        }
    }
    names
}

/// The paths after `kthread::` (including `crate::kthread::`) in a Rust line, as segment lists.
fn kthread_paths(line: &str) -> Vec<Vec<String>> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("kthread::") {
        let start = from + pos;
        from = start + "kthread::".len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        // Segments while each is followed by `::`; the first one that is not ends the path.
        let mut kept = Vec::new();
        let mut rest = &code[from..];
        loop {
            let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            if len == 0 {
                break;
            }
            kept.push(rest[..len].to_string());
            match rest[len..].strip_prefix("::") {
                Some(r) => rest = r,
                None => break,
            }
        }
        if !kept.is_empty() {
            found.push(kept);
        }
    }
    found
}

#[test]
fn series_lists_exactly_the_patches_present() {
    let listed = series();
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "series names a patch twice: {listed:?}");
    let present: BTreeSet<String> = fs::read_dir(kernel_patch())
        .expect("kernel-patch/")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".patch"))
        .collect();
    let listed: BTreeSet<String> = listed.into_iter().collect();
    assert_eq!(listed, present, "kernel-patch/series and the .patch files in kernel-patch/ differ");
    assert!(!present.is_empty(), "no patches");
}

#[test]
fn patches_are_hook_lines_only_and_well_formed() {
    for (name, text, files) in patches() {
        assert!(!files.is_empty(), "{name}: changes no file");
        for f in &files {
            assert!(!f.path.starts_with(COPY_PREFIX), "{name}: touches {} inside the project's copy", f.path);
        }
        // The regeneration script's fixed header: byte-stable whoever made the commits.
        assert!(
            text.starts_with("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"),
            "{name}: not made with --zero-commit (kernel-patch/mkseries.sh)"
        );
        assert!(text.contains("\nFrom: kthreadd project <kthreadd@localhost>\n"), "{name}: author not fixed");
        assert!(!text.contains("\n-- \n"), "{name}: has a signature (mkseries.sh uses --no-signature)");
    }
}

#[test]
fn hunk_counts_are_checked() {
    let good = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,2 +1,3 @@\n a\n+b\n c\n";
    assert_eq!(parse_patch("good", good)[0].added, ["b"]);
    let long = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,2 +1,3 @@\n a\n+b\n c\n+d\n";
    assert!(std::panic::catch_unwind(|| parse_patch("long", long)).is_err());
    let short = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,2 +1,4 @@\n a\n+b\n c\n@@ -9 +10 @@\n z\n";
    assert!(std::panic::catch_unwind(|| parse_patch("short", short)).is_err());
    let new_file = "diff --git a/y b/y\nnew file mode 100644\n--- /dev/null\n+++ b/y\n@@ -0,0 +1 @@\n+y\n";
    assert!(std::panic::catch_unwind(|| parse_patch("new", new_file)).is_err());
    assert_eq!(hunk_counts("-5 +5,0 @@ fn x()"), Some((1, 0)));
}

#[test]
fn main_rs_includes_the_glue_from_the_copy() {
    let includes: Vec<String> = added_to("src/main.rs")
        .iter()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("#[path = \"")?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect();
    assert_eq!(includes.len(), 1, "expected one #[path] include added to src/main.rs: {includes:?}");
    let file = in_copy(&Path::new("src").join(&includes[0]));
    assert!(file.is_file(), "the #[path] include names {}, which does not exist", file.display());
    assert_eq!(
        file.canonicalize().expect("glue entry"),
        glue().join("mod.rs").canonicalize().expect("kernel-patch/glue/mod.rs"),
        "the include should be kernel-patch/glue/mod.rs (nested `mod x;` then resolve in glue/)"
    );
}

#[test]
fn path_dependencies_point_into_the_project() {
    let deps: Vec<String> = added_to("Cargo.toml")
        .iter()
        .filter_map(|l| {
            let rest = l.split("path = \"").nth(1)?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect();
    assert!(!deps.is_empty(), "the series adds no path dependency to Cargo.toml");
    for d in deps {
        let manifest = in_copy(Path::new(&d)).join("Cargo.toml");
        assert!(manifest.is_file(), "path dependency {d}: no {}", manifest.display());
    }
}

#[test]
fn every_glue_module_has_its_file_and_every_file_is_a_module() {
    let mut seen = BTreeSet::new();
    let mut todo = vec![glue().join("mod.rs")];
    while let Some(file) = todo.pop() {
        seen.insert(file.clone());
        for (m, _) in declared_modules(&file) {
            let child = module_file(&glue(), &m);
            assert!(child.is_file(), "{} declares `mod {m};` but {} does not exist", file.display(), child.display());
            todo.push(child);
        }
    }
    for e in fs::read_dir(glue()).expect("kernel-patch/glue/") {
        let p = e.expect("dir entry").path();
        if p.extension().is_some_and(|x| x == "rs") {
            assert!(seen.contains(&p), "{} is not reachable from glue/mod.rs", p.display());
        }
    }
}

#[test]
fn every_glue_name_the_hooks_use_is_public_in_the_glue() {
    let mut checked = 0;
    for (name, _, files) in patches() {
        for f in files.iter().filter(|f| f.path.ends_with(".rs")) {
            for line in &f.added {
                for path in kthread_paths(line) {
                    let mut file = glue().join("mod.rs");
                    let mut segments = path.iter().peekable();
                    while let Some(seg) = segments.next() {
                        let modules = declared_modules(&file);
                        if segments.peek().is_some()
                            && let Some((_, public)) = modules.iter().find(|(m, _)| m == seg)
                        {
                            assert!(
                                public,
                                "{name}: {}: `kthread::{}`: module {seg} is private",
                                f.path,
                                path.join("::")
                            );
                            file = module_file(&glue(), seg);
                            continue;
                        }
                        assert!(
                            defines_pub(&file, seg),
                            "{name}: {}: `kthread::{}`: {seg} is not a public item of {}",
                            f.path,
                            path.join("::"),
                            file.display()
                        );
                        // `Type::function`: the associated function is public in the same file.
                        if let Some(assoc) = segments.next() {
                            assert!(
                                defines_pub(&file, assoc),
                                "{name}: {}: `kthread::{}`: no public {assoc} in {}",
                                f.path,
                                path.join("::"),
                                file.display()
                            );
                        }
                        break;
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0, "the hooks name no glue item");
}

#[test]
fn kthread_paths_are_found() {
    assert_eq!(kthread_paths("    crate::kthread::tick(token);"), [vec!["tick".to_string()]]);
    assert_eq!(
        kthread_paths("kthread: crate::kthread::KthreadPercpu::new(), // kthread::no"),
        [vec!["KthreadPercpu".to_string(), "new".to_string()]]
    );
    assert!(kthread_paths("let kthread_hooked = 1; mykthread::x").is_empty());
}
