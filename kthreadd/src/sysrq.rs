//! Stack dumps of kernel threads, and the magic SysRq keys that print them
//! (Linux `drivers/tty/sysrq.c`, `sched_show_task`, `show_state_filter`).
//!
//! A dump of one thread is its line (`task:NAME state:D wchan:... cpu:N
//! pid:ID ppid:P`) and, for a thread that is switched out, its return
//! addresses in the console's backtrace format (`# backtrace:` then `#  N:
//! 0x...`), which the runner symbolizes from the kernel's ELF. A running
//! thread's stack cannot be walked from another CPU; key `l` asks each CPU
//! to print its own.
//!
//! Keys ([`handle`]): `t` every kernel thread, `w` the blocked ones (`D`),
//! `l` a backtrace of every online CPU, `h` the list. The same keys arrive
//! from the guest command line (`sysrq=`), from the serial console (a
//! BREAK, then the key, as on Linux), and inside Redox by writing the key
//! to `sys:sysrq`.

use alloc::format;
use alloc::string::String;
use core::fmt::Write;

use kport::{EINVAL, Error, Result, TaskState, port};

use crate::kthread::Kthread;
use crate::registry;

/// Most return addresses a dump shows.
pub const MAX_FRAMES: usize = 24;

/// The text of one thread's dump, given its return addresses (innermost
/// first): its line, then the frames in the console's backtrace format
/// (each address minus one, inside the call instruction, as the panic
/// backtrace prints them).
pub fn task_text(k: &Kthread, frames: &[usize]) -> String {
    let t = k.task();
    let state = k.0.state_letter();
    let wchan = t.wait_channel();
    let mut s = format!(
        "task:{:<15} state:{state} wchan:{} cpu:{} pid:{} ppid:{}\n",
        registry::listed_name(k),
        if state == 'R' || wchan.is_empty() { "-" } else { wchan },
        t.cpu(),
        k.id(),
        k.parent_id()
    );
    if frames.is_empty() {
        let why = if state == 'R' { "running" } else { "no stack walk" };
        let _ = writeln!(s, "# backtrace: ({why})");
        return s;
    }
    s.push_str("# backtrace:\n");
    for (i, f) in frames.iter().enumerate() {
        let _ = writeln!(s, "# {i:2}: {:#018x}", f.saturating_sub(1));
    }
    s
}

/// Print one thread's dump (Linux `sched_show_task`).
///
/// Context: any context that may allocate.
pub fn show_task(k: &Kthread) {
    let mut frames = [0usize; MAX_FRAMES];
    let n = k.task().stack_trace(&mut frames);
    for line in task_text(k, &frames[..n]).lines() {
        port().console_line(line);
    }
}

/// Print every kernel thread, or only the blocked ones (`D`) when
/// `blocked_only` (Linux `show_state_filter`). Returns how many were shown.
///
/// Context: any context that may allocate.
pub fn show_state(blocked_only: bool) -> usize {
    let p = port();
    p.console_line(if blocked_only { "sysrq: Show Blocked State" } else { "sysrq: Show State" });
    let mut n = 0;
    for k in registry::all() {
        if blocked_only && k.state() != TaskState::DiskSleep {
            continue;
        }
        show_task(&k);
        n += 1;
    }
    n
}

/// Every online CPU prints its own backtrace (Linux key `l`, done here by
/// a cross-CPU call, so a CPU spinning with interrupts off does not
/// answer).
///
/// Context: may sleep.
pub fn show_cpus() {
    let p = port();
    p.console_line("sysrq: Show backtrace of all active CPUs");
    for cpu in p.online_mask().iter() {
        let _ = p.call_on_cpu(
            cpu,
            alloc::boxed::Box::new(move || {
                let p = port();
                p.console_line(&format!("NMI backtrace for cpu {cpu}"));
                p.dump_stack();
            }),
            true,
        );
    }
}

static HANDLED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static LAST_KEY: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Keys acted on since boot, and the last one (`'\0'` before any).
pub fn handled() -> (u64, char) {
    use core::sync::atomic::Ordering;
    let key = char::from_u32(LAST_KEY.load(Ordering::Relaxed)).unwrap_or('\0');
    (HANDLED.load(Ordering::Relaxed), key)
}

/// Act on SysRq key `key`.
///
/// Context: may sleep (key `l` waits for each CPU). Return: `EINVAL` for a
/// key this kernel does not have (after printing the help line, as Linux
/// does).
pub fn handle(key: char) -> Result<()> {
    match key {
        't' => {
            show_state(false);
        }
        'w' => {
            show_state(true);
        }
        'l' => show_cpus(),
        'h' => help(),
        _ => {
            help();
            return Err(Error::new(EINVAL));
        }
    }
    LAST_KEY.store(key as u32, core::sync::atomic::Ordering::Relaxed);
    HANDLED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    Ok(())
}

fn help() {
    port().console_line("sysrq: HELP : show-backtrace-all-active-cpus(l) show-task-states(t) show-blocked-tasks(w)");
}
