//! Loom models of the kthread start / stop / park races, over the crate's own
//! control word (`kthreadd::state::Control`, built on loom's atomics under
//! the `loom` feature). Blocking is modelled with loom mutexes and condition
//! variables following the port's protocol (the condition is set before the
//! wake-up, and checked under the sleeper's lock before it waits).
//!
//! Run: `cargo test -p kthreadd --features loom --test loom_kthread --release`
//! (`make loom`).
//!
//! Races checked (every interleaving up to loom's preemption bound):
//! * stop racing with the thread's own exit and with its first wake-up: stop
//!   always returns; the function ran exactly once and stop got its value,
//!   or it never ran and stop got EINTR.
//! * park racing with stop: neither hangs; stop wins (the function returns);
//!   a park that returned Ok left the thread parked or already stopping.
//! * park before the first run: the function does not run until unparked.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use kthreadd::state::{self, Control, FirstRun};

/// The thread's sleep/wake point: a wake-up sets `pending`; the sleeper
/// re-checks its condition under the lock before waiting.
struct Sleeper {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Sleeper {
    fn new() -> Self {
        Sleeper { pending: Mutex::new(false), cv: Condvar::new() }
    }

    fn wake(&self) {
        *self.pending.lock().unwrap() = true;
        self.cv.notify_all();
    }

    fn sleep_until(&self, cond: impl Fn() -> bool) {
        let mut g = self.pending.lock().unwrap();
        while !cond() {
            if *g {
                *g = false;
                continue;
            }
            g = self.cv.wait(g).unwrap();
        }
    }
}

/// A completion (done flag + condition variable).
struct Done {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    fn new() -> Self {
        Done { flag: Mutex::new(false), cv: Condvar::new() }
    }
    fn complete(&self) {
        *self.flag.lock().unwrap() = true;
        self.cv.notify_all();
    }
    fn wait(&self) {
        let mut g = self.flag.lock().unwrap();
        while !*g {
            g = self.cv.wait(g).unwrap();
        }
    }
}

const VALUE: usize = 7;
const NEVER_RAN: usize = usize::MAX;

struct Kt {
    ctl: Control,
    task: Sleeper,
    exited: Done,
    parked: Done,
    /// The exit value (VALUE, or NEVER_RAN).
    exit: AtomicUsize,
    /// How many times the function body ran.
    ran: AtomicUsize,
}

impl Kt {
    fn new() -> Arc<Self> {
        Arc::new(Kt {
            ctl: Control::new(0),
            task: Sleeper::new(),
            exited: Done::new(),
            parked: Done::new(),
            exit: AtomicUsize::new(0),
            ran: AtomicUsize::new(0),
        })
    }

    /// kthread_parkme.
    fn parkme(&self) {
        while self.ctl.should_stay_parked() {
            self.ctl.set(state::PARKED);
            self.parked.complete();
            self.task.sleep_until(|| !self.ctl.should_stay_parked());
        }
        self.ctl.clear(state::PARKED);
    }

    /// The thread: waits for its first wake-up, then kthread()'s body with a
    /// function that loops until asked to stop, honouring parks.
    fn thread_main(&self) {
        self.task.sleep_until(|| self.ctl.has(state::WOKEN));
        let v = match self.ctl.first_run() {
            FirstRun::StoppedBeforeRun => NEVER_RAN,
            FirstRun::RunFn => {
                self.parkme();
                self.ran.fetch_add(1, Ordering::SeqCst);
                loop {
                    if self.ctl.has(state::SHOULD_STOP) {
                        break;
                    }
                    self.parkme();
                    self.task.sleep_until(|| self.ctl.has(state::SHOULD_STOP) || self.ctl.should_stay_parked());
                }
                VALUE
            }
        };
        self.exit.store(v, Ordering::SeqCst);
        self.ctl.set(state::EXITED);
        self.exited.complete();
        self.parked.complete();
    }

    /// wake_up_process.
    fn wake(&self) {
        self.ctl.claim_first_wake();
        self.task.wake();
    }

    /// kthread_stop: returns the exit value.
    fn stop(&self) -> usize {
        self.ctl.set(state::SHOULD_STOP);
        self.ctl.clear(state::SHOULD_PARK);
        self.wake();
        self.exited.wait();
        self.exit.load(Ordering::SeqCst)
    }

    /// kthread_park: Ok if parked, Err if it exited or a park was pending.
    fn park(&self) -> Result<(), ()> {
        self.ctl.request_park().map_err(|_| ())?;
        self.wake();
        self.parked.wait();
        if self.ctl.has(state::EXITED) { Err(()) } else { Ok(()) }
    }

    fn unpark(&self) {
        self.ctl.clear(state::SHOULD_PARK);
        self.task.wake();
    }
}

fn check_exit(k: &Kt, got: usize) {
    match got {
        VALUE => assert_eq!(
            k.ran.load(Ordering::SeqCst),
            1,
            "stop returned the value but the function ran {} times",
            k.ran.load(Ordering::SeqCst)
        ),
        NEVER_RAN => assert_eq!(k.ran.load(Ordering::SeqCst), 0, "EINTR although the function ran"),
        other => panic!("stop returned {other}"),
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
fn stop_races_first_wake_and_exit() {
    model(|| {
        let k = Kt::new();
        let t = {
            let k = k.clone();
            thread::spawn(move || k.thread_main())
        };
        let w = {
            let k = k.clone();
            thread::spawn(move || k.wake())
        };
        let got = k.stop();
        check_exit(&k, got);
        w.join().unwrap();
        t.join().unwrap();
        assert!(k.ctl.has(state::EXITED));
    });
}

#[test]
fn stop_of_a_never_woken_thread_is_eintr() {
    model(|| {
        let k = Kt::new();
        let t = {
            let k = k.clone();
            thread::spawn(move || k.thread_main())
        };
        assert_eq!(k.stop(), NEVER_RAN);
        assert_eq!(k.ran.load(Ordering::SeqCst), 0);
        t.join().unwrap();
    });
}

#[test]
fn park_races_stop_and_stop_wins() {
    model(|| {
        let k = Kt::new();
        k.wake();
        let t = {
            let k = k.clone();
            thread::spawn(move || k.thread_main())
        };
        let p = {
            let k = k.clone();
            thread::spawn(move || {
                if k.park().is_ok() {
                    // Parked, unless the stop already got in: then it is on
                    // its way out.
                    assert!(k.ctl.has(state::PARKED) || k.ctl.has(state::SHOULD_STOP));
                }
            })
        };
        let got = k.stop();
        check_exit(&k, got);
        p.join().unwrap();
        t.join().unwrap();
    });
}

#[test]
fn park_before_first_run_holds_the_function() {
    model(|| {
        let k = Kt::new();
        let t = {
            let k = k.clone();
            thread::spawn(move || k.thread_main())
        };
        k.park().expect("park of a fresh thread");
        assert_eq!(k.ran.load(Ordering::SeqCst), 0, "the function ran while parked");
        k.unpark();
        let got = k.stop();
        check_exit(&k, got);
        t.join().unwrap();
    });
}
