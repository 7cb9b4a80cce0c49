//! The cookbook recipe: its fields, and the crate building from its own
//! directory alone, as the cookbook builds it.

use std::path::Path;
use std::process::Command;

mod common;

/// `key = "value"` lines of the recipe, by `[section]`, comments dropped.
fn recipe() -> Vec<(String, String, String)> {
    let text = include_str!("../recipe.toml");
    let mut section = String::new();
    let mut out = Vec::new();
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(s) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.into();
        } else {
            let (k, v) = l.split_once('=').expect("key = value");
            let v = v.trim().strip_prefix('"').and_then(|v| v.strip_suffix('"')).expect("a string value");
            out.push((section.clone(), k.trim().into(), v.into()));
        }
    }
    out
}

#[test]
fn the_recipe_is_a_path_source_built_with_the_cargo_template() {
    let got = recipe();
    let keys: Vec<(&str, &str)> = got.iter().map(|(s, k, _)| (s.as_str(), k.as_str())).collect();
    // Only fields that both the cookbook of 2025 (package_path, a string
    // cargoflags) and the one merged into redox (cargopath, a list) read
    // the same way.
    assert_eq!(keys, [("source", "path"), ("build", "template")]);
    assert!(got[0].2.ends_with("/cookbook-recipe/kthread-ps"), "the path points at this directory: {}", got[0].2);
    assert_eq!(got[1].2, "cargo");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// What the cookbook does with a `path` source and the cargo template,
/// for the host target: copy the directory alone, `cargo fetch` (which
/// writes the lock file), then `cargo install --path . --locked`.
#[test]
fn the_directory_alone_builds_as_the_cookbook_builds_it() {
    let scratch = std::env::temp_dir().join(format!("kthread-ps-cook-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let source = scratch.join("source");
    copy_dir(Path::new(env!("CARGO_MANIFEST_DIR")), &source);
    let _ = std::fs::remove_file(source.join("Cargo.lock"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = |args: &[&str]| {
        let out = Command::new(&cargo)
            .args(args)
            .current_dir(&scratch)
            .env("CARGO_TARGET_DIR", scratch.join("target"))
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    };
    let manifest = source.join("Cargo.toml");
    run(&["fetch", "--offline", "--manifest-path", manifest.to_str().unwrap()]);
    let stage = scratch.join("stage/usr");
    run(&[
        "install",
        "--offline",
        "--locked",
        "--no-track",
        "--path",
        source.to_str().unwrap(),
        "--root",
        stage.to_str().unwrap(),
    ]);
    let out = Command::new(stage.join("bin/kthread-ps"))
        .args(["--file", &common::sample("sample-sys-kthread.txt"), "--state", "R"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().nth(1),
        Some(" 1299     5 R   1 1         99.9 0:01.504843 -                [ps-spin]")
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}
