//! The Redox boot shim (`kernel-patch/shim`) under real QEMU. CI cannot fetch
//! the Redox kernel, so the shim boots kernels that accept Redox's protocol:
//!
//! * the testkernel (`-kernel redox-pvh-shim -initrd testkernel`), whose
//!   explicit `redox_boot` suite checks what arrived: the memory areas against
//!   QEMU's `-m` (`expect_mem_mib=`), the RSDP against QEMU's, the env against
//!   a token (`redox_env_check=`). The testkernel is linked with its file laid
//!   out segment by segment, so this covers the shim's segment loader;
//! * a hand-assembled kernel laid out like Redox's (file offset = vaddr -
//!   0xFFFF_FFFF_8000_0000, `.bss` past the file data), covering the raw
//!   loader: its `kstart` checks the ELF header is mapped at the kernel base,
//!   `.data` is loaded, `.bss` is zero, the CPU state, the stack and the env.
//!
//! And the failures: a non-ELF module, or none, stops with a clear line and the
//! fail exit.

use ktest_runner::qemu::{self, Accel, EXIT_FAIL, EXIT_PASS, Event, Exit, QEMU, QEMU_MISSING, QemuConfig};
use ktest_runner::run::{build_kernel, default_kernel_path, repo_root};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[allow(dead_code)]
mod common;
use common::{ONE_AT_A_TIME, Run};
use std::time::Duration;

/// The token the testkernel's `redox_boot` suite expects in the env.
const ENV_TOKEN: &str = "abc123";

fn built(cell: &'static OnceLock<Result<PathBuf, String>>, build: fn() -> Result<PathBuf, String>) -> &'static Path {
    match cell.get_or_init(build) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// `cargo build --release` in `kernel-patch/shim`; the path of the shim ELF.
fn shim() -> &'static Path {
    static SHIM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built(&SHIM, || {
        let repo = repo_root().map_err(|e| e.message)?;
        let dir = repo.join("kernel-patch/shim");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // RUSTFLAGS from the environment would replace the shim's own flags.
        let status = Command::new(cargo)
            .args(["build", "--release"])
            .current_dir(&dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("'cargo build --release' in {} exited with {status}", dir.display()));
        }
        // Cargo resolves a relative CARGO_TARGET_DIR against the directory it runs in.
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) => dir.join(t),
            None => repo.join("target"),
        };
        Ok(target.join("x86_64-unknown-linux-gnu/release/redox-pvh-shim"))
    })
}

/// The testkernel, built as the runner builds it.
fn testkernel() -> &'static Path {
    static KERNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built(&KERNEL, || {
        let repo = repo_root().map_err(|e| e.message)?;
        build_kernel(&repo).map_err(|e| format!("cannot build the testkernel: {}", e.message))?;
        Ok(default_kernel_path(&repo))
    })
}

/// `ktest run --kernel <shim> --initrd <initrd>` with `args`.
fn ktest(name: &str, initrd: &Path, args: &[&str]) -> Run {
    common::ktest(&format!("redox-shim-{name}"), shim(), Some(initrd), args)
}

/// Boot the shim with `initrd` straight in QEMU (no KTAP expected); returns
/// the exit and the serial output.
fn boot_shim(initrd: Option<&Path>, cmdline: &str) -> (Exit, String) {
    boot_shim_with(initrd, cmdline, &[])
}

/// [`boot_shim`] with extra QEMU arguments.
fn boot_shim_with(initrd: Option<&Path>, cmdline: &str, extra: &[String]) -> (Exit, String) {
    let shim = shim();
    let qemu = qemu::find_executable(Path::new(QEMU)).unwrap_or_else(|| panic!("{QEMU_MISSING}"));
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cmd = qemu::qemu_command(&QemuConfig {
        qemu: &qemu,
        kernel: shim,
        cmdline,
        smp: 1,
        topology: None,
        numa_nodes: None,
        mem_mib: 128,
        accel: Accel::Tcg,
        initrd,
        extra,
        serial_monitor: false,
    });
    let mut serial = String::new();
    let mut on_event = |ev: Event<'_>| {
        if let Event::Line(l) = ev {
            serial.push_str(l);
            serial.push('\n');
        }
    };
    let run = qemu::run_emulator(cmd, Duration::from_secs(120), &mut on_event).expect("start QEMU");
    println!("---- serial ({:?}) ----\n{serial}---- stderr ----\n{}", run.exit, run.stderr);
    (run.exit, serial)
}

fn final_counts(stdout: &str) -> (usize, usize) {
    let last = stdout.lines().last().expect("output");
    let (p, f) = last.split_once(" passed, ").unwrap_or_else(|| panic!("bad final line {last:?}"));
    let f = f.strip_suffix(" failed").unwrap_or_else(|| panic!("bad final line {last:?}"));
    (p.parse().unwrap(), f.parse().unwrap())
}

