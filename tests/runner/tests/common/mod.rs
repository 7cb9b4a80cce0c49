//! Helpers shared by the test files that boot real guests through the
//! `ktest` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Boots of one test binary run one at a time: TCG on two host cores is
/// slow enough without competition.
pub static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What one `ktest run` did.
pub struct Run {
    /// Its exit status (-1 if killed by a signal).
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Where it wrote its reports.
    pub out_dir: PathBuf,
}

/// `ktest run --kernel <kernel> [--initrd <initrd>] --out <tmp>/<name> --seed 1 <args>`,
/// one boot at a time; the output is echoed for a failing test's log.
pub fn ktest(name: &str, kernel: &Path, initrd: Option<&Path>, args: &[&str]) -> Run {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ktest"));
    cmd.args(["run", "--kernel"]).arg(kernel);
    if let Some(i) = initrd {
        cmd.arg("--initrd").arg(i);
    }
    let output = cmd.arg("--out").arg(&out_dir).args(["--seed", "1"]).args(args).output().expect("run ktest");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("---- ktest {args:?} ----\n{stdout}\n---- stderr ----\n{stderr}");
    Run { code: output.status.code().unwrap_or(-1), stdout, out_dir }
}

/// `ktest <mode> --qemu <qemu> --kernel <this test binary> --out <dir>/out <args>`, with a fake
/// emulator script standing in for QEMU (the kernel is never run); returns the exit status and
/// the standard output, echoed with the standard error for a failing test's log.
pub fn ktest_with_fake_qemu(mode: &str, dir: &Path, qemu: &Path, args: &[&str]) -> (i32, String) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ktest"))
        .arg(mode)
        .arg("--qemu")
        .arg(qemu)
        .arg("--kernel")
        .arg(&exe)
        .arg("--out")
        .arg(dir.join("out"))
        .args(args)
        .output()
        .expect("run ktest");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}\n---- stderr ----\n{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout)
}

/// Write `text` to `path` as an executable script (a fake emulator).
pub fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `ktest <args>`: its exit status and its standard output followed by its
/// standard error.
pub fn ktest_text(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ktest")).args(args).output().expect("ktest runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}
