//! The Redox side of the program: entry point, stack, heap, system calls, and the checks that
//! need the kernel (the rest are in `checks.rs`).
//!
//! Redox starts its first user program (the bootstrap image) with nothing but the image copied
//! to 0x1000 and its registers cleared: no stack, no arguments, no file descriptors in the
//! usual sense. What it does get is a read-only page at the top of user space listing, for each
//! of the kernel's schemes, a capability (a file descriptor in the upper table) from which
//! paths are opened with `openat`. The program brings its own stack and heap in its image.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

// memcpy and the other symbols the precompiled core/alloc expect from a C library.
use bootproto as _;
use ktests_redox_user::checks;
use ktests_redox_user::ktap::{INDENT, Ktap, one_line};
use syscall::{ContextVerb, ENOENT, GlobalSchemes, KERNEL_METADATA_SIZE, KernelSchemeInfo, O_RDONLY, O_RDWR};

/// The top of user space on x86_64 (256 PML4 entries of 512 GiB), where the kernel maps the
/// scheme capabilities just below.
const USER_END: usize = 0x8000_0000_0000;
/// The kernel's page of scheme capabilities: a count, that many `KernelSchemeInfo`, then the
/// capability to create schemes.
const KERNEL_METADATA_BASE: usize = USER_END - KERNEL_METADATA_SIZE;
/// The program's stack, in its image.
const STACK_SIZE: usize = 64 * 1024;
/// The program's heap, in its image (never freed: the program is short).
const HEAP_SIZE: usize = 256 * 1024;
/// The first file descriptor the program opens into (the kernel sized the lower table to 64).
const FIRST_FD: usize = 8;
/// Where the program reports its verdict (a file of the `ktests` kernel only, root only).
const VERDICT_FILE: &str = "ktest";

/// The bootstrap header: Redox reads the entry point as a little-endian u64 at offset 0x1a of
/// the image (`usermode_bootstrap` in its `src/syscall/process.rs`). The bytes before it say
/// what the image is.
#[repr(C, packed)]
struct Header {
    magic: [u8; 0x1a],
    entry: unsafe extern "C" fn() -> !,
}

#[used]
#[unsafe(link_section = ".bootstrap_header")]
static HEADER: Header = Header { magic: *b"kthreads ktests redox-user", entry: _start };

#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; STACK_SIZE]>);

// SAFETY: only the entry point uses it, as the one thread's stack.
unsafe impl Sync for Stack {}

static STACK: Stack = Stack(UnsafeCell::new([0; STACK_SIZE]));

/// The entry point: a stack, then [`main`].
#[unsafe(naked)]
#[unsafe(no_mangle)]
unsafe extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        "lea rsp, [rip + {stack} + {size}]",
        "xor ebp, ebp",
        "call {main}",
        "ud2",
        stack = sym STACK,
        size = const STACK_SIZE,
        main = sym main,
    )
}

/// A bump allocator over a static array.
struct Bump {
    heap: UnsafeCell<[u8; HEAP_SIZE]>,
    next: AtomicUsize,
}

// SAFETY: `next` hands out each byte once (compare-and-swap); the array is only reached through
// the blocks handed out.
unsafe impl Sync for Bump {}

