//! The `ktest` binary against real QEMU, with a tiny hand-assembled PVH guest
//! (independent of the testkernel): it prints a fixed text on COM1 and then
//! exits through isa-debug-exit, triple-faults, or halts forever.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LOAD: u32 = 0x10_0000;
const NOTE_OFF: usize = 64 + 2 * 56;
const CODE_OFF: usize = NOTE_OFF + 24;

enum End {
    /// Write this value to port 0xf4 (QEMU exits with `value << 1 | 1`).
    Exit(u8),
    /// Load an empty IDT and raise int3: a triple fault.
    TripleFault,
    /// `cli; hlt` forever.
    Hang,
}

/// 32-bit code: print the NUL-terminated message on COM1, then `end`.
fn code(msg: &str, end: End) -> Vec<u8> {
    let base = LOAD + CODE_OFF as u32;
    let mut c = vec![0x66, 0xBA, 0xF8, 0x03]; // mov dx, 0x3f8
    let msg_at_patch = c.len() + 1;
    c.extend([0xBE, 0, 0, 0, 0]); // mov esi, msg
    c.extend([0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8]); // lodsb; test; jz +3; out; jmp back
    let idt_patch = match end {
        End::Exit(v) => {
            c.extend([0xB0, v, 0xE6, 0xF4]); // mov al, v; out 0xf4, al
            None
        }
        End::TripleFault => {
            c.extend([0x0F, 0x01, 0x1D, 0, 0, 0, 0, 0xCC]); // lidt [idt]; int3
            Some(c.len() - 5)
        }
        End::Hang => None,
    };
    c.extend([0xFA, 0xF4, 0xEB, 0xFD]); // cli; hlt; jmp hlt
    if let Some(at) = idt_patch {
        let idt = base + c.len() as u32;
        c[at..at + 4].copy_from_slice(&idt.to_le_bytes());
        c.extend([0; 8]); // limit 0, base 0
    }
    let msg_addr = base + c.len() as u32;
    c[msg_at_patch..msg_at_patch + 4].copy_from_slice(&msg_addr.to_le_bytes());
    c.extend(msg.as_bytes());
    c.push(0);
    c
}

/// An ELF64 image loaded at 1 MiB with a Xen PVH entry note pointing at `code`.
fn pvh_elf(code: &[u8]) -> Vec<u8> {
    let size = (CODE_OFF + code.len()) as u64;
    let mut e = Vec::new();
    e.extend([0x7F, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend(2u16.to_le_bytes()); // ET_EXEC
    e.extend(0x3Eu16.to_le_bytes()); // EM_X86_64
    e.extend(1u32.to_le_bytes());
    e.extend(u64::from(LOAD + CODE_OFF as u32).to_le_bytes()); // e_entry
    e.extend(64u64.to_le_bytes()); // e_phoff
    e.extend(0u64.to_le_bytes()); // e_shoff
    e.extend(0u32.to_le_bytes()); // e_flags
    for half in [64u16, 56, 2, 64, 0, 0] {
        e.extend(half.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    // PT_LOAD: the whole file at 1 MiB, RWX.
    e.extend(1u32.to_le_bytes());
    e.extend(7u32.to_le_bytes());
    for v in [0, u64::from(LOAD), u64::from(LOAD), size, size, 0x1000] {
        e.extend(v.to_le_bytes());
    }
    // PT_NOTE
    e.extend(4u32.to_le_bytes());
    e.extend(4u32.to_le_bytes());
    for v in [NOTE_OFF as u64, 0, 0, 24, 24, 4] {
        e.extend(v.to_le_bytes());
    }
    assert_eq!(e.len(), NOTE_OFF);
    // Note "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY), 8-byte entry address.
    e.extend(4u32.to_le_bytes());
    e.extend(8u32.to_le_bytes());
    e.extend(18u32.to_le_bytes());
    e.extend(b"Xen\0");
    e.extend(u64::from(LOAD + CODE_OFF as u32).to_le_bytes());
    assert_eq!(e.len(), CODE_OFF);
    e.extend(code);
    e
}

fn guest(name: &str, msg: &str, end: End) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("qemu-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("guest.elf");
    std::fs::write(&kernel, pvh_elf(&code(msg, end))).unwrap();
    (kernel, dir.join("out"))
}

fn ktest(kernel: &Path, out: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ktest"))
        .args(["run", "--kernel"])
        .arg(kernel)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .expect("run ktest");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), stdout)
}

const PASS: &str = "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: tiny\n    1..2\n    ok 1 a\n    ok 2 b # SKIP no\nok 1 tiny\n";

#[test]
fn passing_guest_on_each_config() {
    let (kernel, out) = guest("pass", PASS, End::Exit(0x10));
    let (code, stdout) = ktest(&kernel, &out, &["--smp", "1,2", "--preempt", "full,none"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("smp=2 preempt=none: PASS (exit 33"), "{stdout}");
    assert!(stdout.ends_with("\n4 skipped\n4 passed, 0 failed\n"), "{stdout}");
    let log = std::fs::read_to_string(out.join("ktap-smp2-none.txt")).unwrap();
    assert_eq!(log, PASS);
}

#[test]
fn failing_guest() {
    let msg = "KTAP version 1\n1..1\nnot ok 1 a # nope\n";
    let (kernel, out) = guest("fail", msg, End::Exit(0x11));
    let (code, stdout) = ktest(&kernel, &out, &["--smp", "1", "--quiet"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("ktest: warning: backtraces stay unsymbolized"), "{stdout}");
    assert!(stdout.contains("\nnot ok 1 a # nope\n"), "{stdout}");
    assert!(stdout.contains("FAIL: guest reported failure (QEMU exit 35)"), "{stdout}");
    assert!(stdout.ends_with("\n0 passed, 1 failed\n"), "{stdout}");
}

#[test]
fn triple_fault_exits_zero() {
    let (kernel, out) = guest("triple", PASS, End::TripleFault);
    let (code, stdout) = ktest(&kernel, &out, &["--smp", "1"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("FAIL: triple fault or reset (QEMU exit 0)"), "{stdout}");
    assert!(stdout.ends_with("\n1 skipped\n1 passed, 1 failed\n"), "{stdout}");
}

#[test]
fn halted_guest_is_killed_at_the_timeout() {
    let (kernel, out) = guest("hang", "KTAP version 1\n1..1\n", End::Hang);
    let start = Instant::now();
    let (code, stdout) = ktest(&kernel, &out, &["--smp", "2", "--timeout", "3"]);
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
    assert_eq!(code, 1);
    assert!(stdout.contains("TIMEOUT: whole run exceeded 3 s"), "{stdout}");
    assert!(stdout.contains("missing result: top level planned 1 results, got 0"), "{stdout}");
}
