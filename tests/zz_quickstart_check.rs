//! Temporary harness (to be deleted): compiles quickstart.rs alone.
#![allow(dead_code)]
#[path = "integration/common.rs"]
mod common;
#[path = "integration/quickstart.rs"]
mod quickstart;
