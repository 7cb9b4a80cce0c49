//! For build scripts (feature `link`): link a freestanding binary as a static
//! ELF laid out by its own linker script.

use std::println;

/// The link arguments of a freestanding binary: no C runtime start files, no
/// libc, static, not position independent, 4 KiB segment alignment, no build
/// id note (the linker scripts place every section themselves).
pub const LINK_ARGS: [&str; 6] =
    ["-nostartfiles", "-nostdlib", "-static", "-no-pie", "-Wl,-z,max-page-size=0x1000", "-Wl,--build-id=none"];

/// Print the cargo directives that link the package's binaries with
/// [`LINK_ARGS`] and `script` (a path relative to the package), and rebuild
/// when the script or the build script changes. Call it from `build.rs`.
///
/// # Panics
/// When cargo did not set `CARGO_MANIFEST_DIR` (not run by cargo).
pub fn freestanding_bins(script: &str) {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for arg in LINK_ARGS {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-T{dir}/{script}");
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rerun-if-changed=build.rs");
}
