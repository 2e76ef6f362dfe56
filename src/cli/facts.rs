//! The claim status contract as the command line reads it: pure functions,
//! no I/O.
//!
//! Owns three decisions: what one observed state of a claim means for a
//! client waiting on it ([`evaluate`]: Ready, still waiting, or failed for
//! good), which connection facts a claim's status yields ([`ClaimFacts`],
//! the same fields and names as the Python client's `SandboxInfo`), and how
//! they are printed ([`render`]).
//!
//! Guarantees: a claim is Ready only when its `Ready` condition is `True`;
//! only [`TERMINAL_REASONS`] end a wait early, any other reason (including
//! ones added later) keeps it going and a timeout reports it; optional status
//! fields print as absent, never guessed from the claim's name.

use clap::ValueEnum;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use serde::Serialize;

use crate::api::{READY, SandboxClaim, find_condition, reason};

/// `Ready=False` reasons after which a claim will not become Ready by itself.
pub const TERMINAL_REASONS: [&str; 5] = [
    reason::TEMPLATE_NOT_FOUND,
    reason::CLAIM_EXPIRED,
    reason::SANDBOX_REJECTED,
    reason::FORBIDDEN,
    reason::NAME_CONFLICT,
];

/// How to reach a claimed sandbox (absent fields are `None`).
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct ClaimFacts {
    /// The claim's name.
    pub claim: String,
    /// The claim's namespace.
    pub namespace: String,
    /// The Sandbox serving the claim.
    pub sandbox_name: Option<String>,
    /// The Pod serving the claim (a warm Pod keeps its pool name).
    pub pod_name: Option<String>,
    /// The Pod's IPs.
    pub pod_ips: Vec<String>,
    /// The headless Service's name.
    pub service: Option<String>,
    /// `<service>.<namespace>.svc.<cluster domain>`.
    pub service_fqdn: Option<String>,
    /// `warm` or `cold`.
    pub launch_type: Option<String>,
    /// The pool that served a warm claim.
    pub warm_pool: Option<String>,
    /// When the claim became Ready (RFC 3339).
    pub ready_time: Option<String>,
    /// Admission-to-Ready seconds, measured by the operator.
    pub time_to_ready_seconds: Option<f64>,
    /// Create-to-Ready seconds, measured by this client.
    pub client_seconds: Option<f64>,
}

impl ClaimFacts {
    /// The facts in a claim's status.
    pub fn of(claim: &SandboxClaim, client_seconds: Option<f64>) -> ClaimFacts {
        let status = claim.status.clone().unwrap_or_default();
        let sandbox = status.sandbox.unwrap_or_default();
        ClaimFacts {
            claim: claim.name_any(),
            namespace: claim.namespace().unwrap_or_default(),
            sandbox_name: sandbox.name,
            pod_name: status.pod_name,
            pod_ips: sandbox.pod_ips.unwrap_or_default(),
            service: sandbox.service,
            service_fqdn: sandbox.service_fqdn,
            launch_type: status.launch_type.map(|l| l.as_str().to_string()),
            warm_pool: status.warm_pool,
            ready_time: status.ready_time.map(|t| t.0.to_string()),
            time_to_ready_seconds: status.time_to_ready_seconds,
            client_seconds,
        }
    }
}

/// The claim's `Ready` condition, reduced to what a client reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyCondition {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
}

impl ReadyCondition {
    fn from(condition: &Condition) -> ReadyCondition {
        ReadyCondition {
            status: condition.status.clone(),
            reason: condition.reason.clone(),
            message: condition.message.clone(),
        }
    }
}

impl std::fmt::Display for ReadyCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ready={} {}", self.status, self.reason)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// What one observed state of a claim means for a client waiting on it.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Ready: here is how to reach it.
    Ready(Box<ClaimFacts>),
    /// Not yet; `condition` is `None` before the operator wrote any.
    Waiting {
        /// The last `Ready` condition.
        condition: Option<ReadyCondition>,
        /// `cold` while a new Pod starts.
        launch_type: Option<String>,
    },
    /// The claim cannot become Ready without someone else acting.
    Failed(ReadyCondition),
}

/// Decides from one observed state of the claim. Pure.
pub fn evaluate(claim: &SandboxClaim, client_seconds: Option<f64>) -> Outcome {
    let status = claim.status.as_ref();
    let condition = status
        .and_then(|s| find_condition(&s.conditions, READY))
        .map(ReadyCondition::from);
    match condition {
        Some(c) if c.status == "True" => {
            Outcome::Ready(Box::new(ClaimFacts::of(claim, client_seconds)))
        }
        Some(c) if TERMINAL_REASONS.contains(&c.reason.as_str()) => Outcome::Failed(c),
        condition => Outcome::Waiting {
            condition,
            launch_type: status
                .and_then(|s| s.launch_type)
                .map(|l| l.as_str().to_string()),
        },
    }
}

/// Output formats of `claim create`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// A table: name, launch type, Pod, IP, latency.
    #[default]
    Table,
    /// The table plus namespace, Sandbox, Service FQDN and pool.
    Wide,
    /// The facts as one JSON object.
    Json,
    /// The facts as YAML.
    Yaml,
}

/// The facts printed in `format` (ends with a newline).
pub fn render(facts: &ClaimFacts, format: Format) -> String {
    match format {
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(facts).expect("facts serialize")
        ),
        Format::Yaml => serde_yaml::to_string(facts).expect("facts serialize"),
        Format::Table | Format::Wide => table(facts, format == Format::Wide),
    }
}

