//! Whether the cluster honours `hostUsers: false`, and how the operator
//! finds out.
//!
//! Pod Security relaxes three checks for a Pod with `spec.hostUsers: false`
//! (restricted `runAsNonRoot` and `runAsUser`, baseline `procMount`): root in
//! a user namespace is not root on the node. But Kubernetes judges the Pod
//! as stored, and an API server whose `UserNamespacesSupport` feature gate is
//! off (the default before 1.33) drops `hostUsers` on create, before
//! admission: the Pod is stored without it and runs in the node's user
//! namespace. And before 1.35 Kubernetes' own Pod Security relaxed nothing
//! unless the alpha `UserNamespacesPodSecurityStandards` gate was on (nodes
//! might not honour the field yet). So [`crate::admission::pss`] and the
//! defaulting relax only when this process knows the cluster does both:
//! [`UserNamespaces::Supported`]. Not knowing counts as not supported.
//!
//! Flow (`--user-namespaces`, default `auto`):
//!
//! 1. `enabled` or `disabled` sets the fact at start, for clusters where the
//!    probe cannot run or says no although the administrator knows better
//!    (1.33 or 1.34 with both gates on).
//! 2. `auto` probes: a dry-run create (`dryRun=All`: admitted, defaulted,
//!    never stored) of a minimal restricted Pod with `hostUsers: false` in
//!    the namespace the operator creates Pods in, then the server's version;
//!    [`decide`] reads the two. The first attempt runs before the webhook
//!    serves; an error (a refusal, the API unreachable) is logged with its
//!    reason and retried with backoff ([`RETRY_DELAYS`]), after which the
//!    fact stays unknown.
//! 3. The fact rides on the policy snapshot (`Policy::user_namespaces`, set
//!    through [`PolicyStore::set_user_namespaces`]), so the webhook and the
//!    controllers judge each template by one snapshot, and the controllers'
//!    per-policy caches see a new snapshot when the fact changes.
//!
//! Caveat: the fact is found out once per process; a cluster whose gate is
//! turned off later is seen at the operator's next start.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use super::PolicyStore;

/// Whether `hostUsers: false` gives a Pod a user namespace on this cluster,
/// as far as this process knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UserNamespaces {
    /// Not found out (yet, or the probe failed): treated as not supported.
    #[default]
    Unknown,
    /// The API server keeps `hostUsers: false` and Kubernetes' own Pod
    /// Security relaxes for it (or `--user-namespaces=enabled` says so).
    Supported,
    /// The API server drops `hostUsers`, or its Pod Security does not relax
    /// for it (or `--user-namespaces=disabled` says so).
    Unsupported,
}

impl UserNamespaces {
    /// Whether `hostUsers: false` may relax Pod Security: only when known.
    pub fn supported(self) -> bool {
        self == UserNamespaces::Supported
    }
}

/// `--user-namespaces`: how the process learns [`UserNamespaces`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UserNamespacesSetting {
    /// Find out at start with a dry-run Pod create.
    #[default]
    Auto,
    /// Supported, without asking the cluster.
    Enabled,
    /// Not supported, without asking the cluster.
    Disabled,
}

/// What a probe found, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFinding {
    /// The fact.
    pub fact: UserNamespaces,
    /// Why, in a few words, for the log.
    pub reason: String,
}

/// The first Kubernetes minor version whose own Pod Security relaxes for
/// `hostUsers: false` without an alpha gate.
const RELAXING_MINOR: u32 = 35;

