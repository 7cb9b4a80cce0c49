//! Kernel threads for Redox with Linux's semantics: `kthreadd`, stop, park,
//! bind, `kthread_worker` and per-CPU threads, built on a small [`port`] to
//! the host kernel.
//!
//! The crate is `no_std` + `alloc` and knows nothing about x86, QEMU or
//! Redox: every machine-specific primitive comes through [`port::Port`].
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "host")]
pub mod host;
pub mod port;
pub mod sync;