#[test]
fn testkernel_boots_through_the_shim_with_the_handover_intact() {
    let append = format!("expect_mem_mib=256 redox_env_check={ENV_TOKEN}");
    let run = ktest(
        "testkernel",
        testkernel(),
        &["--smp", "2", "--mem", "256", "--tests", "redox_boot", "--timeout", "300", "--append", &append],
    );
    assert!(run.stdout.contains("# redox-pvh-shim: kernel entry"), "the shim did not report loading the kernel");
    assert!(run.stdout.contains("loaded segment by segment"), "the testkernel should need the segment loader");
    assert!(
        run.stdout.contains("# redox entry: kernel_base="),
        "the testkernel did not come in through its Redox entry"
    );
    assert_eq!(run.code, 0, "tests=redox_boot through the shim must pass");
    assert!(run.stdout.contains("smp=2 preempt=full: PASS (exit 33"));
    let (passed, failed) = final_counts(&run.stdout);
    assert_eq!((passed, failed), (4, 0), "every redox_boot case must run and pass");
    let raw = std::fs::read_to_string(run.out_dir.join("ktap-smp2-full.txt")).expect("the raw serial log");
    assert!(raw.contains("ok 1 redox_boot"), "the saved log lacks the suite's result");
}

#[test]
fn non_elf_initrd_is_refused_with_a_clear_error() {
    let junk = Path::new(env!("CARGO_TARGET_TMPDIR")).join("redox-shim-not-an-elf.txt");
    std::fs::write(&junk, "This is a text file, not a kernel.\n".repeat(64)).expect("write the junk initrd");
    let run = ktest("not-elf", &junk, &["--smp", "1", "--tests", "redox_boot", "--timeout", "120"]);
    assert_eq!(run.code, 1, "the run must fail");
    assert!(
        run.stdout.contains("# redox-pvh-shim: error: module 0 (the -initrd file): not an ELF file"),
        "no clear error line"
    );
    assert!(run.stdout.contains(&format!("exit {EXIT_FAIL}")), "the shim must exit with the fail status");
    assert!(!run.stdout.contains("KTAP version"), "nothing may run after the error");
}

#[test]
fn missing_initrd_is_refused_with_a_clear_error() {
    let (exit, serial) = boot_shim(None, "tests=redox_boot");
    assert_eq!(exit, Exit::Code(EXIT_FAIL));
    assert!(serial.contains("# redox-pvh-shim: error: no kernel: pass the Redox kernel ELF as module 0"), "{serial}");
}

const KERNEL_OFFSET: u64 = 0xFFFF_FFFF_8000_0000;

