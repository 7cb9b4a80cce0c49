//! Loom models of the workqueue, running the crate's own code: real queues
//! (`Workqueue::queue_on`, `Work::flush`, `Work::cancel_sync`) and real
//! pools whose entries model threads run through the crate's own
//! `process_one_work` (`workqueue::model`), over loom's atomics (the crate's
//! protocol atomics under the `loom` feature) and a mock port whose
//! blocking is loom's (`kport::loom_port`).
//!
//! Checked for every interleaving up to the preemption bound:
//! * non-reentrancy and exactly-once, with the item queued on two queues
//!   from two CPUs at once (the run claim and the deferred instances);
//! * the in-pool hand-off: an item that requeues itself while two workers
//!   of one pool run runs again on the worker that runs it, never on both;
//! * `flush` returns only after the instance queued before it ran;
//! * `cancel_sync` racing a worker: the item ran exactly once or the cancel
//!   reported it pending, and it is not running when `cancel_sync` returns.
//!
//! Run: `cargo test -p workqueue --features loom --test loom_workqueue --release`
//! (`make loom`; `LOOM_MAX_PREEMPTIONS` bounds the search, 3 by default).

use std::sync::Arc;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

use kport::loom_port::install_loom_port;
use workqueue::model::{self, ModelWorker};
use workqueue::{Work, Workqueue, WqFlags};

/// What the item records: how many run it right now, and runs so far.
struct Probe {
    inside: AtomicUsize,
    runs: AtomicUsize,
}

impl Probe {
    fn new() -> Arc<Probe> {
        Arc::new(Probe { inside: AtomicUsize::new(0), runs: AtomicUsize::new(0) })
    }

    fn item(self: &Arc<Self>) -> Work {
        let me = self.clone();
        Work::named("probe", move || me.run())
    }

    fn run(&self) {
        let n = self.inside.fetch_add(1, Ordering::SeqCst);
        assert_eq!(n, 0, "the item runs on two workers at once");
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }

    /// Runs so far. A read-modify-write, which always reads the latest
    /// value: the hand-over that orders the run before the reader may go
    /// through the crate's locks, whose words loom does not see.
    fn runs(&self) -> usize {
        self.runs.fetch_add(0, Ordering::SeqCst)
    }
}

/// The crate's registries are statics: one model at a time per process.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Executions explored, printed after each model (a model that explores
/// one path checks little).
static EXECUTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn check(f: impl Fn() + Sync + Send + 'static) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    EXECUTIONS.store(0, std::sync::atomic::Ordering::Relaxed);
    let f = move || {
        EXECUTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    };
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    // Idle model workers poll (yield) while others make progress.
    b.max_branches = 20_000;
    b.check(f);
    println!("loom: {} executions", EXECUTIONS.load(std::sync::atomic::Ordering::Relaxed));
}

/// Set the model up: fresh registries, `cpus` pools, and the calling
/// thread on CPU 0.
fn setup(cpus: usize) {
    model::reset();
    model::init_pools(cpus);
    install_loom_port().set_cpu(0);
}

/// Play a worker of `cpu`'s pool until every queuer is through (`queuers_done()`),
/// `item` is no longer pending and nothing is left to run. An instance
/// that is pending while no pool holds or runs anything is lost: that
/// fails the model at once.
fn work_until(w: &ModelWorker, cpu: usize, item: &Work, queuers_done: impl Fn() -> bool) {
    install_loom_port().set_cpu(cpu);
    loop {
        if w.step() {
            continue;
        }
        if queuers_done() && model::quiescent() {
            // Nothing queued or running anywhere: a pending bit now would
            // belong to an instance that no list holds.
            assert!(!model::is_pending_latest(item), "an instance was lost: pending, but no pool holds or runs it");
            return;
        }
        thread::yield_now();
    }
}

fn bound_queue(name: &str) -> Workqueue {
    Workqueue::new(name, WqFlags::empty(), 0).expect("queue")
}

