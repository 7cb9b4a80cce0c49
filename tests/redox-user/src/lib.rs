//! The user-space half of the Redox suite: Redox's first user program, started by the kernel
//! from the bootstrap image the project's shim hands over, after the in-kernel suites.
//!
//! It talks to the kernel through `redox_syscall` alone (no libc): the kernel gives the first
//! program a capability for each of its schemes (`debug:`, `sys:`, `proc:`, ...), and the
//! program reads `sys:kthread`, `sys:cpu`, `sys:context`, `sys:softirqs`, `sys:interrupts`, `sys:vmstat`
//! and `sys:meminfo`,
//! tries `proc:` with a kernel thread's id, prints KTAP through `debug:` (the serial port) and
//! reports its verdict to the kernel through `sys:ktest` (a file of the `ktests` kernel only),
//! which ends the run. The
//! checks on the files' text are here, testable on the host; the Redox runtime (entry point,
//! stack, heap, system calls) is `main.rs`, built only for `x86_64-unknown-redox`.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod checks;
pub mod ktap;
