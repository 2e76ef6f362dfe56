//! The pure parts of the soak bench (its per-minute rows, the reading of
//! the tracked-entries gauge), tested with a harness: `cargo test --test soak-logic`.

#[path = "../claim_latency/stats.rs"]
mod stats;

mod minute;
