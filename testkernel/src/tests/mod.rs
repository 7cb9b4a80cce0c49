//! Suites that check the testkernel itself (they use its internals): `boot`,
//! `sched`, and `redox_boot` (explicit: the Redox boot protocol, through
//! `kernel-patch/shim`). The port-level suites live in the `ktests` crate.

mod boot;
mod redox_boot;
mod sched;
