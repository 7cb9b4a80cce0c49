//! Faults on purpose, for the runner's own tests (`fault=` on the command
//! line selects the `fault` suite): each must end the run with a failing
//! exit and a report the runner can check.

use alloc::boxed::Box;
use core::hint::black_box;

use kport::port;
use ktests::{fail, ktest};

/// An address nothing maps: in the direct map's slot, past the 4 GiB mapped.
const UNMAPPED: u64 = crate::mem::PHYS_OFFSET + (64 << 30);

#[inline(never)]
fn touch_unmapped() -> u64 {
    // SAFETY: deliberately unsound: the page fault it causes is the point.
    unsafe { (black_box(UNMAPPED) as *const u64).read_volatile() }
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let buf = black_box([depth; 64]);
    if depth == u64::MAX {
        return 0;
    }
    black_box(recurse(depth + 1)) + buf[(depth % 64) as usize]
}

ktest!(fault::trigger [explicit = true] => |ctx| {
    match ctx.args.fault.as_deref() {
        Some("page") => {
            black_box(touch_unmapped());
        }
        Some("stack") => {
            black_box(recurse(0));
        }
        Some("hang") => loop {
            port().cond_resched();
            core::hint::spin_loop();
        },
        Some("panic") => panic!("fault=panic was requested"),
        Some("lockup") => {
            // Every CPU spins with interrupts off: not even the watchdog can
            // run, so only the runner's own time-out ends this.
            let p = port();
            for c in 0..p.cpu_count() {
                if c != p.cpu_id() {
                    let _ = p.call_on_cpu(c, Box::new(|| loop { core::hint::spin_loop() }), false);
                }
            }
            crate::arch::cpu::cli();
            loop {
                core::hint::spin_loop();
            }
        }
        _ => {}
    }
    fail("the requested fault did not happen")
});