/// 64-bit `kstart` of the raw-layout kernel, at `KERNEL_OFFSET + 0x1000`. It
/// checks, and prints `# raw-kernel: ok` then exits 0x10, or prints
/// `# raw-kernel: FAIL` and exits 0x11:
/// the ELF header at `KERNEL_OFFSET` (loaded raw), `.data`'s non-zero word at
/// `+0x2000`, `.bss` zero at `+0x2010` (the file has 0xAA there) and
/// `+0x2ff8`, `kernel_size >= 0x3000`, EFER.NXE, CR0.WP|NE|MP, CR4.OSFXSR, a
/// working stack, the env (through `PHYS_OFFSET`) starting `rawtest=`, and
/// hwdesc (identity-mapped) starting `RSD PTR `.
fn raw_kstart() -> Vec<u8> {
    let mut c: Vec<u8> = [
        &[0x49, 0x89, 0xff][..],                                       // mov r15, rdi
        &[0x48, 0xb8, 0x00, 0x00, 0x00, 0x80, 0xff, 0xff, 0xff, 0xff], // movabs rax, KERNEL_OFFSET
        &[0x81, 0x38, 0x7f, 0x45, 0x4c, 0x46],                         // cmp dword [rax], "\x7fELF"
        &[0x0f, 0x85, 0x99, 0x00, 0x00, 0x00],                         // jne fail
        &[0x48, 0xb8, 0x00, 0x20, 0x00, 0x80, 0xff, 0xff, 0xff, 0xff], // movabs rax, KERNEL_OFFSET + 0x2000
        &[0x48, 0x83, 0x38, 0x00],                                     // cmp qword [rax], 0
        &[0x0f, 0x84, 0x85, 0x00, 0x00, 0x00],                         // je fail
        &[0x48, 0x83, 0x78, 0x10, 0x00],                               // cmp qword [rax + 0x10], 0
        &[0x75, 0x7e],                                                 // jne fail
        &[0x48, 0x83, 0xb8, 0xf8, 0x0f, 0x00, 0x00, 0x00],             // cmp qword [rax + 0xff8], 0
        &[0x75, 0x74],                                                 // jne fail
        &[0x49, 0x81, 0x7f, 0x08, 0x00, 0x30, 0x00, 0x00],             // cmp qword [r15 + 8], 0x3000 (kernel_size)
        &[0x72, 0x6a],                                                 // jb fail
        &[0xb9, 0x80, 0x00, 0x00, 0xc0],                               // mov ecx, 0xc0000080 (EFER)
        &[0x0f, 0x32],                                                 // rdmsr
        &[0x0f, 0xba, 0xe0, 0x0b],                                     // bt eax, 11 (NXE)
        &[0x73, 0x5d],                                                 // jnc fail
        &[0x0f, 0x20, 0xc0],                                           // mov rax, cr0
        &[0x25, 0x22, 0x00, 0x01, 0x00],                               // and eax, WP|NE|MP
        &[0x3d, 0x22, 0x00, 0x01, 0x00],                               // cmp eax, WP|NE|MP
        &[0x75, 0x4e],                                                 // jne fail
        &[0x0f, 0x20, 0xe0],                                           // mov rax, cr4
        &[0x0f, 0xba, 0xe0, 0x09],                                     // bt eax, 9 (OSFXSR)
        &[0x73, 0x45],                                                 // jnc fail
        &[0x6a, 0x5a],                                                 // push 0x5a
        &[0x58],                                                       // pop rax
        &[0x48, 0x83, 0xf8, 0x5a],                                     // cmp rax, 0x5a
        &[0x75, 0x3c],                                                 // jne fail
        &[0x49, 0x8b, 0x77, 0x20],                                     // mov rsi, [r15 + 32] (env_base)
        &[0x48, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0xff, 0xff], // movabs rax, PHYS_OFFSET
        &[0x48, 0xba, b'r', b'a', b'w', b't', b'e', b's', b't', b'='], // movabs rdx, "rawtest="
        &[0x48, 0x39, 0x14, 0x30],                                     // cmp [rax + rsi], rdx
        &[0x75, 0x1e],                                                 // jne fail
        &[0x49, 0x8b, 0x77, 0x30],                                     // mov rsi, [r15 + 48] (hwdesc_base)
        &[0x48, 0xba, b'R', b'S', b'D', b' ', b'P', b'T', b'R', b' '], // movabs rdx, "RSD PTR "
        &[0x48, 0x39, 0x16],                                           // cmp [rsi], rdx
        &[0x75, 0x0b],                                                 // jne fail
        &[0x48, 0x8d, 0x35, 0x21, 0x00, 0x00, 0x00],                   // lea rsi, [rip + ok_msg]
        &[0xb3, 0x10],                                                 // mov bl, 0x10
        &[0xeb, 0x09],                                                 // jmp out
        &[0x48, 0x8d, 0x35, 0x28, 0x00, 0x00, 0x00],                   // fail: lea rsi, [rip + fail_msg]
        &[0xb3, 0x11],                                                 // mov bl, 0x11
        &[0x66, 0xba, 0xf8, 0x03],                                     // out: mov dx, 0x3f8
        &[0xac],                                                       // 1: lodsb
        &[0x84, 0xc0],                                                 // test al, al
        &[0x74, 0x03],                                                 // jz 2f
        &[0xee],                                                       // out dx, al
        &[0xeb, 0xf8],                                                 // jmp 1b
        &[0x88, 0xd8],                                                 // 2: mov al, bl
        &[0xe6, 0xf4],                                                 // out 0xf4, al
        &[0xfa, 0xf4, 0xeb, 0xfc],                                     // 3: cli; hlt; jmp 3b
    ]
    .concat();
    assert_eq!(c.len(), 0xcf, "the lea displacements assume the messages start at 0xcf");
    c.extend(b"# raw-kernel: ok\n\0");
    c.extend(b"# raw-kernel: FAIL\n\0");
    c
}

