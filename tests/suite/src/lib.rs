//! The in-guest test suite and its KTAP harness.
//!
//! Test cases register themselves with [`ktest!`] (a static in the
//! `ktest_cases` link section; there is no central list), grouped in suites.
//! [`harness::run`] selects suites from the command line, runs each case in
//! its own kernel thread under a watchdog, and prints KTAP version 1 as Linux
//! KUnit does. Everything goes through the port, so the same suite runs on the
//! testkernel, inside Redox, and on the host port.
//!
//! Benchmarks are cases with `bench = true`; they print `# bench:` lines and
//! assert nothing about time.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod args;
pub mod bench;
pub mod bench_scale;
pub mod bh_workqueue;
pub mod block;
pub mod fault_inject;
pub mod harness;
pub mod hotplug;
pub mod kswapd;
pub mod kthread;
pub mod kthread_worker;
pub mod leak;
pub mod leak_demo;
pub mod might_sleep;
pub mod misuse;
pub mod observe;
pub mod observe_ps;
pub mod observe_trace;
pub mod pagecache;
pub mod port_api;
pub mod restart;
pub mod rng;
pub mod softirq;
pub mod threaded_irq;
pub mod torture;
pub mod workqueue;
pub mod wq_api;
pub mod wq_conformance;
pub mod writeback;

use alloc::string::String;

pub use args::Args;

/// Why a case did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The case failed; the message says why and where.
    Fail(String),
    /// The case does not apply here (e.g. too few CPUs).
    Skip(String),
}

/// What a case returns.
pub type TestResult = Result<(), Failure>;

/// One registered case.
#[derive(Debug)]
pub struct TestCase {
    /// Suite name (KTAP subtest).
    pub suite: &'static str,
    /// Case name.
    pub name: &'static str,
    /// Is it a benchmark (run only with `bench=only|also`)?
    pub bench: bool,
    /// Fewest CPUs it needs (skipped below).
    pub min_cpus: usize,
    /// Watchdog in seconds (0: the command line's `timeout`).
    pub timeout_s: u32,
    /// Runs only when its suite is named in `tests=` (deliberate faults).
    pub explicit: bool,
    /// Makes `might_sleep` reports on purpose (otherwise a report during the
    /// case fails it).
    pub may_report: bool,
    /// The case.
    pub func: fn(&mut Ctx) -> TestResult,
}

impl TestCase {
    /// A plain test case with default settings.
    pub const fn new(suite: &'static str, name: &'static str, func: fn(&mut Ctx) -> TestResult) -> Self {
        TestCase { suite, name, bench: false, min_cpus: 1, timeout_s: 0, explicit: false, may_report: false, func }
    }
}

/// What a running case gets.
pub struct Ctx {
    /// The run's seed (from the command line).
    pub seed: u64,
    /// A generator seeded from the run's seed and the case's name.
    pub rng: rng::Rng,
    /// CPUs in the machine.
    pub cpus: usize,
    /// The parsed command line.
    pub args: Args,
}

/// Register a test case:
/// `ktest!(suite::name => |ctx| { ...; Ok(()) });` or, with settings,
/// `ktest!(suite::name [min_cpus = 2, timeout_s = 300] => |ctx| { ... });`.
#[macro_export]
macro_rules! ktest {
    ($suite:ident :: $name:ident $([$($k:ident = $v:expr),* $(,)?])? => |$ctx:ident| $body:block) => {
        const _: () = {
            #[used]
            #[unsafe(link_section = "ktest_cases")]
            static CASE: $crate::TestCase = $crate::TestCase {
                $($($k: $v,)*)?
                ..$crate::TestCase::new(stringify!($suite), stringify!($name), {
                    #[allow(unused_variables, unused_mut)]
                    fn case($ctx: &mut $crate::Ctx) -> $crate::TestResult {
                        $body
                    }
                    case
                })
            };
        };
    };
}

/// Fail the case unless `cond` holds: `check!(a < b, "a={} b={}", a, b)`.
#[macro_export]
macro_rules! check {
    ($cond:expr $(,)?) => {
        if !$cond {
            return Err($crate::Failure::Fail(alloc::format!(
                "check failed: {} at {}:{}", stringify!($cond), file!(), line!()
            )));
        }
    };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure::Fail(alloc::format!(
                "{} (check failed: {} at {}:{})", alloc::format!($($fmt)+), stringify!($cond), file!(), line!()
            )));
        }
    };
}

/// Fail the case unless `a == b`, showing both values.
#[macro_export]
macro_rules! check_eq {
    ($a:expr, $b:expr $(,)?) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err($crate::Failure::Fail(alloc::format!(
                "{} = {:?} but {} = {:?} at {}:{}", stringify!($a), a, stringify!($b), b, file!(), line!()
            )));
        }
    }};
    ($a:expr, $b:expr, $($fmt:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err($crate::Failure::Fail(alloc::format!(
                "{}: {} = {:?} but {} = {:?} at {}:{}", alloc::format!($($fmt)+), stringify!($a), a, stringify!($b), b, file!(), line!()
            )));
        }
    }};
}

/// Turn an error into a failure naming what failed:
/// `x.map_err(err("create"))?`.
pub fn err<T: core::fmt::Debug>(what: &str) -> impl FnOnce(T) -> Failure + '_ {
    move |e| Failure::Fail(alloc::format!("{what}: {e:?}"))
}

/// Skip the case with a reason.
pub fn skip<T>(why: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Skip(why.into()))
}

/// Fail the case with a message.
pub fn fail<T>(why: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Fail(why.into()))
}

/// Print a KTAP diagnostic line inside the running case (`    # ...`).
#[macro_export]
macro_rules! diag {
    ($($fmt:tt)+) => {
        $crate::harness::diag_line(&alloc::format!($($fmt)+))
    };
}
