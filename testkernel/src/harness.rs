//! Glue between the testkernel and the in-guest harness (`ktests`): parse the
//! command line, pick the preemption model, run the suite in a kernel thread
//! and exit QEMU with its verdict.

use alloc::boxed::Box;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, Ordering};

use kport::{CpuMask, Priority, SpawnSpec, port};
use ktests::Args;

use crate::{bootinfo::BootInfo, exit, kprintln, mem, percpu, sched};

static STARTED: AtomicBool = AtomicBool::new(false);

/// Parse the command line and start the suite. On bad input print one
/// error line and exit with the fail code.
pub fn start(cmdline: &str, bi: &BootInfo) {
    let args = match Args::parse(cmdline, &[]) {
        Ok(a) => a,
        Err(e) => {
            kprintln!("# ktest: error: {e}");
            exit::exit_qemu(false);
        }
    };
    sched::set_preempt_full(args.preempt_full);
    let mem_mib: u64 = bi.memmap().iter().filter(|e| e.kind == 1).map(|e| e.size).sum::<u64>() >> 20;
    kprintln!(
        "# ktest: testkernel cpus={} preempt={} mem_mib={} tsc_mhz={} frames_free={}",
        percpu::cpus_up(),
        if args.preempt_full { "full" } else { "none" },
        mem_mib,
        crate::time::tsc_hz() / 1_000_000,
        mem::frames::counters().free
    );
    STARTED.store(true, Ordering::Release);
    let t = port()
        .spawn(SpawnSpec {
            name: String::from("ktest"),
            entry: Box::new(move || {
                // Initialisation that sleeps (creating workers through
                // kthreadd) runs here, in a kernel thread, as Linux runs it
                // in kernel_init: never in an idle context.
                if let Err(e) = workqueue::init() {
                    kprintln!("# ktest: error: cannot start the workqueues: {e:?}");
                    exit::exit_qemu(false);
                }
                let ok = ktests::harness::run(&args);
                exit::exit_qemu(ok);
            }),
            affinity: CpuMask::ALL,
            priority: Priority::Normal,
            data: None,
            worker_hooks: false,
        })
        .expect("cannot spawn the test harness thread");
    t.wake();
}

/// Report the running test on the fatal path (panic, exception).
pub fn report_fatal(reason: &str) {
    if STARTED.load(Ordering::Acquire) {
        ktests::harness::report_fatal(reason);
    }
}
