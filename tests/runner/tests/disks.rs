//! The `block` suite's disks: the pattern, the images, the QEMU arguments
//! (and that QEMU 7.2 takes them and behaves as they say), the `block-image`
//! lines and their verdict, and the `ktest` binary attaching and checking the
//! disks with a script standing in for QEMU.
//!
//! The real-QEMU test drives QEMU's monitor (`qemu-io` over QMP, with `-S` so
//! no guest runs): it is skipped, with a printed reason, where
//! `qemu-system-x86_64` is not installed.

use ktest_runner::disks::{
    self, BootDisks, DISKS, FNV_OFFSET_BASIS, ImageRange, SECTOR_SIZE, block_selected, check_images, fnv1a64,
    hash_range, parse_image_line, pattern_byte,
};
use ktest_runner::qemu::{QEMU, find_executable};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod common;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("disks-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The pattern of `count` sectors from `sector`.
fn pattern(sector: u64, count: u64) -> Vec<u8> {
    (sector..sector + count).flat_map(|s| (0..SECTOR_SIZE as usize).map(move |i| pattern_byte(s, i))).collect()
}

fn hash(bytes: &[u8]) -> u64 {
    fnv1a64(FNV_OFFSET_BASIS, bytes)
}

#[test]
fn pattern_bytes() {
    assert!((0..8).all(|i| pattern_byte(0, i) == 0));
    let s = 0x0102_0304_0506_0708u64;
    assert_eq!((0..8).map(|i| pattern_byte(s, i)).collect::<Vec<_>>(), [8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(pattern_byte(1, 8), 39);
    assert_eq!(pattern_byte(10, 511), ((310 + 511) & 0xff) as u8);
    assert_eq!(pattern_byte(2047, 100), ((2047 * 31 + 100) & 0xff) as u8);
    // Wrapping: u64::MAX * 31 + 8 = -23 (mod 2^64).
    assert_eq!(pattern_byte(u64::MAX, 8), 233);
    assert_eq!(pattern_byte(u64::MAX, 0), 0xff);
    let mut sector = [0u8; 512];
    disks::fill_sector(5, &mut sector);
    assert_eq!(sector.to_vec(), pattern(5, 1));
}

#[test]
fn fnv1a64_reference_values() {
    assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    // Hashing in pieces is hashing the whole.
    assert_eq!(fnv1a64(fnv1a64(FNV_OFFSET_BASIS, b"foo"), b"bar"), hash(b"foobar"));
}

#[test]
fn the_four_disks() {
    let serials: Vec<&str> = DISKS.iter().map(|d| d.serial).collect();
    assert_eq!(serials, ["kblk-main", "kblk-ro", "kblk-err", "kblk-slow"]);
    let sizes: Vec<u64> = DISKS.iter().map(|d| d.size).collect();
    assert_eq!(sizes, [16 << 20, 1 << 20, 1 << 20, 1 << 20]);
}

#[test]
fn images_are_created_filled_and_removed() {
    let dir = scratch("create");
    // A stale image of another size is replaced.
    std::fs::write(dir.join("disk-kblk-ro-smp2-none.img"), b"old").unwrap();
    let d = BootDisks::create(&dir, "smp2-none").expect("create");
    let names: Vec<String> = d.images.iter().map(|(_, p)| p.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(
        names,
        [
            "disk-kblk-main-smp2-none.img",
            "disk-kblk-ro-smp2-none.img",
            "disk-kblk-err-smp2-none.img",
            "disk-kblk-slow-smp2-none.img"
        ]
    );
    for (disk, path) in &d.images {
        assert_eq!(std::fs::metadata(path).unwrap().len(), disk.size, "{}", disk.serial);
        assert_eq!(path.parent(), Some(dir.as_path()));
    }
    let main = std::fs::read(&d.images[0].1).unwrap();
    assert_eq!(main, pattern(0, 32768));
    let ro = std::fs::read(d.image("kblk-ro").unwrap().1).unwrap();
    assert_eq!(ro, pattern(0, 2048));
    assert_eq!(d.image("kblk-slow").unwrap().0.serial, "kblk-slow");
    assert!(d.image("kblk-nope").is_none());
    d.remove().unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    d.remove().expect("removing twice is fine");
}

/// Fixed paths, for the exact argument list.
fn fixed_disks() -> BootDisks {
    BootDisks { images: DISKS.iter().map(|d| (*d, PathBuf::from(format!("/o/disk-{}-t.img", d.serial)))).collect() }
}

#[test]
fn qemu_argument_list() {
    let args = fixed_disks().qemu_args();
    let expected = [
        "-blockdev",
        r#"{"driver":"raw","file":{"driver":"file","filename":"/o/disk-kblk-main-t.img"},"node-name":"kblk-main"}"#,
        "-device",
        "virtio-blk-pci,drive=kblk-main,id=kblk-main-dev,serial=kblk-main,disable-legacy=on,num-queues=2",
        "-blockdev",
        r#"{"driver":"raw","file":{"driver":"file","filename":"/o/disk-kblk-ro-t.img","read-only":true},"node-name":"kblk-ro","read-only":true}"#,
        "-device",
        "virtio-blk-pci,drive=kblk-ro,id=kblk-ro-dev,serial=kblk-ro,num-queues=1",
        "-blockdev",
        concat!(
            r#"{"driver":"raw","file":{"driver":"blkdebug","image":{"driver":"file","filename":"/o/disk-kblk-err-t.img"},"#,
            r#""inject-error":[{"errno":5,"event":"read_aio","immediately":true,"iotype":"read","once":false,"sector":8},"#,
            r#"{"errno":5,"event":"write_aio","immediately":true,"iotype":"write","once":false,"sector":16},"#,
            r#"{"errno":5,"event":"flush_to_disk","immediately":true,"iotype":"flush","once":false}]},"node-name":"kblk-err"}"#
        ),
        "-device",
        "virtio-blk-pci,drive=kblk-err,id=kblk-err-dev,serial=kblk-err,disable-legacy=on",
        "-object",
        "throttle-group,id=kblk-slow-tg,x-iops-total=20",
        "-blockdev",
        concat!(
            r#"{"driver":"throttle","file":{"driver":"raw","file":{"driver":"file","filename":"/o/disk-kblk-slow-t.img"}},"#,
            r#""node-name":"kblk-slow","throttle-group":"kblk-slow-tg"}"#
        ),
        "-device",
        "virtio-blk-pci,drive=kblk-slow,id=kblk-slow-dev,serial=kblk-slow,disable-legacy=on,num-queues=1,vectors=0",
    ];
    assert_eq!(args, expected);
}

#[test]
fn paths_are_json_escaped() {
    let d = BootDisks { images: vec![(DISKS[0], PathBuf::from("/a \"b\",c\\d.img"))] };
    let args = d.qemu_args();
    let v: serde_json::Value = serde_json::from_str(&args[1]).unwrap();
    assert_eq!(v["file"]["filename"], "/a \"b\",c\\d.img");
}

#[test]
fn which_boots_get_disks() {
    assert!(block_selected("tests=all seed=1 preempt=full bench=skip"));
    assert!(block_selected("seed=1"));
    assert!(block_selected("tests=boot,block seed=1"));
    assert!(block_selected("tests=block"));
    assert!(block_selected("tests=pagecache"));
    assert!(block_selected("tests=port,pagecache seed=2"));
    assert!(block_selected("tests=restart restart=write"));
    assert!(block_selected("tests=torture torture_s=20"));
    assert!(block_selected("tests= seed=1"));
    assert!(block_selected("tests=,"));
    assert!(!block_selected("tests=boot seed=1"));
    assert!(!block_selected("tests=blocks,xblock"));
    // The last tests= counts, as in the guest.
    assert!(block_selected("tests=boot tests=block"));
    assert!(!block_selected("tests=block tests=boot"));
    // fault= without a suite list runs the fault suite only.
    assert!(!block_selected("tests=all fault=page"));
    assert!(block_selected("tests=block,fault fault=page"));
}

#[test]
fn block_image_lines() {
    let line = "    # block-image: serial=kblk-main sector=7 count=3 fnv1a64=00ff00ff00ff00ff";
    let expected = ImageRange { serial: "kblk-main".into(), sector: 7, count: 3, fnv1a64: 0x00ff_00ff_00ff_00ff };
    assert_eq!(parse_image_line(line), Some(Ok(expected.clone())));
    // Any key order, extra blanks.
    let line = "#block-image:  fnv1a64=00ff00ff00ff00ff count=3  sector=7 serial=kblk-main ";
    assert_eq!(parse_image_line(line), Some(Ok(expected)));
    for other in ["ok 1 a", "# bench: x n=1", "# block-images: serial=a", "block-image: serial=a", ""] {
        assert_eq!(parse_image_line(other), None, "{other}");
    }
    let malformed = [
        ("# block-image: serial=a sector=1 count=1", "all needed"),
        ("# block-image: serial=a sector=x count=1 fnv1a64=0000000000000000", "sector is not"),
        ("# block-image: serial=a sector=1 count=-1 fnv1a64=0000000000000000", "count is not"),
        ("# block-image: serial=a sector=1 count=1 fnv1a64=00000000000000", "16 lowercase hex"),
        ("# block-image: serial=a sector=1 count=1 fnv1a64=00000000000000AB", "16 lowercase hex"),
        ("# block-image: serial=a sector=1 count=1 fnv1a64=+000000000000000", "16 lowercase hex"),
        ("# block-image: serial=a sector=1 count=1 fnv1a64=0000000000000000 x=1", "unknown key 'x'"),
        ("# block-image: serial=a serial=b sector=1 count=1 fnv1a64=0000000000000000", "'serial' given twice"),
        ("# block-image: serial=a sector=1 count 1 fnv1a64=0000000000000000", "not key=value"),
    ];
    for (line, why) in malformed {
        match parse_image_line(line) {
            Some(Err(msg)) => assert!(msg.contains(why) && msg.starts_with("malformed block-image line"), "{msg}"),
            other => panic!("{line}: {other:?}"),
        }
    }
}

/// One small disk, `kblk-main`, of 4 sectors in `dir`.
fn small_disk(dir: &Path) -> BootDisks {
    let path = dir.join("disk-kblk-main-t.img");
    disks::write_image(&path, 4 * SECTOR_SIZE).unwrap();
    BootDisks { images: vec![(DISKS[0], path)] }
}

#[test]
fn hashing_image_ranges() {
    let dir = scratch("hash");
    let d = small_disk(&dir);
    let path = &d.images[0].1;
    assert_eq!(hash_range(path, 0, 4).unwrap(), Some(hash(&pattern(0, 4))));
    assert_eq!(hash_range(path, 1, 2).unwrap(), Some(hash(&pattern(1, 2))));
    assert_eq!(hash_range(path, 4, 0).unwrap(), Some(FNV_OFFSET_BASIS));
    assert_eq!(hash_range(path, 3, 2).unwrap(), None);
    assert_eq!(hash_range(path, 5, 0).unwrap(), None);
    assert_eq!(hash_range(path, u64::MAX, 1).unwrap(), None);
    assert_eq!(hash_range(path, 1, u64::MAX).unwrap(), None);
}

#[test]
fn verdict_on_block_image_lines() {
    let dir = scratch("verdict");
    let d = small_disk(&dir);
    // What the "guest" wrote: sector 2 all 0xab.
    let mut f = std::fs::OpenOptions::new().write(true).open(&d.images[0].1).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(2 * SECTOR_SIZE)).unwrap();
    f.write_all(&[0xab; 512]).unwrap();
    drop(f);
    let line = |serial: &str, sector: u64, count: u64, h: u64| {
        format!("    # block-image: serial={serial} sector={sector} count={count} fnv1a64={h:016x}")
    };
    let written = hash(&[0xab; 512]);
    let good = [
        "KTAP version 1".to_string(),
        line("kblk-main", 0, 2, hash(&pattern(0, 2))),
        line("kblk-main", 2, 1, written),
        "# diagnostic".to_string(),
        line("kblk-main", 3, 1, hash(&pattern(3, 1))),
    ]
    .join("\n");
    assert_eq!(check_images(&good, Some(&d)), disks::ImageCheck { checked: 3, failures: vec![] });
    assert_eq!(check_images("KTAP version 1\nok 1 a\n", None), disks::ImageCheck::default());

    let stale = hash(&pattern(2, 1));
    let bad = [
        line("kblk-main", 2, 1, stale),
        line("kblk-nope", 0, 1, 0),
        line("kblk-main", 3, 2, 0),
        "# block-image: serial=kblk-main".to_string(),
        line("kblk-main", 0, 1, hash(&pattern(0, 1))),
    ]
    .join("\n");
    let check = check_images(&bad, Some(&d));
    assert_eq!(check.checked, 5);
    assert_eq!(
        check.failures,
        [
            format!("block-image: serial=kblk-main sector=2 count=1: guest fnv1a64={stale:016x}, image fnv1a64={written:016x}"),
            "block-image: unknown serial 'kblk-nope' (sector=0 count=1)".to_string(),
            "block-image: serial=kblk-main sector=3 count=2: past the end of the image (4 sectors)".to_string(),
            "malformed block-image line (serial, sector, count and fnv1a64 are all needed): # block-image: serial=kblk-main"
                .to_string(),
        ]
    );
    // Without disks every line fails.
    let check = check_images(&good, None);
    assert_eq!(check.failures.len(), 3);
    assert!(check.failures[0].contains("unknown serial 'kblk-main'"), "{:?}", check.failures);
}

// ---- the `ktest` binary, with a script standing in for QEMU ----

/// A fake QEMU in `dir` that echoes its arguments as a diagnostic and then runs `body`.
fn fake_qemu(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-qemu");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'QEMU emulator version 7.2.0 (fake)'; exit 0; fi\nprintf '# args: %s\\n' \"$*\"\n{body}\n"
    );
    common::write_executable(&path, &script);
    path
}

fn ktest(dir: &Path, qemu: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["--seed", "3"];
    all.extend_from_slice(args);
    common::ktest_with_fake_qemu("run", dir, qemu, &all)
}

const KTAP_PASS: &str =
    r"KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: block\n    1..1\n    ok 1 rw\nok 1 block\n";

/// The script's part: overwrite sector 2 of kblk-main with 0xab bytes (as a
/// guest would through the device) and report `lines`, then pass.
fn guest_body(image: &Path, lines: &[String]) -> String {
    let mut body = format!(
        "head -c 512 /dev/zero | tr '\\000' '\\253' | dd of='{}' bs=512 seek=2 conv=notrunc 2>/dev/null || exit 99\n",
        image.display()
    );
    for l in lines {
        body.push_str(&format!("echo '    {l}'\n"));
    }
    body.push_str(&format!("printf '{KTAP_PASS}'\nexit 33"));
    body
}

#[test]
fn binary_attaches_and_checks_the_disks() {
    let dir = scratch("binary-pass");
    let image = dir.join("out/disk-kblk-main-smp1-full.img");
    let lines = [
        format!("# block-image: serial=kblk-main sector=0 count=2 fnv1a64={:016x}", hash(&pattern(0, 2))),
        format!("# block-image: serial=kblk-main sector=2 count=1 fnv1a64={:016x}", hash(&[0xab; 512])),
        format!("# block-image: serial=kblk-ro sector=2047 count=1 fnv1a64={:016x}", hash(&pattern(2047, 1))),
    ];
    let qemu = fake_qemu(&dir, &guest_body(&image, &lines));
    let (code, stdout) = ktest(&dir, &qemu, &["--smp", "1", "--tests", "boot,block"]);
    assert_eq!(code, 0, "{stdout}");
    let expected_args = BootDisks {
        images: DISKS.iter().map(|d| (*d, dir.join(format!("out/disk-{}-smp1-full.img", d.serial)))).collect(),
    }
    .qemu_args()
    .join(" ");
    assert!(stdout.contains(&format!("-accel tcg,thread=multi {expected_args}\n")), "{stdout}");
    assert!(stdout.contains("\nktest: block-image: 3 ranges checked\n"), "{stdout}");
    assert!(stdout.ends_with("\n0 skipped\n1 passed, 0 failed\n"), "{stdout}");
    let left: Vec<_> = std::fs::read_dir(dir.join("out")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!left.iter().any(|n| n.to_string_lossy().starts_with("disk-")), "images left: {left:?}");
}

#[test]
fn binary_fails_a_boot_whose_image_differs() {
    let dir = scratch("binary-fail");
    let image = dir.join("out/disk-kblk-main-smp2-none.img");
    let stale = hash(&pattern(2, 1));
    let lines = [format!("# block-image: serial=kblk-main sector=2 count=1 fnv1a64={stale:016x}")];
    let qemu = fake_qemu(&dir, &guest_body(&image, &lines));
    let (code, stdout) = ktest(&dir, &qemu, &["--smp", "2", "--preempt", "none", "--quiet", "--qemu-arg", "-foo"]);
    assert_eq!(code, 1, "{stdout}");
    let reason = format!(
        "block-image: serial=kblk-main sector=2 count=1: guest fnv1a64={stale:016x}, image fnv1a64={:016x}",
        hash(&[0xab; 512])
    );
    assert!(stdout.contains(&format!("ktest: [1/1] smp=2 preempt=none: {reason}\n")), "{stdout}");
    assert!(stdout.contains(&format!("    FAIL: {reason}\n")), "{stdout}");
    assert!(stdout.contains("smp=2 preempt=none: FAIL (exit 33"), "{stdout}");
    assert!(stdout.contains("ktest: block-image: 1 ranges checked\n"), "{stdout}");
    assert!(stdout.ends_with("\n1 passed, 1 failed\n"), "{stdout}");
    // The user's arguments come after the disks'; the images stay for a look.
    let log = std::fs::read_to_string(dir.join("out/ktap-smp2-none.txt")).unwrap();
    assert!(log.contains("serial=kblk-slow,disable-legacy=on,num-queues=1,vectors=0 -foo\n"), "{log}");
    assert!(image.is_file());
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/results.json")).unwrap()).unwrap();
    assert_eq!(results["configs"][0]["passed"], false);
    assert_eq!(results["configs"][0]["failures"][0], reason.as_str());
}

#[test]
fn binary_leaves_other_suites_without_disks() {
    let dir = scratch("binary-none");
    let qemu = fake_qemu(&dir, &format!("printf '{KTAP_PASS}'\nexit 33"));
    let (code, stdout) = ktest(&dir, &qemu, &["--smp", "1", "--tests", "boot"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains("virtio-blk"), "{stdout}");
    assert!(!stdout.contains("block-image"), "{stdout}");
    // --append tests=... is what the guest gets, so it decides too.
    let (code, stdout) = ktest(&dir, &qemu, &["--smp", "1", "--tests", "boot", "--append", "tests=block"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("serial=kblk-main"), "{stdout}");
}

// ---- real QEMU ----

/// `qemu-system-x86_64`, or `None` after printing why the test is skipped.
fn real_qemu() -> Option<PathBuf> {
    let found = find_executable(Path::new(QEMU));
    if found.is_none() {
        println!("skipped: {QEMU} is not installed");
    }
    found
}

/// Start QEMU, stopped (`-S`), with `args` and the runner's debug-exit device,
/// feed it `stdin` and return (exit status, stdout, stderr).
fn qemu_with(qemu: &Path, args: &[String], monitor: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new("timeout")
        .arg("60")
        .arg(qemu)
        .args(["-display", "none", "-nodefaults", "-machine", "pc", "-m", "64M"])
        .args(args)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-S"])
        .args(monitor)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Run HMP `commands` through QMP's `human-monitor-command`; their outputs in order.
fn hmp(qemu: &Path, args: &[String], commands: &[String]) -> Vec<String> {
    let mut input = String::from("{\"execute\":\"qmp_capabilities\"}\n");
    for c in commands {
        let cmd = serde_json::json!({ "execute": "human-monitor-command", "arguments": { "command-line": c } });
        input.push_str(&format!("{cmd}\n"));
    }
    input.push_str("{\"execute\":\"quit\"}\n");
    let (code, stdout, stderr) = qemu_with(qemu, args, &["-qmp", "stdio"], &input);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stderr, "");
    // qemu-io prints on QEMU's stdout, before the command's reply; the other
    // commands return their text. qmp_capabilities and quit return {}.
    let mut out = Vec::new();
    let mut printed = String::new();
    for line in stdout.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(reply) => {
                if let Some(text) = reply.get("return").and_then(|v| v.as_str()) {
                    out.push(std::mem::take(&mut printed) + text);
                }
            }
            Err(_) => printed.push_str(&format!("{line}\n")),
        }
    }
    assert_eq!(out.len(), commands.len(), "{stdout}");
    out
}

/// `qemu-io` on the device `<serial>-dev` (through the device's own block backend).
fn io(serial: &str, command: &str) -> String {
    format!("qemu-io -d /machine/peripheral/{serial}-dev/virtio-backend \"{command}\"")
}

#[test]
fn real_qemu_takes_the_disks() {
    let Some(qemu) = real_qemu() else { return };
    let dir = scratch("real-qemu");
    let disks = BootDisks::create(&dir, "smp1-full").unwrap();
    let args = disks.qemu_args();

    // The documented manual check: QEMU starts with them and quits cleanly.
    let (code, _, stderr) = qemu_with(&qemu, &args, &["-monitor", "stdio"], "quit\n");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "");

    // The devices: PCI ids, queues.
    let pci = &hmp(&qemu, &args, &["info pci".to_string()])[0];
    for (id, serial) in [("1af4:1042", "kblk-main"), ("1af4:1001", "kblk-ro"), ("1af4:1042", "kblk-err")] {
        let needle = format!("PCI device {id}");
        let block = pci.split("Bus ").find(|b| b.contains(&format!("id \"{serial}-dev\""))).expect(serial);
        assert!(block.contains(&needle), "{serial}: {block}");
    }
    let queues = serde_json::json!({ "execute": "qom-get",
        "arguments": { "path": "/machine/peripheral/kblk-main-dev/virtio-backend", "property": "num-queues" } });
    let input = format!("{{\"execute\":\"qmp_capabilities\"}}\n{queues}\n{{\"execute\":\"quit\"}}\n");
    let (_, stdout, _) = qemu_with(&qemu, &args, &["-qmp", "stdio"], &input);
    assert!(stdout.contains("{\"return\": 2}"), "{stdout}");

    // kblk-err: EIO on every read covering sector 8 and every write covering
    // sector 16, nothing else; kblk-ro refuses writes; kblk-main takes them.
    let commands = [
        io("kblk-err", "read 4096 512"),
        io("kblk-err", "read 4096 512"),
        io("kblk-err", "read 3584 1024"),
        io("kblk-err", "read 3584 512"),
        io("kblk-err", "read 8192 512"),
        io("kblk-err", "write 8192 512"),
        io("kblk-err", "write 8192 512"),
        io("kblk-err", "write 4096 512"),
        io("kblk-ro", "write 0 512"),
        io("kblk-ro", "read 0 512"),
        io("kblk-main", "write -P 171 1024 512"),
    ];
    let out = hmp(&qemu, &args, &commands);
    let failed: Vec<bool> = out.iter().map(|o| o.contains("failed") || o.contains("read-only")).collect();
    assert_eq!(failed, [true, true, true, false, false, true, true, false, true, false, false], "{out:#?}");
    assert!(out[0].contains("Input/output error") && out[5].contains("Input/output error"), "{out:#?}");
    // What the guest would write lands in the image file.
    let main = std::fs::read(&disks.images[0].1).unwrap();
    assert_eq!(main[1024..1536], [171; 512]);
    assert_eq!(main[..1024], pattern(0, 2));
    let err = std::fs::read(disks.image("kblk-err").unwrap().1).unwrap();
    assert_eq!(err[4096..4608], [0xcd; 512], "qemu-io's default write pattern at sector 8");
    assert_eq!(err[8192..8704], pattern(16, 1), "sector 16 unwritten");

    // kblk-slow: 30 reads one after another at 20 a second take over a second.
    let reads: Vec<String> = (0..30).map(|i| io("kblk-slow", &format!("read -q {} 512", i * 512))).collect();
    let start = Instant::now();
    hmp(&qemu, &args, &reads);
    assert!(start.elapsed() >= Duration::from_secs(1), "not throttled: {:?}", start.elapsed());
    disks.remove().unwrap();
}
