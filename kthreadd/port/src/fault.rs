//! Fault injection (Linux `lib/fault-inject.c`, `Documentation/fault-injection/`):
//! make chosen calls fail on purpose, so the error paths of their callers
//! run and can be tested.
//!
//! Each kind of failure is a [`FaultAttr`] with Linux's knobs:
//! `probability` (percent of eligible calls that fail, 0..=100),
//! `interval` (only every Nth eligible call may fail; 1: every call),
//! `times` (failures left; -1 without limit; 0 stops injecting),
//! `space` (bytes or pages that may pass before failures start), and
//! `verbose` (0 quiet, 1 a one-line report per failure). A call is
//! eligible when it passes the attribute's call-site filter: a substring
//! of the caller's `file:line` (`#[track_caller]`), empty for every site.
//!
//! The attributes, and where they act:
//! - [`FAIL_PAGE_ALLOC`] (Linux `fail_page_alloc`): a sleeping frame
//!   allocation through `kport::mm::alloc_slowpath` returns `ENOMEM`
//!   without reclaim, as Linux's `should_fail_alloc_page` makes the page
//!   allocator return NULL. As on Linux, sleeping allocations are left
//!   alone unless `ignore_gfp_wait` is 0 ([`FAIL_PAGE_ALLOC_IGNORE_GFP_WAIT`]).
//! - [`FAIL_MAKE_REQUEST`] (Linux `fail_make_request`): a block request
//!   completes with `EIO` without reaching the device.
//! - [`FAIL_KTHREAD_CREATE`] (ours: Linux's `kthread_create` fails only
//!   through its allocations): `kthread::Builder::create` returns `ENOMEM`.
//!
//! Settings are in [`crate::sysctl`] under `debug.NAME.KNOB` (Linux keeps
//! them in debugfs, `/sys/kernel/debug/NAME/KNOB`), and on the command line
//! as Linux's boot parameter `NAME=<interval>,<probability>,<space>,<times>`
//! ([`apply_boot_word`]). Heap allocations have no attribute: Rust's
//! allocations cannot fail without aborting, so there is no `failslab`.

use alloc::format;
use alloc::string::String;
use core::panic::Location;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::sysctl::{Bounded, Kind, Sysctl};
use crate::{EINVAL, Error, Result};

/// Most bytes of a call-site filter.
pub const FILTER_LEN: usize = 48;

