//! ACPI: find tables through the RSDP; read the CPU list, the IOAPIC and the
//! ISA interrupt source overrides from the MADT, and the CPUs' proximity
//! domains (NUMA nodes) from the SRAT.

use crate::mem::phys_to_virt;

/// Most CPUs read from the MADT.
pub const MAX_MADT_CPUS: usize = crate::percpu::MAX_CPUS;

/// What the MADT says.
#[derive(Debug, Clone, Copy)]
pub struct Madt {
    /// Physical address of the local APIC.
    pub lapic_addr: u64,
    /// APIC ids of the enabled CPUs, in MADT order.
    pub apic_ids: [u32; MAX_MADT_CPUS],
    /// Number of enabled CPUs.
    pub nr_cpus: usize,
    /// Physical address of the (first) IOAPIC, 0 if none.
    pub ioapic_addr: u64,
    /// Its first GSI.
    pub ioapic_gsi_base: u32,
    /// ISA IRQ -> GSI overrides (index: ISA IRQ).
    pub isa_gsi: [u32; 16],
    /// The MPS INTI flags of each ISA IRQ's override (polarity in bits 1:0,
    /// trigger mode in bits 3:2; 0 = the ISA bus's default, active high and
    /// edge-triggered, also for IRQs without an override).
    pub isa_flags: [u16; 16],
    /// Which ISA IRQs have an override (the others keep GSI = IRQ).
    pub isa_overridden: [bool; 16],
}

/// Why the ACPI tables could not be used.
#[derive(Debug, Clone, Copy)]
pub enum AcpiError {
    /// No RSDP was passed.
    NoRsdp,
    /// The RSDP or a table has a bad signature or checksum.
    BadTable(&'static str),
    /// No MADT in the RSDT/XSDT.
    NoMadt,
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AcpiError::NoRsdp => f.write_str("no RSDP from the loader"),
            AcpiError::BadTable(what) => write!(f, "bad ACPI table ({what})"),
            AcpiError::NoMadt => f.write_str("no MADT in the RSDT/XSDT"),
        }
    }
}

fn bytes(pa: u64, len: usize) -> &'static [u8] {
    // SAFETY: ACPI tables live in RAM or ROM below 4 GiB, covered by the
    // direct map; lengths come from the tables' own headers.
    unsafe { core::slice::from_raw_parts(phys_to_virt(pa) as *const u8, len) }
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u32_at(b, off) as u64 | (u32_at(b, off + 4) as u64) << 32
}

fn table(pa: u64) -> Result<&'static [u8], AcpiError> {
    let hdr = bytes(pa, 36);
    let len = u32_at(hdr, 4) as usize;
    let t = bytes(pa, len);
    if !checksum_ok(t) {
        return Err(AcpiError::BadTable("checksum"));
    }
    Ok(t)
}

/// The table with signature `sig`, found through the RSDP at `rsdp_pa` (the
/// XSDT if there is one, else the RSDT); `None` if the root lists none.
fn find_table(rsdp_pa: u64, sig: &[u8; 4]) -> Result<Option<&'static [u8]>, AcpiError> {
    if rsdp_pa == 0 {
        return Err(AcpiError::NoRsdp);
    }
    let r = bytes(rsdp_pa, 36);
    if &r[..8] != b"RSD PTR " || !checksum_ok(&r[..20]) {
        return Err(AcpiError::BadTable("RSDP"));
    }
    let (root, entry_size) =
        if r[15] >= 2 && u64_at(r, 24) != 0 { (u64_at(r, 24), 8) } else { (u32_at(r, 16) as u64, 4) };
    let root_t = table(root)?;
    let mut off = 36;
    while off + entry_size <= root_t.len() {
        let pa = if entry_size == 8 { u64_at(root_t, off) } else { u32_at(root_t, off) as u64 };
        if bytes(pa, 4) == sig {
            return table(pa).map(Some);
        }
        off += entry_size;
    }
    Ok(None)
}

