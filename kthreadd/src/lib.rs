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
//! | [`registry`] | the `ps` view of kernel threads |
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod kthread;
pub mod kthread_worker;
pub mod registry;
pub mod smpboot;
pub mod state;

pub use kthread::{Builder, Kthread};
