//! The `timeline` log: one line per step of a claim's way to Ready.

use kube::Resource;

/// Logs one step of a claim's way to Ready at target `timeline`, with the
/// milliseconds since the API server admitted the claim (the webhook's
/// `admitted-at` stamp, copied onto its Sandbox). `RUST_LOG=timeline=info`
/// turns it on; the end-to-end bench uses it for its per-step breakdown.
pub fn timeline<K: Resource>(obj: &K, claim: &str, step: &'static str) {
    if !tracing::enabled!(target: "timeline", tracing::Level::INFO) {
        return;
    }
    let Some(admitted) = crate::api::admission_stamp(obj.meta()) else {
        return;
    };
    let ms = jiff::Timestamp::now()
        .duration_since(admitted)
        .as_secs_f64()
        * 1000.0;
    tracing::info!(target: "timeline", claim, step, ms, "timeline");
}
