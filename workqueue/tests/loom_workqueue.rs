//! Loom model of the workqueue's non-reentrancy protocol: one item, queued
//! from two threads on two pools (two queues), each pool served by its own
//! worker. The model follows the crate's code step for step:
//!
//! * `queue` (`Workqueue::try_queue_on`): claim the pending bit with a
//!   compare-and-swap; only the claimer inserts an entry, under its pool's
//!   lock (`queue_claimed`).
//! * a worker (`process_one_work`): pop an entry under the pool lock; under
//!   the item's run lock, if the item runs anywhere, defer the entry on the
//!   item, else claim the run; only then clear the pending bit; run the item
//!   without locks; afterwards release the run claim and requeue the
//!   deferred entries at the head of their pools (`requeue_front`).
//!
//! Checked for every interleaving up to loom's preemption bound: the item
//! never runs on two workers at once, and it runs exactly once per
//! successful queue (nothing lost, nothing doubled).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p workqueue --test loom_nonreentrancy --release`
//! (`make loom`).
#![cfg(loom)]

use std::collections::VecDeque;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// An entry: which pool it belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    pool: usize,
}

struct RunState {
    running: bool,
    deferred: VecDeque<Entry>,
}

struct Model {
    pending: AtomicBool,
    run: Mutex<RunState>,
    pools: [Mutex<VecDeque<Entry>>; 2],
    /// Workers inside the item's function right now.
    inside: AtomicUsize,
    /// Runs completed.
    runs: AtomicUsize,
    /// Successful queues.
    queued: AtomicUsize,
}

impl Model {
    fn new() -> Arc<Self> {
        Arc::new(Model {
            pending: AtomicBool::new(false),
            run: Mutex::new(RunState { running: false, deferred: VecDeque::new() }),
            pools: [Mutex::new(VecDeque::new()), Mutex::new(VecDeque::new())],
            inside: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
        })
    }

    /// `queue_work_on` a pool.
    fn queue(&self, pool: usize) {
        if self.pending.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.queued.fetch_add(1, Ordering::SeqCst);
            self.pools[pool].lock().unwrap().push_back(Entry { pool });
        }
    }

    /// One step of pool `pool`'s worker: false if it found nothing to do.
    fn work_once(&self, pool: usize) -> bool {
        let e = self.pools[pool].lock().unwrap().pop_front();
        let Some(e) = e else { return false };
        {
            let mut r = self.run.lock().unwrap();
            if r.running {
                r.deferred.push_back(e);
                return true;
            }
            r.running = true;
        }
        self.pending.store(false, Ordering::Release);
        // The item's function.
        assert_eq!(self.inside.fetch_add(1, Ordering::SeqCst), 0, "the item runs on two workers at once");
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.inside.fetch_sub(1, Ordering::SeqCst);
        let deferred = {
            let mut r = self.run.lock().unwrap();
            r.running = false;
            std::mem::take(&mut r.deferred)
        };
        for d in deferred.into_iter().rev() {
            self.pools[d.pool].lock().unwrap().push_front(d);
        }
        true
    }

    /// Run every pool until nothing is left (after the racing threads end).
    fn drain(&self) {
        while self.work_once(0) || self.work_once(1) {}
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

#[test]
fn requeue_on_another_pool_while_running_never_overlaps() {
    model(|| {
        let m = Model::new();
        m.queue(0);
        // Worker of pool 0 runs the item while another thread requeues it
        // on pool 1, whose worker tries to run it.
        let w0 = {
            let m = m.clone();
            thread::spawn(move || {
                m.work_once(0);
            })
        };
        let q = {
            let m = m.clone();
            thread::spawn(move || {
                m.queue(1);
                m.work_once(1);
            })
        };
        w0.join().unwrap();
        q.join().unwrap();
        m.drain();
        assert_eq!(m.runs.load(Ordering::SeqCst), m.queued.load(Ordering::SeqCst), "runs vs successful queues");
        assert!(!m.pending.load(Ordering::SeqCst), "left pending with nothing queued");
    });
}

#[test]
fn two_queuers_two_workers() {
    model(|| {
        let m = Model::new();
        let a = {
            let m = m.clone();
            thread::spawn(move || {
                m.queue(0);
                m.work_once(0);
                m.queue(1);
            })
        };
        let b = {
            let m = m.clone();
            thread::spawn(move || {
                m.queue(1);
                m.work_once(1);
                m.work_once(0);
            })
        };
        a.join().unwrap();
        b.join().unwrap();
        m.drain();
        assert_eq!(m.runs.load(Ordering::SeqCst), m.queued.load(Ordering::SeqCst), "runs vs successful queues");
        assert!(!m.pending.load(Ordering::SeqCst));
    });
}
