//! `ktests-redox-user`: the Redox suite's user program (see the library's documentation). It
//! is Redox's bootstrap image, built for `x86_64-unknown-redox` only; on any other target this
//! binary just says so.
#![cfg_attr(target_os = "redox", no_std, no_main)]

#[cfg(target_os = "redox")]
extern crate alloc;

#[cfg(target_os = "redox")]
mod rt;

#[cfg(not(target_os = "redox"))]
fn main() {
    eprintln!(
        "ktests-redox-user runs only as Redox's bootstrap program: build it with --target x86_64-unknown-redox \
         (make redox-test does)"
    );
    std::process::exit(2);
}