/// Read the MADT starting from the RSDP at `rsdp_pa`.
pub fn read_madt(rsdp_pa: u64) -> Result<Madt, AcpiError> {
    let m = find_table(rsdp_pa, b"APIC")?.ok_or(AcpiError::NoMadt)?;
    let mut out = Madt {
        lapic_addr: u32_at(m, 36) as u64,
        apic_ids: [0; MAX_MADT_CPUS],
        nr_cpus: 0,
        ioapic_addr: 0,
        ioapic_gsi_base: 0,
        isa_gsi: core::array::from_fn(|i| i as u32),
        isa_flags: [0; 16],
        isa_overridden: [false; 16],
    };
    let mut off = 44;
    while off + 2 <= m.len() {
        let (kind, len) = (m[off], m[off + 1] as usize);
        if len < 2 || off + len > m.len() {
            break;
        }
        let e = &m[off..off + len];
        match kind {
            0 if len >= 8 => {
                let flags = u32_at(e, 4);
                if flags & 1 != 0 && out.nr_cpus < MAX_MADT_CPUS {
                    out.apic_ids[out.nr_cpus] = e[3] as u32;
                    out.nr_cpus += 1;
                }
            }
            1 if len >= 12 && out.ioapic_addr == 0 => {
                out.ioapic_addr = u32_at(e, 4) as u64;
                out.ioapic_gsi_base = u32_at(e, 8);
            }
            // Interrupt source override: bus 0 (ISA), source IRQ, GSI, flags.
            2 if len >= 10 => {
                let (src, gsi, flags) = (e[3] as usize, u32_at(e, 4), u16::from_le_bytes([e[8], e[9]]));
                if src < 16 {
                    out.isa_gsi[src] = gsi;
                    out.isa_flags[src] = flags;
                    out.isa_overridden[src] = true;
                }
            }
            5 if len >= 12 => out.lapic_addr = u64_at(e, 4),
            _ => {}
        }
        off += len;
    }
    Ok(out)
}

/// Most CPU entries read from the SRAT.
pub const MAX_SRAT_CPUS: usize = crate::percpu::MAX_CPUS;

/// The CPU entries of the SRAT (System Resource Affinity Table): which
/// proximity domain each enabled CPU belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Srat {
    /// (APIC id, proximity domain) of each enabled CPU, in table order.
    pub cpus: [(u32, u32); MAX_SRAT_CPUS],
    /// Number of entries in `cpus`.
    pub nr_cpus: usize,
}

/// Read the CPU entries of the SRAT starting from the RSDP at `rsdp_pa`;
/// `None` if the machine has no SRAT (no NUMA information). Processor Local
/// APIC Affinity (type 0) and Processor Local x2APIC Affinity (type 2)
/// entries with the enabled flag count; memory entries are not read.
pub fn read_srat(rsdp_pa: u64) -> Result<Option<Srat>, AcpiError> {
    let Some(t) = find_table(rsdp_pa, b"SRAT")? else { return Ok(None) };
    let mut out = Srat { cpus: [(0, 0); MAX_SRAT_CPUS], nr_cpus: 0 };
    // Header (36 bytes), then 4 reserved bytes (must be 1) and 8 reserved.
    let mut off = 48;
    while off + 2 <= t.len() {
        let (kind, len) = (t[off], t[off + 1] as usize);
        if len < 2 || off + len > t.len() {
            break;
        }
        let e = &t[off..off + len];
        let cpu = match kind {
            // Proximity domain bits 7:0 at 2, 31:8 at 9..12; APIC id at 3.
            0 if len >= 16 && u32_at(e, 4) & 1 != 0 => Some((e[3] as u32, e[2] as u32 | (u32_at(e, 8) & 0xffff_ff00))),
            // Proximity domain at 4, x2APIC id at 8, flags at 12.
            2 if len >= 24 && u32_at(e, 12) & 1 != 0 => Some((u32_at(e, 8), u32_at(e, 4))),
            _ => None,
        };
        if let Some(c) = cpu
            && out.nr_cpus < MAX_SRAT_CPUS
        {
            out.cpus[out.nr_cpus] = c;
            out.nr_cpus += 1;
        }
        off += len;
    }
    Ok(Some(out))
}

/// The MCFG's ECAM window for PCI segment 0: where the extended configuration
/// space of buses `start_bus..=end_bus` is memory-mapped (bus `b`, device
/// `d`, function `f` at `base + ((b - start_bus) << 20 | d << 15 | f << 12)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecam {
    /// Physical base address (of `start_bus`).
    pub base: u64,
    /// First bus the window decodes.
    pub start_bus: u8,
    /// Last bus the window decodes.
    pub end_bus: u8,
}

/// Read the MCFG (PCI Express memory-mapped configuration) starting from the
/// RSDP at `rsdp_pa`: segment 0's first window, or `None` without an MCFG
/// (QEMU's `pc` machine has none; `q35` has one).
pub fn read_mcfg(rsdp_pa: u64) -> Result<Option<Ecam>, AcpiError> {
    let Some(t) = find_table(rsdp_pa, b"MCFG")? else { return Ok(None) };
    // Header (36 bytes), 8 reserved, then 16-byte entries: base (8), segment
    // group (2), start bus, end bus, 4 reserved.
    let mut off = 44;
    while off + 16 <= t.len() {
        let segment = u16::from_le_bytes([t[off + 8], t[off + 9]]);
        if segment == 0 {
            let (start_bus, end_bus) = (t[off + 10], t[off + 11]);
            if end_bus >= start_bus {
                return Ok(Some(Ecam { base: u64_at(t, off), start_bus, end_bus }));
            }
        }
        off += 16;
    }
    Ok(None)
}
