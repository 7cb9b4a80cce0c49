//! Host-side runner for the bare-metal testkernel.
//!
//! It builds the kernel, boots it in QEMU once per configuration (CPU count ×
//! preemption model), streams and parses the KTAP output of the serial port,
//! symbolizes backtraces and writes a summary plus JSON reports.
//!
//! The pieces are separate modules so they can be tested on their own:
//! [`ktap`] (parser), [`symbolize`] (ELF symbol lookup), [`qemu`] (process
//! handling), [`report`] (verdicts, JSON, summary), [`run`] (orchestration)
//! and [`disks`] (the `block` suite's virtio-blk images and their check);
//! [`restart`] judges the two boots of `ktest restart` on the same images.
//! The Linux side of the benchmarks: [`initramfs`] (the newc archive),
//! [`linux`] (`bench-linux`), [`compare`] (tables and charts) and [`rounds`]
//! (`bench-compare`, `bench-scale`), with [`hostprobe`] (the host's
//! core-to-core round trip before each boot).
//! The guest side of the contract is described in `docs/guest-protocol.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod compare;
pub mod disks;
pub mod hostprobe;
pub mod initramfs;
pub mod ktap;
pub mod linux;
pub mod qemu;
pub mod report;
pub mod restart;
pub mod rounds;
pub mod run;
pub mod symbolize;
pub mod trace;
pub mod watchdogs;

/// An error that ends the runner before or between boots, with its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// One-line message, printed as is on stderr.
    pub message: String,
    /// Process exit status (2 for usage and environment errors).
    pub code: i32,
}

impl Error {
    /// An environment or usage error (exit status 2).
    pub fn env(message: impl Into<String>) -> Self {
        Error { message: message.into(), code: 2 }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