/// Reads the probe: the Pod the API server answered a dry-run create with
/// (sent with `hostUsers: false`) and the server's version.
///
/// - `hostUsers` gone: the server dropped it (its `UserNamespacesSupport`
///   gate is off), so Pods would be stored without it: not supported.
/// - `hostUsers: true`: something in admission rewrote it; nothing can be
///   told: unknown.
/// - kept, on Kubernetes 1.35 or later (the emulated version when the server
///   reports one): supported. Kept on an older one: not supported, since
///   that server's own Pod Security relaxes only behind an alpha gate this
///   probe cannot see (`--user-namespaces=enabled` says it is on).
/// - a version that does not parse: unknown.
pub fn decide(answer: &Pod, server: &Info) -> ProbeFinding {
    let finding = |fact, reason: String| ProbeFinding { fact, reason };
    let host_users = answer.spec.as_ref().and_then(|spec| spec.host_users);
    match host_users {
        None => {
            return finding(
                UserNamespaces::Unsupported,
                "the API server dropped spec.hostUsers from the Pod (its UserNamespacesSupport \
                 feature gate is off)"
                    .into(),
            );
        }
        Some(true) => {
            return finding(
                UserNamespaces::Unknown,
                "spec.hostUsers came back true: an admission webhook rewrote it".into(),
            );
        }
        Some(false) => {}
    }
    let major = server.emulation_major.as_deref().unwrap_or(&server.major);
    let minor = server.emulation_minor.as_deref().unwrap_or(&server.minor);
    match (leading_number(major), leading_number(minor)) {
        (Some(major), Some(minor)) if major > 1 || minor >= RELAXING_MINOR => finding(
            UserNamespaces::Supported,
            format!(
                "the API server keeps spec.hostUsers: false, and Kubernetes {major}.{minor}'s Pod \
                 Security relaxes for it"
            ),
        ),
        (Some(major), Some(minor)) => finding(
            UserNamespaces::Unsupported,
            format!(
                "the API server keeps spec.hostUsers: false, but Kubernetes {major}.{minor}'s Pod \
                 Security relaxes for it only with the alpha UserNamespacesPodSecurityStandards \
                 gate (1.35 without); set --user-namespaces=enabled if that gate is on"
            ),
        ),
        _ => finding(
            UserNamespaces::Unknown,
            format!("the API server's version {major:?}.{minor:?} does not parse"),
        ),
    }
}

/// The number a version part starts with (`"35+"` is 35, as some providers
/// report it).
fn leading_number(part: &str) -> Option<u32> {
    let digits = part
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(part.len());
    part[..digits].parse().ok()
}

/// The Pod the probe creates with `dryRun=All`: `hostUsers: false`, and
/// otherwise as small and as restricted as a Pod gets, so that Pod Security
/// at any level, a quota that wants limits and the ownership guard (no
/// owner reference, no `agents.x-k8s.io/` label) all admit it. Nothing is
/// stored, pulled or run.
pub fn probe_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "sandbox-operator-user-namespaces-probe-"},
        "spec": {
            "hostUsers": false,
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65534,
                "runAsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "probe",
                "image": "registry.k8s.io/pause:3.10",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": {
                    "requests": {"cpu": "1m", "memory": "8Mi"},
                    "limits": {"cpu": "10m", "memory": "16Mi"},
                },
            }],
        },
    }))
    .expect("the probe Pod is a valid Pod")
}

/// Asks the cluster once, in `namespace` (where the operator may create
/// Pods): the dry-run create of [`probe_pod`], then the server's version.
pub async fn probe(client: &Client, namespace: &str) -> Result<ProbeFinding, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answer = pods.create(&dry_run, &probe_pod()).await?;
    let server = client.apiserver_version().await?;
    Ok(decide(&answer, &server))
}

/// How long one probe attempt may take (the create and the version read).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The waits between probe attempts after a failed one; after the last
/// failure the fact stays unknown.
pub const RETRY_DELAYS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// Sets the fact of `store` as `setting` says: at once for `enabled` and
/// `disabled`; for `auto`, after a first probe in `namespace`, which this
/// awaits (so the webhook starts with an answer when the cluster gives
/// one), retrying in a spawned task when it failed.
pub async fn settle(
    setting: UserNamespacesSetting,
    client: &Client,
    namespace: String,
    store: &PolicyStore,
) {
    let fact = match setting {
        UserNamespacesSetting::Enabled => UserNamespaces::Supported,
        UserNamespacesSetting::Disabled => UserNamespaces::Unsupported,
        UserNamespacesSetting::Auto => {
            if attempt(client, &namespace, store, 1).await {
                return;
            }
            let (client, store) = (client.clone(), store.clone());
            tokio::spawn(async move {
                for (index, delay) in RETRY_DELAYS.into_iter().enumerate() {
                    tokio::time::sleep(delay).await;
                    if attempt(&client, &namespace, &store, index + 2).await {
                        return;
                    }
                }
                warn!(
                    namespace,
                    attempts = RETRY_DELAYS.len() + 1,
                    "user namespaces: not found out; hostUsers: false relaxes no Pod Security \
                     check (set --user-namespaces=enabled or disabled to say)"
                );
            });
            return;
        }
    };
    store.set_user_namespaces(fact);
    info!(?fact, "user namespaces: set by --user-namespaces");
}

