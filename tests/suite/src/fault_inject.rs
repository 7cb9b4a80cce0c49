//! Suite `fault_inject`: Linux's fault-injection knobs (`kport::fault`) on
//! kthread creation, sleeping frame allocations and block requests; the
//! `block` case is registered in that suite, which gets the disks.
//!
//! Every case filters on this file's call sites, so a kworker or a page
//! cache allocation elsewhere in the kernel meanwhile never takes an
//! injected failure meant for the case, and puts every attribute back to
//! inert at its end.

use alloc::format;
use alloc::vec::Vec;

use kport::fault::{self, FAIL_KTHREAD_CREATE, FAIL_MAKE_REQUEST, FAIL_PAGE_ALLOC, FaultAttr};
use kport::{EIO, ENOMEM};
use kthreadd::kthread::{Builder, Kthread};
use kthreadd::registry;

use crate::{Failure, check, check_eq, err, ktest};

/// Inert attributes again when the case ends, however it ends.
struct Inert;

impl Drop for Inert {
    fn drop(&mut self) {
        fault::reset_all();
    }
}

/// `attr` armed for this file's call sites only.
fn arm(attr: &FaultAttr, interval: i64, probability: i64, space: i64, times: i64) -> Result<Inert, Failure> {
    fault::reset_all();
    attr.set_filter("fault_inject.rs").map_err(err("filter"))?;
    attr.configure(interval, probability, space, times).map_err(err("configure"))?;
    attr.verbose.set(0).map_err(err("verbose"))?;
    Ok(Inert)
}

/// Try to create `n` threads; which tries failed (with `ENOMEM`), the
/// threads made (stopped at once).
fn creates(n: usize) -> Result<Vec<bool>, Failure> {
    let mut failed = Vec::new();
    let mut made: Vec<Kthread> = Vec::new();
    for i in 0..n {
        match Builder::new(format_args!("fi-{i}"), || 0).create() {
            Ok(k) => {
                made.push(k);
                failed.push(false);
            }
            Err(e) if e.errno == ENOMEM => failed.push(true),
            Err(e) => return Err(Failure::Fail(format!("create {i}: {e:?}, not ENOMEM"))),
        }
    }
    for k in made {
        // Never woken: its stop is EINTR (Linux's rule), and it is gone.
        check_eq!(k.stop().map_err(|e| e.errno), Err(kport::EINTR), "stop of a thread never woken");
    }
    Ok(failed)
}

fn live_threads() -> usize {
    registry::all().iter().filter(|k| !k.has_exited()).count()
}

ktest!(fault_inject::times_limits_the_failures_and_nothing_leaks => |ctx| {
    let _inert = arm(&FAIL_KTHREAD_CREATE, 1, 100, 0, 2)?;
    let before = (FAIL_KTHREAD_CREATE.injected(), live_threads());
    let failed = creates(4)?;
    check_eq!(failed, alloc::vec![true, true, false, false]);
    check_eq!(FAIL_KTHREAD_CREATE.injected() - before.0, 2);
    check_eq!(FAIL_KTHREAD_CREATE.times.get(), 0, "times counts down to 0");
    check_eq!(live_threads(), before.1, "a failed create left a thread");
    let _ = ctx;
    Ok(())
});

ktest!(fault_inject::interval_fails_every_nth_call => |ctx| {
    let _inert = arm(&FAIL_KTHREAD_CREATE, 3, 100, 0, -1)?;
    let failed = creates(9)?;
    let at: Vec<usize> = failed.iter().enumerate().filter(|(_, f)| **f).map(|(i, _)| i + 1).collect();
    check_eq!(at, alloc::vec![3, 6, 9]);
    check_eq!(FAIL_KTHREAD_CREATE.times.get(), -1, "-1 never counts down");
    let _ = ctx;
    Ok(())
});

ktest!(fault_inject::space_lets_the_first_calls_pass => |ctx| {
    let _inert = arm(&FAIL_KTHREAD_CREATE, 1, 100, 2, 1)?;
    check_eq!(creates(4)?, alloc::vec![false, false, true, false]);
    let _ = ctx;
    Ok(())
});

