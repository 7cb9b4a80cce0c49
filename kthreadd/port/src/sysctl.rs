//! Run-time settings by name, as Linux's `sysctl` names them
//! (`kernel.hung_task_timeout_secs`, `vm.dirty_ratio`, ...).
//!
//! Each layer registers the settings it owns ([`register`]) when it starts;
//! the table is the one place a command line, a test or a host kernel's
//! file (`sys:sysctl` inside Redox) reads and writes them. Values are
//! integers, as every setting registered here is on Linux. A name may be
//! written with dots or with slashes (`kernel/watchdog_thresh`, the
//! `/proc/sys` path), as Linux's `sysctl` accepts both.
//!
//! Boot-time settings use Linux's `sysctl.` prefix on the command line
//! (`sysctl.kernel.hung_task_timeout_secs=5`): see [`apply_boot_word`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::{EINVAL, ENOENT, Error, Result};

/// One setting: its full name and where its value lives.
#[derive(Debug)]
pub struct Sysctl {
    /// Full dotted name (`kernel.watchdog_thresh`).
    pub name: &'static str,
    /// How to read and write it.
    pub kind: Kind,
}

/// Where a setting's value lives.
#[derive(Debug)]
pub enum Kind {
    /// In a [`Bounded`] static, with an optional function called after
    /// each accepted write (to re-arm a timer, say).
    Bounded(&'static Bounded, Option<fn()>),
    /// Behind functions; `key` is passed back to both, so one pair can
    /// serve a table.
    Fn {
        /// Passed to `get` and `set`.
        key: usize,
        /// The value now.
        get: fn(usize) -> i64,
        /// Set the value: `EINVAL` when out of range.
        set: fn(usize, i64) -> Result<()>,
    },
}

impl Sysctl {
    /// The value now.
    pub fn value(&self) -> i64 {
        match &self.kind {
            Kind::Bounded(b, _) => b.get(),
            Kind::Fn { key, get, .. } => get(*key),
        }
    }

    /// Set the value.
    ///
    /// Return: `EINVAL` for a value the setting refuses.
    pub fn set_value(&self, v: i64) -> Result<()> {
        match &self.kind {
            Kind::Bounded(b, after) => {
                b.set(v)?;
                if let Some(f) = after {
                    f();
                }
                Ok(())
            }
            Kind::Fn { key, set, .. } => set(*key, v),
        }
    }
}

/// Room in the table (the subsystem registers 15 settings).
pub const CAPACITY: usize = 64;

/// A plain spin mutex over a fixed array, not the port's lock over a
/// vector: the frame allocator registers its settings before the port is
/// installed and before there is a heap. The table is never touched from
/// interrupt context.
static TABLE: spin::Mutex<[Option<&'static Sysctl>; CAPACITY]> = spin::Mutex::new([None; CAPACITY]);

/// Add `entries` to the table. A name already there is replaced, so a
/// layer that starts twice (tests restart some) registers twice safely.
///
/// Context: any but interrupt context; needs no heap. Panics when the
/// table is full (a build with more than [`CAPACITY`] settings).
pub fn register(entries: &'static [Sysctl]) {
    let mut t = TABLE.lock();
    for e in entries {
        let slot = match t.iter().position(|x| x.is_some_and(|x| x.name == e.name)) {
            Some(i) => i,
            None => t.iter().position(|x| x.is_none()).expect("sysctl table full: raise CAPACITY"),
        };
        t[slot] = Some(e);
    }
}

fn entries() -> Vec<&'static Sysctl> {
    TABLE.lock().iter().flatten().copied().collect()
}

/// Accept `/proc/sys` paths (`kernel/watchdog_thresh`) as dotted names.
fn normalize(name: &str) -> String {
    name.trim().trim_start_matches('/').trim_start_matches("proc/sys/").replace('/', ".")
}

fn find(name: &str) -> Result<&'static Sysctl> {
    let name = normalize(name);
    TABLE.lock().iter().flatten().copied().find(|e| e.name == name).ok_or(Error::new(ENOENT))
}

/// The value of setting `name`.
///
/// Return: `ENOENT` for a name nobody registered.
pub fn get(name: &str) -> Result<i64> {
    Ok(find(name)?.value())
}

/// Set `name` from its text form (a decimal integer, optionally negative).
///
/// Return: `ENOENT` for an unknown name; `EINVAL` for text that is not an
/// integer or a value the setting refuses.
pub fn set(name: &str, value: &str) -> Result<()> {
    let e = find(name)?;
    let v: i64 = value.trim().parse().map_err(|_| Error::new(EINVAL))?;
    e.set_value(v)
}

/// Set from `name=value` or `name = value` lines (what `sysctl -p` reads,
/// and what a write to `sys:sysctl` carries). Blank lines and `#` comments
/// are skipped. Stops at the first bad line.
///
/// Return: the first line's error, with the line (for a one-line message).
pub fn write(text: &str) -> core::result::Result<(), (Error, String)> {
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err((Error::new(EINVAL), String::from(line)));
        };
        set(name, value).map_err(|e| (e, String::from(line)))?;
    }
    Ok(())
}

/// Every setting as `name = value` lines, sorted by name (`sysctl -a`).
pub fn list() -> String {
    let mut entries = entries();
    entries.sort_by_key(|e| e.name);
    let mut s = String::new();
    for e in entries {
        let _ = writeln!(s, "{} = {}", e.name, e.value());
    }
    s
}

/// The registered names, sorted.
pub fn names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = entries().iter().map(|e| e.name).collect();
    v.sort_unstable();
    v
}

/// Apply one command-line word if it is Linux's `sysctl.NAME=VALUE`.
///
/// Return: `None` when the word is not a `sysctl.` word; otherwise the
/// outcome, with a one-line message on failure (Linux logs a warning and
/// boots on; so does the caller).
pub fn apply_boot_word(word: &str) -> Option<core::result::Result<(), String>> {
    let rest = word.strip_prefix("sysctl.")?;
    let Some((name, value)) = rest.split_once('=') else {
        return Some(Err(format!("sysctl boot parameter '{word}' has no value (sysctl.NAME=VALUE)")));
    };
    Some(set(name, value).map_err(|e| {
        let why = if e.errno == ENOENT { "parameter not found" } else { "invalid value" };
        format!("failed to set sysctl parameter '{name}={value}': {why}")
    }))
}

/// A bounded setting kept in a static `AtomicI64`.
#[derive(Debug)]
pub struct Bounded {
    /// The value.
    pub value: core::sync::atomic::AtomicI64,
    /// Smallest accepted value.
    pub min: i64,
    /// Largest accepted value.
    pub max: i64,
    /// Linux's default.
    pub default: i64,
}

impl Bounded {
    /// A setting at `default`, accepting `min..=max`.
    pub const fn new(default: i64, min: i64, max: i64) -> Self {
        Bounded { value: core::sync::atomic::AtomicI64::new(default), min, max, default }
    }

    /// The value now.
    pub fn get(&self) -> i64 {
        self.value.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Set `v`.
    ///
    /// Return: `EINVAL` outside `min..=max`.
    pub fn set(&self, v: i64) -> Result<()> {
        if v < self.min || v > self.max {
            return Err(Error::new(EINVAL));
        }
        self.value.store(v, core::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Back to the default.
    pub fn reset(&self) {
        self.value.store(self.default, core::sync::atomic::Ordering::Relaxed);
    }
}
