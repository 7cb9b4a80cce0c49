//! The workqueue lockup watchdog (Linux `wq_watchdog_timer_fn`): a pool
//! with pending items that made no progress for the threshold is reported
//! with its CPU, the item it is stuck behind, and for how long.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use kport::sync::SpinLock;
use kport::{PortTimer, port};

use crate::WATCHDOG_THRESH_NS;
use crate::pool::{Pool, PoolState, all_pools};

static THRESH: AtomicU64 = AtomicU64::new(WATCHDOG_THRESH_NS);
static REPORTS: AtomicU64 = AtomicU64::new(0);
static LAST: SpinLock<Option<String>> = SpinLock::ranked("lockup report", crate::RANK_LEAF, None);
static TIMER: spin::Once<alloc::boxed::Box<dyn PortTimer>> = spin::Once::new();

/// Set the lockup threshold (Linux `workqueue.watchdog_thresh`); the check
/// runs every quarter of it.
pub fn set_watchdog_thresh_ns(ns: u64) {
    THRESH.store(ns.max(1_000_000), Ordering::Relaxed);
    if let Some(t) = TIMER.get() {
        t.arm(port().now_ns() + check_interval(), Some(0));
    }
}

/// The lockup threshold.
pub fn watchdog_thresh_ns() -> u64 {
    THRESH.load(Ordering::Relaxed)
}

fn check_interval() -> u64 {
    watchdog_thresh_ns() / 4
}

/// Lockups reported so far.
pub fn lockup_reports() -> u64 {
    REPORTS.load(Ordering::Relaxed)
}

/// The text of the last lockup report: the `BUG:` line, then the stuck
/// pool's line and one line per worker (see `pool_state`).
pub fn last_lockup_report() -> Option<String> {
    LAST.lock().clone()
}

fn check() {
    let now = port().now_ns();
    let thresh = watchdog_thresh_ns();
    for pool in all_pools() {
        let report = {
            let st = pool.st.lock();
            // Progress since the last look: its time is taken as now, at
            // most a check interval (a quarter of the threshold) after it
            // happened, so a stall is reported between the threshold and
            // 1.25 times it after the pool's last progress, as Linux's.
            let progress = pool.progress.load(Ordering::Relaxed);
            if progress != pool.watchdog_seen.load(Ordering::Relaxed) {
                pool.watchdog_seen.store(progress, Ordering::Relaxed);
                pool.watchdog_ts.store(now, Ordering::Relaxed);
                continue;
            }
            if st.worklist.is_empty() {
                continue;
            }
            let ts = pool.watchdog_ts.load(Ordering::Relaxed);
            if now < ts + thresh {
                continue;
            }
            let first = st.worklist.front().map(|e| e.work.name);
            let running: String = st
                .busy
                .iter()
                .map(|b| {
                    let since = crate::pool::stamp(&b.worker.started_at, now);
                    format!(" {} (for {} ms)", b.cur.work.name, now.saturating_sub(since) / 1_000_000)
                })
                .collect();
            let line = format!(
                "BUG: workqueue lockup - pool {} (id {}) stuck for {}.{}s! first pending: {}; running:{}",
                pool.label(),
                pool.id,
                (now - ts) / 1_000_000_000,
                (now - ts) / 100_000_000 % 10,
                first.unwrap_or("-"),
                if running.is_empty() { String::from(" -") } else { running }
            );
            (line, pool_state(&pool, &st, (now - ts) / 1_000_000_000))
        };
        let (report, state) = report;
        REPORTS.fetch_add(1, Ordering::Relaxed);
        port().console_line(&format!("# {report}"));
        let mut text = report;
        for l in state {
            port().console_line(&format!("# {l}"));
            text.push('\n');
            text.push_str(&l);
        }
        *LAST.lock() = Some(text);
        // Report a stuck pool once per threshold, not at every check.
        pool.watchdog_ts.store(now, Ordering::Relaxed);
    }
}

/// What a lockup report adds about the stuck pool (Linux's
/// `show_one_worker_pool` and the worker lines of `show_one_workqueue`):
/// the pool's line, then one line per worker with its thread's state
/// letter, CPU and allowed CPUs, and the worker's own flags, so a report
/// tells a worker nobody woke from one that cannot get a CPU.
fn pool_state(pool: &Pool, st: &PoolState, hung_s: u64) -> Vec<String> {
    let mut out = Vec::with_capacity(st.workers.len() + 1);
    let idle: String = st.idle.iter().map(|w| format!(" {}", w.name)).collect();
    out.push(format!(
        "pool {}: {}{} nr_running={} hung={}s workers={} manager: {} idle:{}",
        pool.id,
        pool.label(),
        if pool.disassociated.load(Ordering::Acquire) { " disassociated" } else { "" },
        pool.nr_running.load(Ordering::Acquire),
        hung_s,
        st.workers.len(),
        u8::from(st.manager),
        if idle.is_empty() { String::from(" -") } else { idle },
    ));
    for w in &st.workers {
        let thread = match w.task.get() {
            Some(t) => format!("{} cpu={} allowed={:#x}", t.state().letter(), t.cpu(), t.affinity().0),
            None => String::from("? (no thread yet)"),
        };
        out.push(format!(
            "  {}: {} flags={:#x}{}{}{}",
            w.name,
            thread,
            w.flags.load(Ordering::Acquire),
            if w.kicked.load(Ordering::Acquire) { " kicked" } else { "" },
            if w.rebind.load(Ordering::Acquire) { " rebind" } else { "" },
            if w.sleeping.load(Ordering::Acquire) { " sleeping" } else { "" },
        ));
    }
    out
}

/// Start the periodic check.
pub(crate) fn start() {
    let t = TIMER.call_once(|| {
        kport::timers::new(Arc::new(|| {
            check();
            if let Some(t) = TIMER.get() {
                t.arm(port().now_ns() + check_interval(), Some(0));
            }
        }))
    });
    t.arm(port().now_ns() + check_interval(), Some(0));
}
