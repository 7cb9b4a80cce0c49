//! Suites that check the testkernel itself (they use its internals): `boot`
//! and `sched`. The port-level suites live in the `ktests` crate.

mod boot;
mod sched;
