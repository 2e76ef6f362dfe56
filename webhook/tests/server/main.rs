//! The server as the API server sees it: real TLS connections to 127.0.0.1,
//! HTTP/1.1 and HTTP/2, well-formed and malformed reviews, and a key pair
//! rotated under a running server.
//!
//! `harness` holds the test server and its client; one module per concern.

mod answers;
mod body_budget;
mod harness;
mod idle;
mod lifecycle;
mod limits;
mod sandbox_review;