/// An ELF laid out like the Redox kernel: the file is the image from
/// `KERNEL_OFFSET` (header included), code at +0x1000, a `.data` word at
/// +0x2000 followed in memory by `.bss` up to +0x3000, while the file goes on
/// with 0xAA bytes where a real kernel keeps its symbol table.
fn raw_layout_elf() -> Vec<u8> {
    const PHNUM: u16 = 2;
    let mut e = Vec::new();
    e.extend([0x7F, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend(2u16.to_le_bytes()); // ET_EXEC
    e.extend(0x3Eu16.to_le_bytes()); // EM_X86_64
    e.extend(1u32.to_le_bytes());
    e.extend((KERNEL_OFFSET + 0x1000).to_le_bytes()); // e_entry: kstart
    e.extend(64u64.to_le_bytes()); // e_phoff
    e.extend(0u64.to_le_bytes()); // e_shoff
    e.extend(0u32.to_le_bytes()); // e_flags
    for half in [64u16, 56, PHNUM, 64, 0, 0] {
        e.extend(half.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    let code = raw_kstart();
    // PT_LOAD R+X: headers and code, at file offset = vaddr - KERNEL_OFFSET.
    let text_size = 0x1000 + code.len() as u64;
    e.extend(1u32.to_le_bytes());
    e.extend(5u32.to_le_bytes());
    for v in [0, KERNEL_OFFSET, 0, text_size, text_size, 0x1000] {
        e.extend(v.to_le_bytes());
    }
    // PT_LOAD R+W: 16 bytes of .data, then .bss to +0x3000.
    e.extend(1u32.to_le_bytes());
    e.extend(6u32.to_le_bytes());
    for v in [0x2000, KERNEL_OFFSET + 0x2000, 0x2000, 0x10, 0x1000, 0x1000] {
        e.extend(v.to_le_bytes());
    }
    e.resize(0x1000, 0);
    e.extend(&code);
    e.resize(0x2000, 0);
    e.extend(u64::MAX.to_le_bytes()); // the non-zero .data word
    e.extend(0x1234_5678u64.to_le_bytes());
    e.resize(0x2100, 0xAA); // not .bss: must not leak into it
    e
}

#[test]
fn redox_layout_kernel_is_loaded_raw_like_redoxs_bootloader_does() {
    let elf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("redox-shim-raw-layout.elf");
    std::fs::write(&elf, raw_layout_elf()).expect("write the raw-layout kernel");
    let (exit, serial) = boot_shim(Some(&elf), "rawtest=1 other=2");
    assert!(serial.contains("loaded raw at kernel_base"), "the shim should load a Redox-layout ELF raw: {serial}");
    assert!(serial.contains("kernel_size 0x3000"), "kernel_size must cover .bss past the file: {serial}");
    assert!(serial.contains("# raw-kernel: ok"), "the kernel's checks failed: {serial}");
    assert_eq!(exit, Exit::Code(EXIT_PASS));
}

/// `-fw_cfg` arguments handing `file` to the shim as the bootstrap program.
fn bootstrap_args(file: &Path) -> Vec<String> {
    vec!["-fw_cfg".into(), format!("name=opt/redox/bootstrap,file={}", file.display())]
}

#[test]
fn a_bootstrap_program_in_fw_cfg_is_handed_over_in_whole_pages() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let elf = dir.join("redox-shim-raw-layout-bootstrap.elf");
    std::fs::write(&elf, raw_layout_elf()).expect("write the raw-layout kernel");
    // Like Redox's bootstrap image: the entry point, little-endian, at offset 0x1a.
    let mut program = vec![0x90u8; 5000];
    program[0x1a..0x22].copy_from_slice(&0x1234_5678u64.to_le_bytes());
    let file = dir.join("redox-shim-bootstrap.bin");
    std::fs::write(&file, &program).expect("write the bootstrap program");
    let (exit, serial) = boot_shim_with(Some(&elf), "rawtest=1", &bootstrap_args(&file));
    assert!(
        serial.contains(
            "# redox-pvh-shim: bootstrap: 5000 bytes from fw_cfg opt/redox/bootstrap, entry point 0x12345678 \
             (at offset 0x1a), 2 page(s)"
        ),
        "{serial}"
    );
    assert!(serial.contains("# raw-kernel: ok"), "the kernel's checks failed: {serial}");
    assert_eq!(exit, Exit::Code(EXIT_PASS));

    let (_, serial) = boot_shim(Some(&elf), "rawtest=1");
    assert!(
        serial.contains("# redox-pvh-shim: bootstrap: none (no fw_cfg file opt/redox/bootstrap): one zeroed page"),
        "{serial}"
    );
}

#[test]
fn a_bootstrap_program_too_big_for_the_shim_is_refused() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let elf = dir.join("redox-shim-raw-layout-big.elf");
    std::fs::write(&elf, raw_layout_elf()).expect("write the raw-layout kernel");
    let file = dir.join("redox-shim-bootstrap-big.bin");
    std::fs::write(&file, vec![0u8; (2 << 20) + 1]).expect("write the bootstrap program");
    let (exit, serial) = boot_shim_with(Some(&elf), "rawtest=1", &bootstrap_args(&file));
    assert_eq!(exit, Exit::Code(EXIT_FAIL));
    assert!(
        serial.contains(
            "# redox-pvh-shim: error: fw_cfg file opt/redox/bootstrap has 2097153 bytes; the bootstrap program may have \
             at most 2097152"
        ),
        "{serial}"
    );
    assert!(!serial.contains("raw-kernel"), "the kernel must not start");
}
