//! Helpers shared by the test files.

#![allow(dead_code)]

use std::path::PathBuf;

use kthread_ps::cli::{Outcome, run};

/// A file of `tests/`.
pub fn sample(name: &str) -> String {
    format!("{}/tests/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Run the tool in-process with these arguments.
pub fn cli(args: &[&str]) -> Outcome {
    run(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
}

/// Write `text` to a fresh temporary file named after `tag`.
pub fn temp_file(tag: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kthread-ps-{}-{tag}.txt", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

/// The lines of `v`, each ended by a newline (a golden output).
pub fn lines(v: &[&str]) -> String {
    v.iter().map(|l| format!("{l}\n")).collect()
}
