//! Kernel threads for Redox with Linux's semantics: `kthreadd`, stop, park,
//! bind, `kthread_worker` and per-CPU threads, built on the port ([`kport`]).
//!
//! The crate is `no_std` + `alloc` and knows nothing about x86, QEMU or
//! Redox: every machine-specific primitive comes through [`kport::Port`].
//!
//! | module | Linux |
//! |---|---|
//! | [`kthread`] | `kernel/kthread.c`: kthreadd, create/run/stop/park/bind |
//! | [`kthread_worker`] | `kthread_worker`, `kthread_work`, `kthread_delayed_work` |
//! | [`smpboot`] | `kernel/smpboot.c`: per-CPU threads and CPU hot-plug |
//! | [`freezer`] | `kernel/freezer.c`: freezable kernel threads, freeze and thaw |
//! | [`registry`] | the `ps` view of kernel threads |
//! | [`hung_task`] | `kernel/hung_task.c`: `khungtaskd` |
//! | [`watchdog`] | `kernel/watchdog.c`: the soft-lockup detector |
//! | [`sysrq`] | stack dumps, SysRq `t`/`w`/`l` |
//!
//! Where the crate differs from Linux, `docs/kthreadd.md` says so beside
//! Linux's behaviour.
//!
//! # Locking
//! Field tags (as in `kernel/workqueue.c`): `I:` set at creation, read-only
//! after; `A:` atomic, protocol in the field's comment; `O:` set once
//! (`spin::Once`), read-only after; `L:` the structure's lock.
//!
//! The lock order, checked in debug builds ([`kport::sync::rank`]); no
//! lock of this crate is held while another of its locks is taken except
//! as listed:
//!
//! 1. kthreadd's request queue ([`RANK_KTHREADD`]): alone;
//! 2. the per-CPU thread kinds, then one kind ([`RANK_SMPBOOT`],
//!    [`RANK_SMPBOOT_KIND`]): each alone in practice;
//! 3. a `kthread_worker`'s lock ([`RANK_KTW_WORKER`]), and an item's link
//!    to its worker ([`RANK_KTW_ITEM`]), which may be taken under it but
//!    never the other way;
//! 4. leaves ([`RANK_LEAF`]): the registry, a thread's function and exit
//!    value, a creation request's result, a delayed item's target.
//!
//! Sleeping (stop, park, create, flush) happens with none of them held.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod freezer;
pub mod hung_task;
pub mod kthread;
pub mod kthread_worker;
pub mod registry;
pub mod smpboot;
pub mod state;
pub mod sysrq;
pub mod watchdog;

pub use kthread::{Builder, Kthread};

/// Lock rank of kthreadd's request queue (see Locking).
pub const RANK_KTHREADD: u8 = 10;
/// Lock rank of the per-CPU thread kinds' list.
pub const RANK_SMPBOOT: u8 = 11;
/// Lock rank of one per-CPU thread kind.
pub const RANK_SMPBOOT_KIND: u8 = 12;
/// Lock rank of a `kthread_worker`'s lock.
pub const RANK_KTW_WORKER: u8 = 13;
/// Lock rank of a `kthread_work`'s link to its worker.
pub const RANK_KTW_ITEM: u8 = 14;
/// Lock rank of the crate's leaf locks.
pub const RANK_LEAF: u8 = 28;
