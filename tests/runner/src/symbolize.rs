//! Address-to-symbol lookup from an ELF file's symbol tables.

use goblin::elf::{Elf, sym};
use std::path::Path;

#[derive(Debug, Clone)]
struct Symbol {
    addr: u64,
    size: u64,
    func: bool,
    name: String,
}

/// A sorted symbol table that maps addresses to `function+0xoffset`.
#[derive(Debug, Clone, Default)]
pub struct Symbolizer {
    /// All usable symbols, sorted by address (functions first among equal addresses).
    symbols: Vec<Symbol>,
    /// Indices into `symbols` of functions with a non-zero size, sorted by address.
    funcs: Vec<usize>,
}

impl Symbolizer {
    /// Read the symbol tables of the ELF file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse the symbol tables (`.symtab` and `.dynsym`) of an in-memory ELF image.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let elf = Elf::parse(bytes).map_err(|e| format!("not a valid ELF file: {e}"))?;
        let mut symbols = Vec::new();
        let tables = [(&elf.syms, &elf.strtab), (&elf.dynsyms, &elf.dynstrtab)];
        for (syms, strtab) in tables {
            for s in syms.iter() {
                let kind = s.st_type();
                let usable_kind = matches!(kind, sym::STT_FUNC | sym::STT_OBJECT | sym::STT_NOTYPE);
                if !usable_kind || s.st_value == 0 || s.st_shndx == 0 {
                    continue;
                }
                let Some(raw) = strtab.get_at(s.st_name) else {
                    continue;
                };
                if raw.is_empty() || raw.starts_with('$') || raw.starts_with(".L") {
                    continue;
                }
                symbols.push(Symbol {
                    addr: s.st_value,
                    size: s.st_size,
                    func: kind == sym::STT_FUNC,
                    name: format!("{:#}", rustc_demangle::demangle(raw)),
                });
            }
        }
        if symbols.is_empty() {
            return Err("no symbols (stripped binary?)".into());
        }
        symbols.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.func.cmp(&a.func)));
        symbols.dedup_by(|b, a| a.addr == b.addr && a.name == b.name);
        let funcs = (0..symbols.len()).filter(|&i| symbols[i].func && symbols[i].size > 0).collect();
        Ok(Symbolizer { symbols, funcs })
    }

    /// Number of symbols loaded.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether no symbols were loaded.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbol containing `addr` and the offset into it.
    ///
    /// A function whose `[addr, addr + size)` covers the address wins; otherwise the
    /// symbol with the greatest address not above `addr`.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let end = self.funcs.partition_point(|&i| self.symbols[i].addr <= addr);
        // Functions rarely overlap; look back a little for aliases and nesting.
        for &i in self.funcs[..end].iter().rev().take(16) {
            let s = &self.symbols[i];
            if addr - s.addr < s.size {
                return Some((&s.name, addr - s.addr));
            }
        }
        let end = self.symbols.partition_point(|s| s.addr <= addr);
        let first = self.symbols[..end].last()?;
        // Among symbols at the same address the sort put functions first.
        let same = self.symbols[..end].partition_point(|s| s.addr < first.addr);
        let s = &self.symbols[same];
        Some((&s.name, addr - s.addr))
    }

    /// `function+0xoff` for an address, if any symbol precedes it.
    pub fn describe(&self, addr: u64) -> Option<String> {
        self.lookup(addr).map(|(name, off)| format!("{name}+{off:#x}"))
    }
}
