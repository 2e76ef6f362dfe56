//! The reasons the operator writes in `Ready` conditions. They are part of
//! the API: clients, `kubectl wait` scripts and alerts match on them, so they
//! are listed here, in one place, and never change meaning.

// The Sandbox's `Ready` condition (Sandbox controller).

/// The Pod is Running and Ready.
pub const POD_READY: &str = "PodReady";
/// The Pod exists but is not Ready yet.
pub const POD_PENDING: &str = "PodPending";
/// A Pod is being created.
pub const CREATING: &str = "CreatingPod";
/// The named Pod is being taken over.
pub const ADOPTING: &str = "AdoptingPod";
/// The named Pod belongs to another owner; it is left alone.
pub const POD_OWNED_ELSEWHERE: &str = "PodOwnedElsewhere";
/// The node evicted the Pod; it is replaced.
pub const POD_EVICTED: &str = "PodEvicted";
/// The Pod failed.
pub const POD_FAILED: &str = "PodFailed";
/// The Pod ran to completion.
pub const POD_SUCCEEDED: &str = "PodSucceeded";
/// The Pod is being deleted.
pub const POD_TERMINATING: &str = "PodTerminating";
/// `replicas: 0`.
pub const PAUSED: &str = "Paused";
/// `shutdownTime` has passed.
pub const EXPIRED: &str = "SandboxExpired";
/// The pod template fails the current admission policy; no Pod is created.
pub const POLICY_VIOLATION: &str = "PolicyViolation";
/// More than one Pod is owned; nothing more is created.
pub const MULTIPLE_PODS: &str = "MultiplePods";
/// The API server refused an object the Sandbox makes (its Pod, a volume
/// claim or its Service) as invalid; tried again with backoff.
pub const POD_REJECTED: &str = "PodRejected";
/// The Sandbox's `PodTemplateApplied` condition (`False`): its running Pod
/// was made from an earlier `spec.podTemplate`.
pub const POD_TEMPLATE_CHANGED: &str = "PodTemplateChanged";

// The claim's `Ready` condition (claim controller). A claim whose Sandbox
// is not Ready yet also carries the Sandbox's own reason in its message.
// Besides these, a claim waiting for its NetworkPolicy to be made again
// says `NETWORK_POLICY_REPLACING` (below).

/// The Sandbox (and its Pod) is Ready.
pub const SANDBOX_READY: &str = "SandboxReady";
/// The Sandbox exists but is not Ready.
pub const SANDBOX_NOT_READY: &str = "SandboxNotReady";
/// The Sandbox was just created.
pub const SANDBOX_CREATED: &str = "SandboxCreated";
/// The claim's template does not exist.
pub const TEMPLATE_NOT_FOUND: &str = "TemplateNotFound";
/// An object the claim (or the pool) needs exists under its name but is
/// not its own.
pub const NAME_CONFLICT: &str = "NameConflict";
/// The admission webhook or the API server's validation refused an object.
pub const SANDBOX_REJECTED: &str = "SandboxRejected";
/// The operator lacks a permission (RBAC).
pub const FORBIDDEN: &str = "Forbidden";
/// A ResourceQuota refused an object.
pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
/// `lifecycle.shutdownTime` has passed (policy Retain).
pub const CLAIM_EXPIRED: &str = "ClaimExpired";

// The pool's `Ready` condition (warm-pool controller), besides
// `TEMPLATE_NOT_FOUND`, `POLICY_VIOLATION` (its template's) and
// `NAME_CONFLICT` (its NetworkPolicy's name).

/// Every idle Pod the pool keeps is Ready.
pub const POOL_FULL: &str = "PoolFull";
/// Idle Pods are being made or are starting.
pub const FILLING: &str = "Filling";
/// The pool's NetworkPolicy could not be written; no Pod is created.
pub const NETWORK_POLICY_FAILED: &str = "NetworkPolicyFailed";
/// A Sandbox's NetworkPolicy (its own, or its claim's) was deleted while a
/// Pod ran and is held until that Pod is gone (see
/// `controller::policy_hold`); no new Pod starts until it is made again.
pub const NETWORK_POLICY_REPLACING: &str = "NetworkPolicyReplacing";
/// The scheduler reports some of the pool's Pods Unschedulable; no more
/// are created for them.
pub const PODS_UNSCHEDULABLE: &str = "PodsUnschedulable";
/// `spec.replicas` is above the policy's `maxPoolReplicas`; the pool keeps
/// the cap.
pub const REPLICAS_CAPPED: &str = "ReplicasCapped";

// The pool's `Exhausted` condition: `True` with `NoIdlePod` while the pool
// keeps Pods and none is idle and Ready, else `False` with
// `IdlePodsAvailable`.

/// No idle Ready Pod (`Exhausted=True`).
pub const NO_IDLE_POD: &str = "NoIdlePod";
/// At least one idle Ready Pod, or a pool that keeps none (`Exhausted=False`).
pub const IDLE_PODS_AVAILABLE: &str = "IdlePodsAvailable";

// Event reasons (not conditions).

/// Warning: a Sandbox's `agents.x-k8s.io/pod-name` names a Pod that is gone
/// or terminating; the Sandbox makes a new Pod.
pub const ADOPTION_FAILED: &str = "AdoptionFailed";
/// Normal: a claim found no idle Ready Pod in its pool (it takes a pool
/// Pod still starting, or goes the cold path).
pub const POOL_EXHAUSTED: &str = "PoolExhausted";
