//! `kthread-ps`: a ps-like listing of Redox's kernel threads (`sys:kthread`)
//! and of workqueue statistics. Everything but the process I/O is in the
//! library, where the tests reach it.

#![forbid(unsafe_code)]

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let out = kthread_ps::cli::run(&args);
    // A closed pipe (`kthread-ps | head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    std::process::exit(out.code);
}
