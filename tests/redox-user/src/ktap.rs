//! The program's KTAP: a subtest nested two levels deep (eight spaces), inside the case of the
//! kernel's `redox_user` suite that started user space. That case's result line, which the
//! kernel prints once the program has reported, closes the subtest; the runner counts each line
//! here as a case of the `redox_user` suite (`docs/guest-protocol.md`, `kernel-patch/README.md`).

use alloc::format;
use alloc::string::String;

/// Indentation of the program's lines: the kernel's case is at depth 1, these are inside it.
pub const INDENT: &str = "        ";

/// Writes the subtest, one whole line at a time, through `out`.
pub struct Ktap<F: FnMut(&str)> {
    out: F,
    done: usize,
    failed: usize,
}

impl<F: FnMut(&str)> Ktap<F> {
    /// Start the subtest `name` with a plan of `planned` results.
    pub fn start(mut out: F, name: &str, planned: usize) -> Self {
        out(&format!("{INDENT}KTAP version 1"));
        out(&format!("{INDENT}# Subtest: {name}"));
        out(&format!("{INDENT}1..{planned}"));
        Ktap { out, done: 0, failed: 0 }
    }

    /// A diagnostic line.
    pub fn diag(&mut self, text: &str) {
        (self.out)(&format!("{INDENT}# {}", one_line(text)));
    }

    /// The result of the next check.
    pub fn result(&mut self, name: &str, result: &Result<(), String>) {
        self.done += 1;
        match result {
            Ok(()) => (self.out)(&format!("{INDENT}ok {} {name}", self.done)),
            Err(why) => {
                self.failed += 1;
                (self.out)(&format!("{INDENT}not ok {} {name} # {}", self.done, one_line(why)));
            }
        }
    }

    /// How many results failed so far.
    pub fn failed(&self) -> usize {
        self.failed
    }
}

/// A reason on one line, without the `#` that would start a KTAP directive.
pub fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ").replace('#', "%")
}
