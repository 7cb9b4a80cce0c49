//! Entry points for the loom models (feature `loom`, `make loom`): the
//! crate's own pools, queues and worker step, with model threads in the
//! place of worker threads.
//!
//! A model creates per-CPU pools without threads ([`init_pools`]), queues
//! made with the ordinary [`crate::Workqueue`] API, and [`ModelWorker`]s
//! whose [`ModelWorker::step`] is what a worker thread does with one entry:
//! the scheduled list first, then one worklist entry through the real
//! `process_one_work` (non-reentrancy hand-off, run claim, deferral,
//! requeue, flush accounting), then the scheduled list again. Only creating
//! workers and sleeping are left out; the port is `kport::loom_port`.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicUsize, Ordering};
use kport::CpuMask;
use kport::sync::SpinLock;

use crate::pool::{self, Pool, Worker, wf};

/// Every model worker of the current iteration.
static WORKERS: SpinLock<Vec<Arc<Worker>>> = SpinLock::new(Vec::new());
/// Model workers inside [`ModelWorker::step`] (an instance may be in their
/// hands between two lists).
static IN_STEP: AtomicUsize = AtomicUsize::new(0);

/// Forget the pools and queues of the previous model iteration (loom runs
/// the model many times in one process; the registries are statics).
pub fn reset() {
    kport::loom_port::install_loom_port();
    WORKERS.lock().clear();
    IN_STEP.store(0, Ordering::SeqCst);
    pool::model_reset();
    crate::wq::model_reset();
}

/// Per-CPU pools (normal and high priority) for `cpus` CPUs, without
/// workers; the mock port is told the CPU count.
pub fn init_pools(cpus: usize) {
    let port = kport::loom_port::install_loom_port();
    port.set_cpu_count(cpus);
    for cpu in 0..cpus {
        for highpri in [false, true] {
            pool::model_add_pool(cpu, highpri, CpuMask::one(cpu));
        }
    }
}

/// A model thread acting as a worker of one pool.
pub struct ModelWorker {
    pool: Arc<Pool>,
    worker: Arc<Worker>,
}

impl ModelWorker {
    /// A worker of `cpu`'s normal pool.
    pub fn new(cpu: usize) -> ModelWorker {
        let pool = pool::percpu_pool(cpu, false).expect("init_pools first");
        let worker = Worker::new(String::from("model"), wf::PREP, Some(pool.clone()));
        WORKERS.lock().push(worker.clone());
        ModelWorker { pool, worker }
    }

    /// Run what a worker runs for one worklist entry; false if there was
    /// nothing to do. Call from the model thread that plays this worker
    /// (after `kport::loom_port::LoomPort::set_cpu` to the pool's CPU).
    pub fn step(&self) -> bool {
        IN_STEP.fetch_add(1, Ordering::SeqCst);
        let (pool, w) = (&*self.pool, &self.worker);
        let mut st = pool.st.lock();
        st = pool::process_scheduled(pool, w, st, false);
        let ran = match st.worklist.pop_front() {
            Some(e) => {
                st = pool::process_one_work(pool, w, st, e, false);
                drop(pool::process_scheduled(pool, w, st, false));
                true
            }
            None => false,
        };
        IN_STEP.fetch_sub(1, Ordering::SeqCst);
        ran
    }
}

/// Is nothing queued, running or handed over in any pool (the items'
/// own pending bits aside)? An instance deferred on an item waits only
/// while that item runs, so a busy worker shows it.
pub fn quiescent() -> bool {
    if IN_STEP.load(Ordering::SeqCst) != 0 {
        return false;
    }
    let pools: Vec<Arc<Pool>> = pool::all_pools();
    let workers: Vec<Arc<Worker>> = WORKERS.lock().clone();
    pools.iter().all(|p| {
        let st = p.st.lock();
        st.worklist.is_empty()
            && st.busy.is_empty()
            && workers
                .iter()
                .filter(|w| w.pool.as_ref().is_some_and(|wp| Arc::ptr_eq(wp, p)))
                .all(|w| w.st.borrow_mut(st.held()).scheduled.is_empty())
    })
}

/// Is an instance of `w` pending, read with a read-modify-write: always
/// the latest value, where a plain load may, under loom, return an older
/// one when the hand-over that ordered it went through a lock word loom
/// does not see.
pub fn is_pending_latest(w: &crate::Work) -> bool {
    w.0.state.fetch_add(0, kport::sync::atomic::Ordering::AcqRel) & crate::work::PENDING != 0
}
