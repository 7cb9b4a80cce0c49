//! Kernel threads for Redox with Linux's semantics: `kthreadd`, stop, park,
//! bind, `kthread_worker` and per-CPU threads, built on a small [`port`] to
//! the host kernel.
//!
//! The crate is `no_std` + `alloc` and knows nothing about x86, QEMU or
//! Redox: every machine-specific primitive comes through [`port::Port`].
//!
//! | module | Linux |
//! |---|---|
//! | [`kthread`] | `kernel/kthread.c`: kthreadd, create/run/stop/park/bind |
//! | [`worker`] | `kthread_worker` |
//! | [`smpboot`] | `kernel/smpboot.c`: per-CPU threads and CPU hot-plug |
//! | [`registry`] | the `ps` view of kernel threads |
//! | [`sync`] | `spinlock_t`, `wait_queue_head_t`, `completion`, `mutex` |
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "host")]
pub mod host;
pub mod kthread;
pub mod port;
pub mod registry;
pub mod smpboot;
pub mod state;
pub mod sync;
pub mod worker;

pub use kthread::{Builder, Kthread};