/// Text formatted on the stack (a hooked call may come from any context,
/// `try_submit`, where allocating is not allowed); what does not fit is
/// cut, keeping the start.
struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    fn new(args: core::fmt::Arguments<'_>) -> Self {
        let mut t = StackText { buf: [0; N], len: 0 };
        let _ = core::fmt::Write::write_fmt(&mut t, args);
        t
    }

    fn as_str(&self) -> &str {
        // A cut in the middle of a character keeps the whole ones before it.
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl<const N: usize> core::fmt::Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// One kind of injected failure (Linux `struct fault_attr`).
#[derive(Debug)]
pub struct FaultAttr {
    /// Its name (Linux's debugfs directory).
    pub name: &'static str,
    /// Percent of eligible calls that fail.
    pub probability: Bounded,
    /// Only every Nth eligible call may fail.
    pub interval: Bounded,
    /// Failures left (-1: no limit).
    pub times: Bounded,
    /// Units that pass before failures start.
    pub space: Bounded,
    /// 1: a one-line report per failure.
    pub verbose: Bounded,
    /// Eligible calls counted for `interval`.
    count: AtomicU64,
    /// Failures injected since boot.
    injected: AtomicU64,
    /// State of the generator for `probability`.
    rng: AtomicU64,
    /// The call-site filter: length, then bytes.
    filter: spin::Mutex<(usize, [u8; FILTER_LEN])>,
}

impl FaultAttr {
    /// An attribute at Linux's defaults (probability 0, interval 1,
    /// times 1, space 0, verbose 1): inert until a probability is set.
    pub const fn new(name: &'static str) -> Self {
        FaultAttr {
            name,
            probability: Bounded::new(0, 0, 100),
            interval: Bounded::new(1, 1, i64::MAX),
            times: Bounded::new(1, -1, i64::MAX),
            space: Bounded::new(0, 0, i64::MAX),
            verbose: Bounded::new(1, 0, 2),
            count: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            filter: spin::Mutex::new((0, [0; FILTER_LEN])),
        }
    }

    /// Set every knob at once (what the boot parameter sets), and clear
    /// the interval count.
    ///
    /// Return: `EINVAL` for a value out of range (nothing is changed).
    pub fn configure(&self, interval: i64, probability: i64, space: i64, times: i64) -> Result<()> {
        let ok = |b: &Bounded, v: i64| (b.min..=b.max).contains(&v);
        if !ok(&self.interval, interval)
            || !ok(&self.probability, probability)
            || !ok(&self.space, space)
            || !ok(&self.times, times)
        {
            return Err(Error::new(EINVAL));
        }
        self.interval.set(interval)?;
        self.probability.set(probability)?;
        self.space.set(space)?;
        self.times.set(times)?;
        self.count.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Back to the defaults (inert), with no filter.
    pub fn reset(&self) {
        for b in [&self.probability, &self.interval, &self.times, &self.space, &self.verbose] {
            b.reset();
        }
        self.count.store(0, Ordering::Relaxed);
        *self.filter.lock() = (0, [0; FILTER_LEN]);
    }

    /// Only calls whose `file:line` contains `site` are eligible (empty:
    /// every call).
    ///
    /// Return: `EINVAL` for a filter longer than [`FILTER_LEN`] bytes.
    pub fn set_filter(&self, site: &str) -> Result<()> {
        if site.len() > FILTER_LEN {
            return Err(Error::new(EINVAL));
        }
        let mut f = self.filter.lock();
        f.0 = site.len();
        f.1[..site.len()].copy_from_slice(site.as_bytes());
        Ok(())
    }

    /// Failures injected since boot.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn eligible(&self, site: &Location<'_>) -> bool {
        let f = self.filter.lock();
        if f.0 == 0 {
            return true;
        }
        let want = core::str::from_utf8(&f.1[..f.0]).unwrap_or("");
        let here = StackText::<160>::new(format_args!("{}:{}", site.file(), site.line()));
        here.as_str().contains(want)
    }

    fn random_percent(&self) -> i64 {
        // xorshift64: a stream per attribute, good enough to pick calls.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x % 100) as i64
    }

    /// Should this call (of `size` units, made at `site`) fail? Linux's
    /// `should_fail`: nothing while `times` is 0; `space` lets calls pass
    /// until it is used up; then every `interval`th eligible call fails
    /// with `probability` percent, and `times` counts down.
    ///
    /// Context: any (the verbose report prints a console line).
    pub fn should_fail(&self, size: u64, site: &Location<'_>) -> bool {
        let times = self.times.get();
        if times == 0 || self.probability.get() == 0 {
            return false;
        }
        if !self.eligible(site) {
            return false;
        }
        let space = self.space.get();
        if space > 0 {
            let left = space.saturating_sub(size as i64).max(0);
            self.space.value.store(left, Ordering::Relaxed);
            return false;
        }
        let interval = self.interval.get().max(1) as u64;
        if interval > 1 {
            let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
            if !n.is_multiple_of(interval) {
                return false;
            }
        }
        if self.probability.get() <= self.random_percent() {
            return false;
        }
        if times > 0 {
            // Several CPUs may race for the last failure: only one takes it.
            let left = &self.times.value;
            if left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| (t > 0).then(|| t - 1)).is_err() {
                return false;
            }
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        if self.verbose.get() > 0 && crate::installed() {
            let line = StackText::<240>::new(format_args!(
                "FAULT_INJECTION: forcing a failure: {} at {}:{}",
                self.name,
                site.file(),
                site.line()
            ));
            crate::port().console_line(line.as_str());
        }
        true
    }
}

/// `fail_page_alloc`: sleeping frame allocations (see the module doc).
pub static FAIL_PAGE_ALLOC: FaultAttr = FaultAttr::new("fail_page_alloc");
/// `fail_page_alloc`'s `ignore-gfp-wait` (Linux default 1: sleeping
/// allocations are not failed).
pub static FAIL_PAGE_ALLOC_IGNORE_GFP_WAIT: Bounded = Bounded::new(1, 0, 1);
/// `fail_make_request`: block requests complete with `EIO`.
pub static FAIL_MAKE_REQUEST: FaultAttr = FaultAttr::new("fail_make_request");
/// `fail_kthread_create`: kthread creation returns `ENOMEM`.
pub static FAIL_KTHREAD_CREATE: FaultAttr = FaultAttr::new("fail_kthread_create");

/// Every attribute.
pub static ALL: [&FaultAttr; 3] = [&FAIL_PAGE_ALLOC, &FAIL_MAKE_REQUEST, &FAIL_KTHREAD_CREATE];

macro_rules! knobs {
    ($attr:ident, $prefix:literal) => {
        [
            Sysctl { name: concat!("debug.", $prefix, ".probability"), kind: Kind::Bounded(&$attr.probability, None) },
            Sysctl { name: concat!("debug.", $prefix, ".interval"), kind: Kind::Bounded(&$attr.interval, None) },
            Sysctl { name: concat!("debug.", $prefix, ".times"), kind: Kind::Bounded(&$attr.times, None) },
            Sysctl { name: concat!("debug.", $prefix, ".space"), kind: Kind::Bounded(&$attr.space, None) },
            Sysctl { name: concat!("debug.", $prefix, ".verbose"), kind: Kind::Bounded(&$attr.verbose, None) },
        ]
    };
}

static PAGE_ALLOC_KNOBS: [Sysctl; 5] = knobs!(FAIL_PAGE_ALLOC, "fail_page_alloc");
static MAKE_REQUEST_KNOBS: [Sysctl; 5] = knobs!(FAIL_MAKE_REQUEST, "fail_make_request");
static KTHREAD_KNOBS: [Sysctl; 5] = knobs!(FAIL_KTHREAD_CREATE, "fail_kthread_create");
static GFP_WAIT_KNOB: [Sysctl; 1] = [Sysctl {
    name: "debug.fail_page_alloc.ignore_gfp_wait",
    kind: Kind::Bounded(&FAIL_PAGE_ALLOC_IGNORE_GFP_WAIT, None),
}];

/// Put the knobs in the [`crate::sysctl`] table (idempotent; needs no heap).
pub fn register_sysctls() {
    crate::sysctl::register(&PAGE_ALLOC_KNOBS);
    crate::sysctl::register(&MAKE_REQUEST_KNOBS);
    crate::sysctl::register(&KTHREAD_KNOBS);
    crate::sysctl::register(&GFP_WAIT_KNOB);
}

/// Apply Linux's boot parameter `NAME=<interval>,<probability>,<space>,<times>`
/// if `word` is one.
///
/// Return: `None` for another word; otherwise the outcome, with a one-line
/// message on failure.
pub fn apply_boot_word(word: &str) -> Option<core::result::Result<(), String>> {
    let (name, value) = word.split_once('=')?;
    let attr = ALL.iter().find(|a| a.name == name)?;
    let parts: alloc::vec::Vec<Option<i64>> = value.split(',').map(|p| p.trim().parse().ok()).collect();
    let bad = || format!("{name}={value}: expected <interval>,<probability>,<space>,<times> (integers in range)");
    let [Some(interval), Some(probability), Some(space), Some(times)] = parts[..] else {
        return Some(Err(bad()));
    };
    Some(attr.configure(interval, probability, space, times).map_err(|_| bad()))
}

/// Total failures injected since boot, over every attribute.
pub fn injected_total() -> u64 {
    ALL.iter().map(|a| a.injected()).sum()
}

/// Every attribute back to inert (a torture run's end, a test's cleanup).
pub fn reset_all() {
    for a in ALL {
        a.reset();
    }
    FAIL_PAGE_ALLOC_IGNORE_GFP_WAIT.reset();
}