// SAFETY: blocks are disjoint, inside the array, aligned as asked, and never reused.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.heap.get() as usize;
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let start = (base + next).next_multiple_of(layout.align()) - base;
            let Some(end) = start.checked_add(layout.size()).filter(|&e| e <= HEAP_SIZE) else {
                return core::ptr::null_mut();
            };
            match self.next.compare_exchange(next, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return (base + start) as *mut u8,
                Err(now) => next = now,
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static HEAP: Bump = Bump { heap: UnsafeCell::new([0; HEAP_SIZE]), next: AtomicUsize::new(0) };

/// The capabilities the kernel gave this program.
struct Roots {
    debug: usize,
    sys: usize,
    proc: usize,
}

impl Roots {
    /// Read the kernel's metadata page.
    fn read() -> Result<Roots, String> {
        let base = KERNEL_METADATA_BASE as *const u8;
        // SAFETY: the kernel maps this page read-only into the bootstrap context before starting
        // it: a usize count, then that many KernelSchemeInfo (repr(C)).
        let infos = unsafe {
            let count = base.cast::<usize>().read();
            if count > 64 {
                return Err(format!("the kernel's metadata page lists {count} schemes"));
            }
            core::slice::from_raw_parts(base.add(size_of::<usize>()).cast::<KernelSchemeInfo>(), count)
        };
        let fd = |s: GlobalSchemes| {
            infos
                .iter()
                .find(|i| i.scheme_id == s as u8)
                .map(|i| i.fd)
                .ok_or_else(|| format!("no capability for the {} scheme", s.as_str()))
        };
        Ok(Roots { debug: fd(GlobalSchemes::Debug)?, sys: fd(GlobalSchemes::Sys)?, proc: fd(GlobalSchemes::Proc)? })
    }
}

/// File descriptors, handed out in turn and closed after use.
static NEXT_FD: AtomicUsize = AtomicUsize::new(FIRST_FD);

fn new_fd() -> usize {
    NEXT_FD.fetch_add(1, Ordering::Relaxed)
}

fn open(root: usize, path: &str, flags: usize) -> syscall::Result<usize> {
    syscall::openat_into(root, new_fd(), path, flags, 0)
}

fn close(fd: usize) -> syscall::Result<usize> {
    // SAFETY: SYS_CLOSE takes a file descriptor number and nothing the kernel writes through.
    unsafe { syscall::syscall1(syscall::SYS_CLOSE, fd) }
}

fn read_all(fd: usize) -> syscall::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = syscall::read(fd, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The text of `sys:<name>`.
fn read_sys(roots: &Roots, name: &str) -> Result<String, String> {
    let fd = open(roots.sys, name, O_RDONLY).map_err(|e| format!("cannot open sys:{name}: {e}"))?;
    let data = read_all(fd).map_err(|e| format!("cannot read sys:{name}: {e}"));
    let _ = close(fd);
    String::from_utf8(data?).map_err(|_| format!("sys:{name} is not UTF-8"))
}

/// The debug scheme: the kernel's serial console. One write per line keeps lines whole.
struct Console(usize);

impl Console {
    fn line(&self, s: &str) {
        let mut l = String::with_capacity(s.len() + 1);
        l.push_str(s);
        l.push('\n');
        let _ = syscall::write(self.0, l.as_bytes());
    }
}

/// No name in `proc:` reaches a kernel thread: Redox's process interface hands out context
/// handles only for the caller itself (`cur-context`) and for contexts it creates
/// (`new-context`), and its stop, interrupt and kill verbs act on such handles; a kernel
/// thread's id resolves to nothing. The caller's own handle works (the interface is there).
fn proc_has_no_name_for_kernel_threads(roots: &Roots, kthread_ids: &[u64]) -> Result<(), String> {
    let own = syscall::dup_into(roots.proc, new_fd(), b"cur-context")
        .map_err(|e| format!("proc: cur-context (the caller's own handle) failed: {e}"))?;
    let _ = close(own);
    for id in kthread_ids {
        for name in [format!("{id}"), format!("{id}/status"), format!("pid-{id}")] {
            match syscall::dup_into(roots.proc, new_fd(), name.as_bytes()) {
                Err(e) if e.errno == ENOENT || e.errno == syscall::EINVAL => {}
                Err(e) => return Err(format!("proc: `{name}` failed with {e}, expected ENOENT")),
                Ok(fd) => {
                    let _ = close(fd);
                    return Err(format!("proc: `{name}` gave a handle to kernel thread {id}"));
                }
            }
        }
    }
    Ok(())
}

/// `sys:kthread` is read-only: a write is refused.
fn sys_kthread_is_read_only(roots: &Roots) -> Result<(), String> {
    let fd = match open(roots.sys, "kthread", O_RDWR) {
        Ok(fd) => fd,
        Err(_) => return Ok(()),
    };
    let wrote = syscall::write(fd, b"[kthreadd]\n");
    let _ = close(fd);
    match wrote {
        Err(_) => Ok(()),
        Ok(n) => Err(format!("a write of sys:kthread was accepted ({n} bytes)")),
    }
}

/// Write `data` to `sys:NAME` in one write; the write's result.
fn write_sys(roots: &Roots, name: &str, data: &[u8]) -> syscall::Result<usize> {
    let fd = open(roots.sys, name, syscall::O_WRONLY)?;
    let r = syscall::write(fd, data);
    let _ = close(fd);
    r
}

/// `sys:sysctl` lists the settings; a root write changes one (read back), an unknown name is
/// `ENOENT`, an out-of-range value `EINVAL` and leaves the setting as it was.
fn sys_sysctl_reads_and_writes(roots: &Roots) -> Result<(), String> {
    const NAME: &str = "kernel.hung_task_warnings";
    let value = |text: &str| -> Result<i64, String> {
        let table = checks::sysctl_table(text)?;
        table.iter().find(|(n, _)| *n == NAME).map(|(_, v)| *v).ok_or_else(|| format!("no {NAME}"))
    };
    let before = value(&read_sys(roots, "sysctl")?)?;
    let want = if before == 7 { 8 } else { 7 };
    write_sys(roots, "sysctl", format!("{NAME}={want}\n").as_bytes()).map_err(|e| format!("write {NAME}: {e}"))?;
    let after = value(&read_sys(roots, "sysctl")?)?;
    let unknown = write_sys(roots, "sysctl", b"kernel.no_such_setting=1\n");
    let bad = write_sys(roots, "sysctl", b"kernel.watchdog_thresh=61\n");
    let thresh = checks::sysctl_table(&read_sys(roots, "sysctl")?)?
        .iter()
        .find(|(n, _)| *n == "kernel.watchdog_thresh")
        .map(|(_, v)| *v);
    write_sys(roots, "sysctl", format!("{NAME}={before}\n").as_bytes()).map_err(|e| format!("restore: {e}"))?;
    if after != want {
        return Err(format!("{NAME}: wrote {want}, read back {after}"));
    }
    if unknown.map_err(|e| e.errno) != Err(ENOENT) {
        return Err(format!("an unknown name gave {unknown:?}, not ENOENT"));
    }
    if bad.map_err(|e| e.errno) != Err(syscall::EINVAL) {
        return Err(format!("watchdog_thresh=61 gave {bad:?}, not EINVAL"));
    }
    if thresh == Some(61) {
        return Err(String::from("a refused value was stored"));
    }
    Ok(())
}

/// `sys:sysrq` takes the help key (the kernel prints its list) and refuses a key it has not.
fn sys_sysrq_takes_keys(roots: &Roots) -> Result<(), String> {
    match write_sys(roots, "sysrq", b"h") {
        Ok(1) => {}
        other => return Err(format!("sysrq h: {other:?}")),
    }
    match write_sys(roots, "sysrq", b"?") {
        Err(e) if e.errno == syscall::EINVAL => Ok(()),
        other => Err(format!("sysrq ?: {other:?}, not EINVAL")),
    }
}

/// Tell the kernel the verdict (it then ends the run), and leave.
fn report_and_exit(roots: &Roots, pass: bool) -> ! {
    let verdict: &[u8] = if pass { b"pass" } else { b"fail" };
    if let Ok(fd) = open(roots.sys, VERDICT_FILE, syscall::O_WRONLY) {
        let _ = syscall::write(fd, verdict);
        let _ = close(fd);
    }
    exit(roots)
}

/// End this context: the kill verb on its own `proc:` handle.
fn exit(roots: &Roots) -> ! {
    if let Ok(fd) = syscall::dup_into(roots.proc, new_fd(), b"cur-context") {
        let _ = syscall::write(fd, &(ContextVerb::ForceKill as usize).to_ne_bytes());
    }
    loop {
        let _ = syscall::sched_yield();
    }
}

/// With `kblk=virtio` in Redox's env: the in-kernel disk `kblk-main` as a file of `sys:`, as a
/// disk client (redoxfs) uses one: its size from `fstat` and `lseek(SEEK_END)`, an unaligned read
/// that finds the runner's pattern, an unaligned write read back and `fsync`; the written range
/// is announced as a `block-image` line, which the runner checks in the image after the boot.
/// Ok(None) without the option.
fn sys_kblk_is_a_disk_file(roots: &Roots, env: &str, say: &dyn Fn(&str)) -> Result<Option<()>, String> {
    if !env.lines().any(|l| l.trim() == "kblk=virtio") {
        return Ok(None);
    }
    let fd = open(roots.sys, "kblk/kblk-main", O_RDWR).map_err(|e| format!("cannot open sys:kblk/kblk-main: {e}"))?;
    let r = (|| {
        let mut st = syscall::Stat::default();
        syscall::fstat(fd, &mut st).map_err(|e| format!("fstat: {e}"))?;
        let size = syscall::lseek(fd, 0, syscall::SEEK_END).map_err(|e| format!("lseek(SEEK_END): {e}"))?;
        if st.st_size != 16 << 20 || size != 16 << 20 {
            return Err(format!("kblk-main is {} bytes by fstat and {size} by lseek, not 16 MiB", st.st_size));
        }
        let at = (4usize << 20) + 3;
        let mut buf = [0u8; 1500];
        syscall::lseek(fd, at as isize, syscall::SEEK_SET).map_err(|e| format!("lseek: {e}"))?;
        let n = syscall::read(fd, &mut buf).map_err(|e| format!("read: {e}"))?;
        let want = checks::image_bytes(at as u64, buf.len());
        if n != buf.len() || buf[..] != want[..] {
            return Err(format!("a read of {} bytes at 4 MiB + 3 got {n} bytes, not the image's pattern", buf.len()));
        }
        let at = (13usize << 20) + 777;
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        syscall::lseek(fd, at as isize, syscall::SEEK_SET).map_err(|e| format!("lseek: {e}"))?;
        let n = syscall::write(fd, &data).map_err(|e| format!("write: {e}"))?;
        syscall::fsync(fd).map_err(|e| format!("fsync: {e}"))?;
        let first = at / 512 * 512;
        let end = (at + data.len()).next_multiple_of(512);
        let mut back = alloc::vec![0u8; end - first];
        syscall::lseek(fd, first as isize, syscall::SEEK_SET).map_err(|e| format!("lseek: {e}"))?;
        let got = syscall::read(fd, &mut back).map_err(|e| format!("read back: {e}"))?;
        let mut want = checks::image_bytes(first as u64, end - first);
        want[at - first..at - first + data.len()].copy_from_slice(&data);
        if n != data.len() || got != back.len() || back != want {
            return Err(format!(
                "a write of 1000 bytes at 13 MiB + 777 ({n} written, {got} read back) did not land exactly"
            ));
        }
        say(&format!(
            "block-image: serial=kblk-main sector={} count={} fnv1a64={:016x}",
            first / 512,
            (end - first) / 512,
            checks::fnv1a64(&want)
        ));
        Ok(Some(()))
    })();
    let _ = close(fd);
    r
}

/// The roots, for the panic handler (set once `main` has read them).
static ROOTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn main() -> ! {
    let roots = match Roots::read() {
        Ok(r) => r,
        // Without the capabilities there is no console and no verdict: the kernel's watchdog
        // reports the case as timed out.
        Err(_) => loop {
            let _ = syscall::sched_yield();
        },
    };
    ROOTS.store(&roots as *const Roots as usize, Ordering::Release);
    let console = match open(roots.debug, "", syscall::O_WRONLY) {
        Ok(fd) => Console(fd),
        Err(_) => report_and_exit(&roots, false),
    };
    let kthread = read_sys(&roots, "kthread");
    let cpu = read_sys(&roots, "cpu");
    let context = read_sys(&roots, "context");
    let text = |r: &Result<String, String>| r.clone().unwrap_or_default();
    let (kthread_text, cpu_text, context_text) = (text(&kthread), text(&cpu), text(&context));
    let mut results = Vec::new();
    for (name, r) in
        [("sys_kthread_readable", &kthread), ("sys_cpu_readable", &cpu), ("sys_context_readable", &context)]
    {
        results.push((name, r.as_ref().map(|_| ()).map_err(Clone::clone)));
    }
    results.extend(checks::check_listings(&kthread_text, &cpu_text, &context_text));
    let ids: Vec<u64> = checks::parse_sys_kthread(&kthread_text)
        .map(|rows| rows.iter().filter(|r| r.state != 'Z').map(|r| r.pid).collect())
        .unwrap_or_default();
    let softirqs = read_sys(&roots, "softirqs");
    let interrupts = read_sys(&roots, "interrupts");
    results.push(("sys_softirqs_readable", softirqs.as_ref().map(|_| ()).map_err(Clone::clone)));
    results.push(("sys_interrupts_readable", interrupts.as_ref().map(|_| ()).map_err(Clone::clone)));
    results.extend(checks::check_bottom_halves(&text(&softirqs), &text(&interrupts), &kthread_text, &cpu_text));
    let vmstat = read_sys(&roots, "vmstat");
    let meminfo = read_sys(&roots, "meminfo");
    results.push((
        "sys_vmstat_and_meminfo",
        vmstat
            .as_ref()
            .and_then(|v| meminfo.as_ref().map(|m| (v, m)))
            .map_err(Clone::clone)
            .and_then(|(v, m)| checks::memory_tables(v, m)),
    ));
    let env = read_sys(&roots, "env").unwrap_or_default();
    let notes = core::cell::RefCell::new(Vec::<String>::new());
    let kblk = sys_kblk_is_a_disk_file(&roots, &env, &|l: &str| notes.borrow_mut().push(String::from(l)));
    if !matches!(kblk, Ok(None)) {
        results.push(("sys_kblk_is_a_disk_file", kblk.map(|_| ())));
    }
    results.push(("proc_has_no_name_for_kernel_threads", proc_has_no_name_for_kernel_threads(&roots, &ids)));
    results.push(("sys_kthread_is_read_only", sys_kthread_is_read_only(&roots)));
    results.push(("sys_sysctl_reads_and_writes", sys_sysctl_reads_and_writes(&roots)));
    results.push(("sys_sysrq_takes_keys", sys_sysrq_takes_keys(&roots)));

    let mut ktap = Ktap::start(|l: &str| console.line(l), "user_space", results.len());
    ktap.diag(&format!(
        "Redox user space: sys:kthread lists {} kernel threads; {}",
        ids.len(),
        cpu_text.lines().next().unwrap_or("sys:cpu unreadable")
    ));
    for l in notes.borrow().iter() {
        ktap.diag(l);
    }
    // What user space read, line by line, for a failed check's reader and as the source of the
    // host tests' samples (`tests/redox-user/samples/`, `cookbook-recipe/kthread-ps/tests/`).
    let sysctl_text = read_sys(&roots, "sysctl").unwrap_or_default();
    for (name, text) in [("sys:kthread", &kthread_text), ("sys:context", &context_text), ("sys:sysctl", &sysctl_text)] {
        for l in text.lines() {
            ktap.diag(&format!("user {name}: {l}"));
        }
    }
    for (name, r) in &results {
        ktap.result(name, r);
    }
    let pass = ktap.failed() == 0;
    report_and_exit(&roots, pass)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let roots = ROOTS.load(Ordering::Acquire) as *const Roots;
    // SAFETY: set by `main` to its `Roots`, which lives as long as `main`'s frame, i.e. for the
    // program's life (`main` never returns); null before.
    let Some(roots) = (unsafe { roots.as_ref() }) else {
        loop {
            let _ = syscall::sched_yield();
        }
    };
    if let Ok(fd) = open(roots.debug, "", syscall::O_WRONLY) {
        let msg = format!("{INDENT}# user program panicked: {}\n", one_line(&format!("{}", info.message())));
        let _ = syscall::write(fd, msg.as_bytes());
    }
    report_and_exit(roots, false)
}
