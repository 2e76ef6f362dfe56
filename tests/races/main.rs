//! The race tier: the real claim, Sandbox and warm-pool reconciles against
//! the in-memory API server of `tests/fakeapi`, no control plane. Each
//! scenario forces one interleaving with the fake's hooks (or draws many
//! from a seeded RNG) and checks the ownership invariants from the fake's
//! full change history. What only the real control plane proves (admission,
//! the real API server's exact answers, scheduling, timing) stays in
//! `tests/integration`.
//!
//! A separate test binary (not unit tests of the lib): it needs only the
//! lib's public API, and editing a scenario recompiles this small crate,
//! not the whole lib in test mode.

mod conflicts;
mod critical;
mod harness;
mod leader;
mod policies;
mod pool_creates;
mod pool_template_gone;
mod random;
mod repair;
mod scenarios;
mod starting;
mod surplus;
mod templates;
mod watches;
