//! Parsers and renderers for the kernel's `sys:` listings of this project:
//! `sys:kthread` ([`kthread`], the text of `kthreadd::registry::ps()`) and
//! the workqueue statistics ([`wq`], the text of `workqueue::monitor()`).
//!
//! Each listing is a header line and one row per data line; [`listing`]
//! holds what they share (header check, line numbers, strict or lenient
//! handling of malformed lines), [`cli`] the command line. A new listing is
//! a module implementing [`listing::Listing`] plus one entry in
//! [`cli::COMMANDS`].

#![forbid(unsafe_code)]

pub mod cli;
pub mod json;
pub mod kthread;
pub mod listing;
pub mod wq;
