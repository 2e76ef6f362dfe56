//! Label and annotation keys: the only state the controllers share. Every
//! relation (pool -> idle Pod, claim -> stolen Pod, sandbox -> Pod) can be
//! rebuilt from these keys plus ownerReferences after a restart.

/// On a Sandbox: the Pod to adopt instead of creating one (set by the claim
/// controller after a warm steal).
pub const POD_NAME_ANNOTATION: &str = "agents.x-k8s.io/pod-name";

/// On every Pod a Sandbox owns: the Sandbox's name (the Service selects on it).
pub const SANDBOX_LABEL: &str = "agents.x-k8s.io/sandbox";

/// On idle warm Pods: the pool they belong to. Removed by the steal.
pub const POOL_LABEL: &str = "agents.x-k8s.io/warm-pool";

/// On warm Pods: hash of the template spec they were made from
/// ([`crate::api::template_hash`]); on a Pod a Sandbox creates, of the
/// Sandbox's `spec.podTemplate` it was made from (the same hash: a claim's
/// Sandbox copies its template's), so a Sandbox can tell its running Pod is
/// of an earlier template. Only the operator writes it on Pods it creates.
pub const TEMPLATE_HASH_LABEL: &str = "agents.x-k8s.io/template-hash";

/// On warm Pods: the template name (so claims find candidates per template).
pub const TEMPLATE_LABEL: &str = "agents.x-k8s.io/sandbox-template";

/// On a stolen Pod: the claim it serves. Added by the steal.
pub const CLAIM_LABEL: &str = "agents.x-k8s.io/claim";

/// On a stolen Pod: the UID of the claim it serves (guards against a claim
/// deleted and re-created under the same name).
pub const CLAIM_UID_LABEL: &str = "agents.x-k8s.io/claim-uid";

/// On a Pod a Sandbox controls: the UID of that Sandbox, set when the
/// Sandbox controller creates or adopts it. A standalone Sandbox's Service
/// selects it next to the Sandbox's name: a Pod left behind by an orphaning
/// delete keeps its name label, never the uid of a later Sandbox of that name.
pub const SANDBOX_UID_LABEL: &str = "agents.x-k8s.io/sandbox-uid";

/// On claims: the moment the API server admitted the claim (RFC 3339 with
/// nanoseconds), stamped by the mutating webhook for latency measurement.
pub const ADMITTED_AT_ANNOTATION: &str = "agents.x-k8s.io/admitted-at";

/// The admission stamp ([`ADMITTED_AT_ANNOTATION`]) of a claim, or of the
/// Sandbox that copies it, when present and well formed. Only measurements
/// read it (the webhook writes it on create and refuses its change later).
pub fn admission_stamp(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<jiff::Timestamp> {
    meta.annotations
        .as_ref()?
        .get(ADMITTED_AT_ANNOTATION)?
        .parse()
        .ok()
}

/// On Pods: when the warm-pool controller created the replacement Pod
/// (RFC 3339, nanoseconds), for the replenish-latency metric.
pub const CREATED_AT_ANNOTATION: &str = "agents.x-k8s.io/created-at";

/// Field manager name used for every write of the operator.
pub const FIELD_MANAGER: &str = "sandbox-operator";

/// On every Pod a pool creates, kept by the steal: the pool it came from. The
/// pool's watch maps a stolen Pod back to the pool through it (the refill),
/// and the pool's NetworkPolicy selects it (idle and stolen Pods alike).
pub const ORIGIN_POOL_LABEL: &str = "agents.x-k8s.io/origin-pool";

/// On a Pod the operator did not create: the owner's explicit consent that
/// a Sandbox naming it in `agents.x-k8s.io/pod-name` may take it over
/// (value `"true"`). Without it an unowned Pod is never adopted.
pub const ADOPTABLE_LABEL: &str = "agents.x-k8s.io/adoptable";

/// Whether a label or annotation key is reserved for the operator: the
/// `agents.x-k8s.io/` prefix and its subdomains (`extensions.agents.x-k8s.io/`,
/// ...) and the managed-by label. A user's pod template may not carry them
/// (the webhook refuses them, and the controllers strip them when they build
/// a Pod).
pub fn is_reserved_key(key: &str) -> bool {
    if key == "app.kubernetes.io/managed-by" {
        return true;
    }
    match key.split_once('/') {
        Some((prefix, _)) => prefix == "agents.x-k8s.io" || prefix.ends_with(".agents.x-k8s.io"),
        None => false,
    }
}