fn table(facts: &ClaimFacts, wide: bool) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let millis = |v: Option<f64>| v.map_or_else(|| "-".into(), |s| format!("{:.1}", s * 1000.0));
    let mut header = vec!["NAME", "LAUNCH", "POD", "IP", "READY-MS", "CLIENT-MS"];
    let mut row = vec![
        facts.claim.clone(),
        text(&facts.launch_type),
        text(&facts.pod_name),
        facts.pod_ips.first().cloned().unwrap_or_else(|| "-".into()),
        millis(facts.time_to_ready_seconds),
        millis(facts.client_seconds),
    ];
    if wide {
        header.extend(["NAMESPACE", "SANDBOX", "SERVICE-FQDN", "WARM-POOL"]);
        row.extend([
            facts.namespace.clone(),
            text(&facts.sandbox_name),
            text(&facts.service_fqdn),
            text(&facts.warm_pool),
        ]);
    }
    let widths: Vec<usize> = header
        .iter()
        .zip(&row)
        .map(|(h, v)| h.len().max(v.len()))
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("   ").trim_end())
    };
    line(header.into_iter().map(String::from).collect()) + &line(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(status: serde_json::Value) -> SandboxClaim {
        serde_json::from_value(json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
            "metadata": {"name": "c1", "namespace": "agents"},
            "spec": {"sandboxTemplateRef": {"name": "aio"}},
            "status": status,
        }))
        .unwrap()
    }

    fn ready(status: &str, reason: &str) -> serde_json::Value {
        json!([{"type": "Ready", "status": status, "reason": reason, "message": "m",
                "lastTransitionTime": "2026-11-29T08:00:00Z"}])
    }

    fn warm() -> SandboxClaim {
        claim(json!({
            "conditions": ready("True", "SandboxReady"),
            "sandbox": {"name": "c1", "podIPs": ["10.0.0.7"], "service": "c1",
                        "serviceFQDN": "c1.agents.svc.cluster.local"},
            "podName": "pool-x1", "launchType": "warm", "warmPool": "pool",
            "readyTime": "2026-11-29T08:00:00Z", "timeToReadySeconds": 0.042
        }))
    }

    #[test]
    fn ready_claim_yields_every_fact() {
        let Outcome::Ready(facts) = evaluate(&warm(), Some(0.05)) else {
            panic!("Ready expected");
        };
        assert_eq!(
            *facts,
            ClaimFacts {
                claim: "c1".into(),
                namespace: "agents".into(),
                sandbox_name: Some("c1".into()),
                pod_name: Some("pool-x1".into()),
                pod_ips: vec!["10.0.0.7".into()],
                service: Some("c1".into()),
                service_fqdn: Some("c1.agents.svc.cluster.local".into()),
                launch_type: Some("warm".into()),
                warm_pool: Some("pool".into()),
                ready_time: Some("2026-11-29T08:00:00Z".into()),
                time_to_ready_seconds: Some(0.042),
                client_seconds: Some(0.05),
            }
        );
    }

    #[test]
    fn passing_and_unknown_reasons_keep_waiting_terminal_ones_fail() {
        for reason in [
            "SandboxCreated",
            "SandboxNotReady",
            "QuotaExceeded",
            "ReasonAddedLater",
        ] {
            let outcome = evaluate(
                &claim(json!({"conditions": ready("False", reason), "launchType": "cold"})),
                None,
            );
            assert_eq!(
                outcome,
                Outcome::Waiting {
                    condition: Some(ReadyCondition {
                        status: "False".into(),
                        reason: reason.into(),
                        message: "m".into()
                    }),
                    launch_type: Some("cold".into())
                }
            );
        }
        for reason in TERMINAL_REASONS {
            let outcome = evaluate(&claim(json!({"conditions": ready("False", reason)})), None);
            assert!(matches!(outcome, Outcome::Failed(c) if c.reason == reason));
        }
        let mut fresh = warm();
        fresh.status = None;
        assert_eq!(
            evaluate(&fresh, None),
            Outcome::Waiting {
                condition: None,
                launch_type: None
            }
        );
    }

    #[test]
    fn condition_prints_like_the_python_client() {
        let c = ReadyCondition {
            status: "False".into(),
            reason: "SandboxNotReady".into(),
            message: "Pod is Pending".into(),
        };
        assert_eq!(c.to_string(), "Ready=False SandboxNotReady: Pod is Pending");
    }

    #[test]
    fn renders_table_wide_json_and_yaml() {
        let Outcome::Ready(facts) = evaluate(&warm(), Some(0.05)) else {
            panic!("Ready expected");
        };
        assert_eq!(
            render(&facts, Format::Table),
            "NAME   LAUNCH   POD       IP         READY-MS   CLIENT-MS\n\
             c1     warm     pool-x1   10.0.0.7   42.0       50.0\n"
        );
        let wide = render(&facts, Format::Wide);
        assert!(wide.contains("SERVICE-FQDN") && wide.contains("c1.agents.svc.cluster.local"));
        let json: serde_json::Value = serde_json::from_str(&render(&facts, Format::Json)).unwrap();
        assert_eq!(json["pod_ips"], json!(["10.0.0.7"]));
        assert_eq!(json["time_to_ready_seconds"], json!(0.042));
        let yaml: serde_json::Value = serde_yaml::from_str(&render(&facts, Format::Yaml)).unwrap();
        assert_eq!(yaml, json);
        let empty = ClaimFacts {
            claim: "c2".into(),
            ..Default::default()
        };
        assert!(
            render(&empty, Format::Table).ends_with("c2     -        -     -    -          -\n")
        );
    }
}
