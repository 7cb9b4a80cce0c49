//! Suites that check the testkernel itself (they use its internals): `boot`,
//! `sched`, `redox_boot` (explicit: the Redox boot protocol, through
//! `kernel-patch/shim`), and the `port` suite's cases that need the machine
//! (`port_machine`, `irq_machine`). The port-level suites live in the
//! `ktests` crate.

mod boot;
mod irq_machine;
mod port_machine;
mod redox_boot;
mod sched;