#[test]
fn non_reentrant_and_exactly_once_across_queues() {
    check(|| {
        setup(2);
        let (a, b) = (bound_queue("a"), bound_queue("b"));
        let probe = Probe::new();
        let item = probe.item();
        let queued = Arc::new(AtomicUsize::new(0));
        let tried = Arc::new(AtomicUsize::new(0));
        // Each thread queues the item on its queue and CPU, then plays that
        // CPU's worker until both have queued and nothing is left.
        let side = |q: Workqueue, cpu: usize, item: Work, queued: Arc<AtomicUsize>, tried: Arc<AtomicUsize>| {
            install_loom_port().set_cpu(cpu);
            if q.queue_on(cpu, &item) {
                queued.fetch_add(1, Ordering::SeqCst);
            }
            tried.fetch_add(1, Ordering::SeqCst);
            let w = ModelWorker::new(cpu);
            work_until(&w, cpu, &item, || tried.fetch_add(0, Ordering::SeqCst) == 2);
        };
        let (it, qd, tr) = (item.clone(), queued.clone(), tried.clone());
        let other = thread::spawn(move || side(b, 1, it, qd, tr));
        side(a, 0, item, queued.clone(), tried);
        other.join().unwrap();
        assert_eq!(probe.runs(), queued.fetch_add(0, Ordering::SeqCst), "every successful queue ran exactly once");
    });
}

#[test]
fn requeue_while_running_is_handed_to_the_running_worker() {
    check(|| {
        setup(1);
        let q = bound_queue("self");
        let probe = Probe::new();
        let requeued = Arc::new(AtomicBool::new(false));
        let (p2, r2, q2) = (probe.clone(), requeued.clone(), q.clone());
        let me: Arc<std::sync::OnceLock<Work>> = Arc::new(std::sync::OnceLock::new());
        let me2 = me.clone();
        let item = Work::named("self-requeue", move || {
            p2.run();
            // Once: queue itself again while it runs.
            if !r2.swap(true, Ordering::SeqCst) {
                assert!(q2.queue_on(0, me2.get().unwrap()), "requeue while running");
            }
        });
        me.set(item.clone()).ok().unwrap();
        assert!(q.queue_on(0, &item));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (p, it) = (probe.clone(), item.clone());
                thread::spawn(move || {
                    let w = ModelWorker::new(0);
                    work_until(&w, 0, &it, || p.runs() == 2);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(probe.runs(), 2, "queued twice, ran twice");
    });
}

#[test]
fn flush_returns_after_the_instance_queued_before_it() {
    check(|| {
        setup(1);
        let q = bound_queue("flush");
        let probe = Probe::new();
        let item = probe.item();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, it) = (stop.clone(), item.clone());
        let worker = thread::spawn(move || {
            let w = ModelWorker::new(0);
            work_until(&w, 0, &it, || st.load(Ordering::SeqCst));
        });
        // A second queuer races the flush (a later instance may or may not
        // be the one flushed; the first must have run).
        let (q2, it2) = (q.clone(), item.clone());
        let requeuer = thread::spawn(move || {
            q2.queue_on(0, &it2);
        });
        // Either ours is the pending instance, or the other queuer's was
        // pending when ours was refused: flush waits for that one (or it
        // has run already).
        let mine = q.queue_on(0, &item);
        item.flush();
        assert!(probe.runs() >= 1, "flush returned before the queued instance ran (queued by us: {mine})");
        requeuer.join().unwrap();
        stop.store(true, Ordering::SeqCst);
        worker.join().unwrap();
    });
}

#[test]
fn cancel_sync_races_a_worker() {
    check(|| {
        setup(1);
        let q = bound_queue("cancel");
        let probe = Probe::new();
        let item = probe.item();
        assert!(q.queue_on(0, &item));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, it) = (stop.clone(), item.clone());
        let worker = thread::spawn(move || {
            let w = ModelWorker::new(0);
            work_until(&w, 0, &it, || st.load(Ordering::SeqCst));
        });
        let was_pending = item.cancel_sync();
        assert_eq!(probe.inside.fetch_add(0, Ordering::SeqCst), 0, "still running after cancel_sync");
        stop.store(true, Ordering::SeqCst);
        worker.join().unwrap();
        assert_eq!(probe.runs() + usize::from(was_pending), 1, "ran exactly once or reported cancelled");
    });
}
