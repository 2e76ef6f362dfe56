//! Unit tests of the end-to-end bench's pure parts (flags, statistics,
//! ratios to the floor, the API server's counters, /proc parsing, the
//! timeline log, the ownership guard's refusal, the no-double-assignment
//! check, the demo's launch-type verdict, the operator's scrubbed
//! environment). The bench itself runs without a test harness, so these
//! modules are compiled a second time here, as an ordinary test target.
//! Run: `cargo test --test bench-logic`.

// Functions only `main.rs` calls are unused in this crate.
#![allow(dead_code)]

mod apiserver;
mod assignments;
mod child_env;
mod delivery;
mod demo;
mod floor;
mod guard;
mod procstat;
mod queue;
mod report;
mod settings;
mod stats;
mod timeline;