/// One probe attempt; returns whether it gave an answer (which is then the
/// store's fact).
async fn attempt(client: &Client, namespace: &str, store: &PolicyStore, number: usize) -> bool {
    // Bounded: the first attempt holds the start (the webhook, readiness,
    // the leader election), and a slow API server or a slow Pod webhook of
    // the cluster must not hold it for the client's whole request timeout
    // (found by the second read); the retries go on in the background.
    let answer = match tokio::time::timeout(ATTEMPT_TIMEOUT, probe(client, namespace)).await {
        Ok(answer) => answer,
        Err(_) => {
            warn!(
                namespace,
                attempt = number,
                timeout_seconds = ATTEMPT_TIMEOUT.as_secs(),
                "user namespaces: the dry-run Pod create that finds out got no answer in time; trying again later (hostUsers: false relaxes nothing meanwhile)"
            );
            return false;
        }
    };
    match answer {
        Ok(ProbeFinding { fact, reason }) => {
            store.set_user_namespaces(fact);
            if fact.supported() {
                info!(?fact, namespace, reason, "user namespaces: probed");
            } else {
                warn!(
                    ?fact,
                    namespace,
                    reason,
                    "user namespaces: probed; hostUsers: false relaxes no Pod Security check"
                );
            }
            true
        }
        Err(error) => {
            let hint = match &error {
                kube::Error::Api(status) if status.code == 404 => {
                    "the namespace does not exist: create it, or set --user-namespaces"
                }
                kube::Error::Api(status) if status.code == 403 => {
                    "the operator may not create Pods there: grant it, or set --user-namespaces"
                }
                _ => "trying again later",
            };
            warn!(
                namespace,
                attempt = number,
                error = %error,
                hint,
                "user namespaces: the dry-run Pod create that finds out failed (hostUsers: false relaxes nothing meanwhile)"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(host_users: Option<bool>) -> Pod {
        let mut pod = probe_pod();
        pod.spec.as_mut().unwrap().host_users = host_users;
        pod
    }

    fn server(minor: &str, emulation_minor: Option<&str>) -> Info {
        Info {
            major: "1".into(),
            minor: minor.into(),
            emulation_major: emulation_minor.map(|_| "1".into()),
            emulation_minor: emulation_minor.map(Into::into),
            ..Info::default()
        }
    }

    #[test]
    fn the_probe_pod_asks_for_a_user_namespace_and_passes_restricted() {
        let pod = serde_json::to_value(probe_pod()).unwrap();
        assert_eq!(pod["spec"]["hostUsers"], false);
        let options = crate::admission::pss::PodSecurityOptions::new(
            crate::admission::Profile::Restricted,
            UserNamespaces::Unknown,
        );
        assert!(crate::admission::pss::check_pod_object(options, &pod).is_empty());
    }

    #[test]
    fn a_kept_host_users_on_1_35_or_later_is_supported() {
        for minor in ["35", "37", "36+"] {
            let finding = decide(&answer(Some(false)), &server(minor, None));
            assert_eq!(finding.fact, UserNamespaces::Supported, "{minor}");
        }
    }

    #[test]
    fn a_dropped_host_users_is_unsupported_whatever_the_version() {
        let finding = decide(&answer(None), &server("37", None));
        assert_eq!(finding.fact, UserNamespaces::Unsupported);
        assert!(
            finding.reason.contains("UserNamespacesSupport"),
            "{}",
            finding.reason
        );
        let finding = decide(&answer(None), &server("30", None));
        assert_eq!(finding.fact, UserNamespaces::Unsupported);
    }

    #[test]
    fn a_kept_host_users_before_1_35_is_unsupported_and_says_how_to_enable() {
        let finding = decide(&answer(Some(false)), &server("34", None));
        assert_eq!(finding.fact, UserNamespaces::Unsupported);
        assert!(
            finding.reason.contains("--user-namespaces=enabled"),
            "{}",
            finding.reason
        );
        // The emulated version is the one the server behaves as.
        let finding = decide(&answer(Some(false)), &server("37", Some("34")));
        assert_eq!(finding.fact, UserNamespaces::Unsupported);
    }

    #[test]
    fn a_rewritten_field_or_an_odd_version_is_unknown() {
        assert_eq!(
            decide(&answer(Some(true)), &server("37", None)).fact,
            UserNamespaces::Unknown
        );
        assert_eq!(
            decide(&answer(Some(false)), &server("latest", None)).fact,
            UserNamespaces::Unknown
        );
        assert!(!UserNamespaces::Unknown.supported());
        assert!(!UserNamespaces::Unsupported.supported());
        assert!(UserNamespaces::Supported.supported());
    }
}