ktest!(fault_inject::probability_fails_that_share_of_calls => |ctx| {
    let _inert = arm(&FAIL_KTHREAD_CREATE, 1, 30, 0, -1)?;
    let failed = creates(200)?.iter().filter(|f| **f).count();
    // 30 % of 200 is 60; a binomial spread of 4 standard deviations (26).
    check!((34..=86).contains(&failed), "{failed} of 200 failed at probability 30");
    let _ = ctx;
    Ok(())
});

ktest!(fault_inject::the_call_site_filter_spares_other_callers => |ctx| {
    let _inert = arm(&FAIL_KTHREAD_CREATE, 1, 100, 0, -1)?;
    FAIL_KTHREAD_CREATE.set_filter("no_such_file.rs").map_err(err("filter"))?;
    check_eq!(creates(3)?, alloc::vec![false, false, false]);
    check_eq!(FAIL_KTHREAD_CREATE.set_filter(&"x".repeat(fault::FILTER_LEN + 1)).map_err(|e| e.errno), Err(kport::EINVAL));
    let _ = ctx;
    Ok(())
});

ktest!(fault_inject::boot_words_and_settings => |ctx| {
    let _inert = Inert;
    fault::reset_all();
    check_eq!(fault::apply_boot_word("fail_kthread_create=2,100,0,5"), Some(Ok(())));
    check_eq!(
        (FAIL_KTHREAD_CREATE.interval.get(), FAIL_KTHREAD_CREATE.probability.get(), FAIL_KTHREAD_CREATE.times.get()),
        (2, 100, 5)
    );
    check_eq!(kport::sysctl::get("debug.fail_kthread_create.times").map_err(err("get"))?, 5);
    check_eq!(fault::apply_boot_word("seed=4"), None);
    let bad = fault::apply_boot_word("fail_make_request=1,101,0,1");
    check!(matches!(&bad, Some(Err(m)) if m.contains("fail_make_request")), "{bad:?}");
    check!(matches!(fault::apply_boot_word("fail_page_alloc=1,2"), Some(Err(_))));
    check_eq!(FAIL_MAKE_REQUEST.probability.get(), 0, "a refused word changes nothing");
    kport::sysctl::set("debug.fail_page_alloc.ignore_gfp_wait", "0").map_err(err("set"))?;
    check_eq!(fault::FAIL_PAGE_ALLOC_IGNORE_GFP_WAIT.get(), 0);
    let _ = ctx;
    Ok(())
});

ktest!(fault_inject::fail_page_alloc_fails_a_sleeping_allocation_without_reclaim => |ctx| {
    let _inert = arm(&FAIL_PAGE_ALLOC, 1, 100, 0, 1)?;
    // Linux's default ignore-gfp-wait: sleeping allocations are spared.
    let mut tries = 0;
    check!(kport::mm::alloc_slowpath(1, |_| { tries += 1; Some(()) }).is_ok());
    check_eq!((tries, FAIL_PAGE_ALLOC.times.get()), (1, 1));
    fault::FAIL_PAGE_ALLOC_IGNORE_GFP_WAIT.set(0).map_err(err("ignore_gfp_wait"))?;
    let before = kport::mm::stats();
    let mut tries = 0;
    let r = kport::mm::alloc_slowpath(1, |_| { tries += 1; Some(()) });
    check_eq!(r.map_err(|e| e.errno), Err(ENOMEM));
    check_eq!(tries, 0, "the allocator was tried");
    let after = kport::mm::stats();
    check_eq!((after.allocstall, after.oom), (before.allocstall, before.oom), "direct reclaim or an OOM report ran");
    // The one failure is used: the next allocation goes through.
    check!(kport::mm::alloc_slowpath(1, |_| Some(())).is_ok());
    let _ = ctx;
    Ok(())
});

ktest!(block::fail_make_request_ends_a_read_with_eio_and_the_next_one_reads => |ctx| {
    let dev = crate::block::disk(ctx, "kblk-main")?;
    let _inert = arm(&FAIL_MAKE_REQUEST, 1, 100, 0, 1)?;
    let errors = dev.stats().errors;
    let r = dev.read(0, 4096);
    check_eq!(r.map(|_| ()).map_err(|e| e.errno), Err(EIO));
    check_eq!(dev.stats().errors, errors + 1, "the error is counted");
    let buf = dev.read(0, 4096).map_err(err("read after"))?;
    crate::block::holds_pattern(buf.as_slice(), 0)?;
    check_eq!(dev.stats().errors, errors + 1);
    Ok(())
});
