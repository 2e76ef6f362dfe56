//! The Helm chart (`charts/sandbox-operator`): lint, render, schema, alert
//! rules and dashboard, and installs on the local control plane, including
//! the real operator binary running with exactly the chart's flags and the
//! chart's RBAC (a token of its ServiceAccount).
//!
//! One module a job: `helm` (running and reading helm), `render_defaults`
//! and `render_options` (what the chart renders, no cluster), `monitoring`
//! (alerts and dashboard against the exported metrics), `network_policy`
//! (the operator's NetworkPolicy from its values, accepted by the API
//! server), `install` (install
//! and uninstall on the control plane), `local_operator` (the binary run
//! like the Deployment) and `rbac_proof` (the chart's RBAC is enough, and
//! every rule of it is needed).

mod helm;
mod install;
mod local_operator;
mod monitoring;
mod network_policy;
mod rbac_proof;
mod render_defaults;
mod render_options;

/// The operator's metric definitions as source text: `src/metrics.rs` (the
/// bucket constants and names) and `src/metrics/define.rs` (the metrics
/// themselves), for the tests that check the chart against them.
fn metrics_source() -> String {
    ["src/metrics.rs", "src/metrics/define.rs"]
        .iter()
        .map(|path| {
            std::fs::read_to_string(crate::common::repo().join(path))
                .unwrap_or_else(|e| panic!("{path}: {e}"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
