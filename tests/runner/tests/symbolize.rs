//! Symbolizer tests against a real ELF: this test binary itself.

use goblin::elf::{Elf, sym};
use ktest_runner::symbolize::Symbolizer;

#[inline(never)]
fn marker_alpha(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(31).rotate_left(7)
}

#[inline(never)]
fn marker_beta(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_add(12345).rotate_right(3)
}

fn own_elf() -> Vec<u8> {
    std::fs::read(std::env::current_exe().expect("current_exe")).expect("read own ELF")
}

/// (address, size) of the function symbols in the ELF whose demangled name ends with `suffix`.
fn raw_functions(bytes: &[u8], suffix: &str) -> Vec<(u64, u64)> {
    let elf = Elf::parse(bytes).expect("ELF");
    elf.syms
        .iter()
        .filter(|s| s.st_type() == sym::STT_FUNC && s.st_value != 0)
        .filter(|s| {
            let name = elf.strtab.get_at(s.st_name).unwrap_or("");
            format!("{:#}", rustc_demangle::demangle(name)).ends_with(suffix)
        })
        .map(|s| (s.st_value, s.st_size))
        .collect()
}

/// Run-time function addresses, minus the PIE load bias learned from one known
/// function, map back to the right function and offset.
#[test]
fn runtime_function_addresses_map_back_to_their_names() {
    let bytes = own_elf();
    let sym = Symbolizer::from_bytes(&bytes).expect("symbols");
    assert!(sym.len() > 100, "only {} symbols", sym.len());
    assert_ne!(marker_alpha(1), marker_beta(1));

    let alpha_rt = marker_alpha as fn(u64) -> u64 as usize as u64;
    let beta_rt = marker_beta as fn(u64) -> u64 as usize as u64;
    let alpha = raw_functions(&bytes, "::marker_alpha");
    assert_eq!(alpha.len(), 1, "{alpha:?}");
    let bias = alpha_rt.wrapping_sub(alpha[0].0);

    let beta = beta_rt.wrapping_sub(bias);
    let (name, off) = sym.lookup(beta).expect("beta symbolized");
    assert!(name.ends_with("::marker_beta"), "got {name}");
    assert_eq!(off, 0);
    let (name, off) = sym.lookup(beta + 3).expect("beta+3");
    assert!(name.ends_with("::marker_beta"), "got {name}");
    assert_eq!(off, 3);
    let desc = sym.describe(alpha_rt.wrapping_sub(bias) + 2).expect("alpha");
    assert!(desc.ends_with("::marker_alpha+0x2"), "got {desc}");
    // Hashes are stripped by the alternate demangling.
    assert!(!desc.contains("::h"), "got {desc}");
}

/// Addresses inside sized functions map back to the function start.
#[test]
fn interior_addresses_of_functions() {
    let bytes = own_elf();
    let sym = Symbolizer::from_bytes(&bytes).expect("symbols");
    let funcs: Vec<(u64, u64)> = raw_functions(&bytes, "").into_iter().filter(|f| f.1 >= 8).collect();
    assert!(funcs.len() > 50, "only {} functions", funcs.len());
    for &(addr, size) in funcs.iter().step_by(funcs.len() / 50) {
        let inside = addr + size / 2;
        let (_, off) = sym.lookup(inside).expect("symbolized");
        assert_eq!(inside - off, addr, "{inside:#x} resolved to the wrong start");
    }
    // Below the lowest symbol there is nothing to report.
    assert_eq!(sym.lookup(0), None);
}

#[test]
fn not_an_elf() {
    let err = Symbolizer::from_bytes(b"definitely not an ELF file").unwrap_err();
    assert!(err.contains("not a valid ELF"), "{err}");
    let err = Symbolizer::from_file(std::path::Path::new("/nonexistent/kernel")).unwrap_err();
    assert!(err.contains("cannot read"), "{err}");
}
