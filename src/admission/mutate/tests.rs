//! Unit tests of defaulting.

use super::*;
use crate::admission::UserNamespaces;
use crate::admission::tests::{aio_sandbox, claim, object_from_yaml, pool};

fn now() -> Timestamp {
    "2026-03-01T12:00:00.123456789Z".parse().unwrap()
}

/// Mutates, applies the patch, and checks that a second pass is a no-op.
fn mutate_twice(
    kind: SandboxKind,
    object: &Value,
    policy: &Policy,
) -> (Vec<PatchOperation>, Value) {
    let patch = mutate(kind, &Operation::Create, object, None, policy, now()).unwrap();
    let mut mutated = object.clone();
    json_patch::patch(&mut mutated, &patch).unwrap();
    let again = mutate(kind, &Operation::Create, &mutated, None, policy, now()).unwrap();
    assert!(
        again.is_empty(),
        "not idempotent: {}",
        serde_json::to_string(&again).unwrap()
    );
    (patch, mutated)
}

fn pointers(patch: &[PatchOperation]) -> Vec<String> {
    patch.iter().map(|op| op.path().to_string()).collect()
}

#[test]
fn the_seed_aio_sandbox_keeps_every_field_it_sets() {
    let aio = aio_sandbox();
    let (patch, mutated) = mutate_twice(SandboxKind::Sandbox, &aio, &Policy::default());
    assert_eq!(
        pointers(&patch),
        [
            "/spec/podTemplate/spec/automountServiceAccountToken",
            "/spec/podTemplate/spec/securityContext",
        ]
    );
    let container = &mutated["spec"]["podTemplate"]["spec"]["containers"][0];
    assert_eq!(
        container,
        &aio["spec"]["podTemplate"]["spec"]["containers"][0]
    );
    assert_eq!(
        mutated["spec"]["podTemplate"]["spec"]["securityContext"],
        json!({"seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        mutated["spec"]["podTemplate"]["spec"]["automountServiceAccountToken"],
        false
    );
}

#[test]
fn a_bare_container_gets_resources_and_hardening() {
    let sandbox = object_from_yaml(
        "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: s}\nspec:\n  podTemplate:\n    spec:\n      initContainers: [{name: init, image: busybox:1}]\n      containers: [{name: c, image: busybox:1}]\n",
    );
    let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &sandbox, &Policy::default());
    for list in ["initContainers", "containers"] {
        let container = &mutated["spec"]["podTemplate"]["spec"][list][0];
        assert_eq!(
            container["resources"],
            json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}),
        );
        assert_eq!(
            container["securityContext"],
            json!({"allowPrivilegeEscalation": false})
        );
    }
}

#[test]
fn resources_are_defaulted_per_resource() {
    let sandbox = object_from_yaml(
        "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      containers:\n      - {name: limit-only, image: a:1, resources: {limits: {memory: 1Gi}}}\n      - {name: request-small, image: a:1, resources: {requests: {cpu: 500m, memory: 1Gi}}}\n      - {name: request-big, image: a:1, resources: {requests: {cpu: 4, memory: 4Gi}}}\n      - {name: empty, image: a:1, resources: {}}\n",
    );
    let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &sandbox, &Policy::default());
    let resources =
        |i: usize| mutated["spec"]["podTemplate"]["spec"]["containers"][i]["resources"].clone();
    // memory: limit only -> left alone; cpu: neither -> both defaults.
    assert_eq!(
        resources(0),
        json!({"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi", "cpu": "2"}})
    );
    // Requests below the default limits get the default limits.
    assert_eq!(
        resources(1),
        json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}})
    );
    // Requests above the default limits become the limits.
    assert_eq!(
        resources(2),
        json!({"requests": {"cpu": 4, "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}})
    );
    assert_eq!(
        resources(3),
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}})
    );
}

#[test]
fn a_pod_level_budget_replaces_the_container_defaults_it_names() {
    let sandbox = object_from_yaml(
        "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      resources: {limits: {cpu: 500m}, requests: {memory: 1Gi}}\n      initContainers:\n      - {name: init, image: a:1, resources: {limits: {memory: 3Gi}}}\n      containers:\n      - {name: bare, image: a:1}\n",
    );
    let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &sandbox, &Policy::default());
    let spec = &mutated["spec"]["podTemplate"]["spec"];
    // cpu has a pod-level limit, memory a pod-level request: no container
    // gets a default of either (their sum could exceed the pod's request, a
    // default limit its limit, and Kubernetes would refuse the Pod).
    assert!(spec["containers"][0].get("resources").is_none(), "{spec}");
    assert_eq!(
        spec["initContainers"][0]["resources"],
        json!({"limits": {"memory": "3Gi"}})
    );
    // The pod-level request without a limit gets one, never below a
    // container's own limit (3Gi, above the 2Gi default and the request).
    assert_eq!(
        spec["resources"],
        json!({"limits": {"cpu": "500m", "memory": "3Gi"}, "requests": {"memory": "1Gi"}})
    );
    // A pod-level budget of neither: the containers' defaults as before.
    let sandbox = object_from_yaml(
        "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      resources: {}\n      containers:\n      - {name: bare, image: a:1}\n",
    );
    let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &sandbox, &Policy::default());
    let spec = &mutated["spec"]["podTemplate"]["spec"];
    assert_eq!(
        spec["containers"][0]["resources"],
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}})
    );
    assert_eq!(spec["resources"], json!({}));
}

#[test]
fn null_defaults_are_not_applied() {
    let policy = Policy::from_yaml(
        "defaults: {requests: {cpu: null, memory: null}, limits: {cpu: null, memory: null}}\nautomountServiceAccountToken: true\n",
    )
    .unwrap();
    let (_, mutated) = mutate_twice(SandboxKind::SandboxTemplate, &aio_template_bare(), &policy);
    let spec = &mutated["spec"]["podTemplate"]["spec"];
    assert!(spec["containers"][0].get("resources").is_none());
    assert!(spec.get("automountServiceAccountToken").is_none());
}

fn aio_template_bare() -> Value {
    object_from_yaml(
        "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxTemplate\nmetadata: {name: t}\nspec:\n  podTemplate:\n    spec:\n      containers: [{name: c, image: a:1}]\n",
    )
}

#[test]
fn set_fields_are_never_overwritten() {
    let sandbox = object_from_yaml(
        "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      automountServiceAccountToken: true\n      runtimeClassName: kata\n      securityContext: {seccompProfile: {type: Localhost, localhostProfile: p.json}, runAsNonRoot: false}\n      containers:\n      - name: c\n        image: a:1\n        resources: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 1, memory: 1Gi}}\n        securityContext: {allowPrivilegeEscalation: true, capabilities: {drop: [ALL]}}\n",
    );
    let policy =
        Policy::from_yaml("profile: restricted\ndefaultRuntimeClassName: gvisor\n").unwrap();
    let patch = mutate(
        SandboxKind::Sandbox,
        &Operation::Create,
        &sandbox,
        None,
        &policy,
        now(),
    )
    .unwrap();
    assert!(
        patch.is_empty(),
        "{}",
        serde_json::to_string(&patch).unwrap()
    );
}

#[test]
fn only_an_exact_all_counts_as_dropping_every_capability() {
    // Pod Security compares `ALL` exactly, so a lower-case `all` gets the
    // exact spelling added next to it (the user's entry is kept).
    let sandbox = object_from_yaml(
        "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      containers:\n      - {name: c, image: a:1, securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [all]}}}\n",
    );
    let policy = Policy::from_yaml("profile: restricted").unwrap();
    let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &sandbox, &policy);
    assert_eq!(
        mutated["spec"]["podTemplate"]["spec"]["containers"][0]["securityContext"]["capabilities"]
            ["drop"],
        json!(["all", "ALL"])
    );
}

#[test]
fn windows_pods_get_no_linux_only_fields_and_user_namespaces_no_run_as_non_root() {
    let policy = Policy::from_yaml("profile: restricted").unwrap();
    let windows = object_from_yaml(
        "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      os: {name: windows}\n      containers: [{name: c, image: a:1}]\n",
    );
    let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &windows, &policy);
    let spec = &mutated["spec"]["podTemplate"]["spec"];
    assert_eq!(spec["securityContext"], json!({"runAsNonRoot": true}));
    assert!(spec["containers"][0].get("securityContext").is_none());

    let user_namespace = object_from_yaml(
        "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      hostUsers: false\n      containers: [{name: c, image: a:1}]\n",
    );
    let supported = Policy {
        user_namespaces: UserNamespaces::Supported,
        ..policy.clone()
    };
    let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &user_namespace, &supported);
    assert_eq!(
        mutated["spec"]["podTemplate"]["spec"]["securityContext"],
        json!({"seccompProfile": {"type": "RuntimeDefault"}})
    );
}

#[test]
fn host_users_false_skips_run_as_non_root_only_where_user_namespaces_are_supported() {
    // Where the API server may drop hostUsers, Pod Security asks for
    // runAsNonRoot: it is defaulted as for any pod.
    let user_namespace = object_from_yaml(
        "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      hostUsers: false\n      containers: [{name: c, image: a:1}]\n",
    );
    for fact in [UserNamespaces::Unknown, UserNamespaces::Unsupported] {
        let policy = Policy {
            user_namespaces: fact,
            ..Policy::from_yaml("profile: restricted").unwrap()
        };
        let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &user_namespace, &policy);
        assert_eq!(
            mutated["spec"]["podTemplate"]["spec"]["securityContext"],
            json!({"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": true}),
            "{fact:?}"
        );
    }
}

#[test]
fn restricted_profile_adds_non_root_and_drops_all() {
    let policy =
        Policy::from_yaml("profile: restricted\ndefaultRuntimeClassName: gvisor\n").unwrap();
    let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &aio_sandbox(), &policy);
    let spec = &mutated["spec"]["podTemplate"]["spec"];
    assert_eq!(
        spec["securityContext"],
        json!({"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": true})
    );
    assert_eq!(spec["runtimeClassName"], "gvisor");
    assert_eq!(
        spec["containers"][0]["securityContext"],
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
    );

    let sandbox = object_from_yaml(
        "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      securityContext: {runAsUser: 1000}\n      containers:\n      - {name: a, image: a:1, securityContext: {capabilities: {add: [NET_BIND_SERVICE]}}}\n      - {name: b, image: a:1, securityContext: {capabilities: {drop: [NET_RAW]}}}\n",
    );
    let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &sandbox, &policy);
    let spec = &mutated["spec"]["podTemplate"]["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["containers"][0]["securityContext"]["capabilities"],
        json!({"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]})
    );
    assert_eq!(
        spec["containers"][1]["securityContext"]["capabilities"]["drop"],
        json!(["NET_RAW", "ALL"])
    );
}

#[test]
fn privileged_containers_are_left_for_validation_to_deny() {
    let sandbox = object_from_yaml(
        "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      containers:\n      - {name: a, image: a:1, securityContext: {privileged: true}}\n      - {name: b, image: a:1, securityContext: {capabilities: {add: [CAP_SYS_ADMIN]}}}\n",
    );
    let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &sandbox, &Policy::default());
    for i in 0..2 {
        let context = &mutated["spec"]["podTemplate"]["spec"]["containers"][i]["securityContext"];
        assert!(context.get("allowPrivilegeEscalation").is_none());
    }
}

#[test]
fn claims_are_stamped_once_on_create() {
    let (patch, mutated) = mutate_twice(SandboxKind::SandboxClaim, &claim(), &Policy::default());
    assert_eq!(pointers(&patch), ["/metadata/annotations"]);
    assert_eq!(
        mutated["metadata"]["annotations"][ADMITTED_AT_ANNOTATION],
        "2026-03-01T12:00:00.123456789Z"
    );

    let mut annotated = claim();
    annotated["metadata"]["annotations"] = json!({"team": "a"});
    let (patch, mutated) = mutate_twice(SandboxKind::SandboxClaim, &annotated, &Policy::default());
    assert_eq!(
        pointers(&patch),
        ["/metadata/annotations/agents.x-k8s.io~1admitted-at"]
    );
    assert_eq!(mutated["metadata"]["annotations"]["team"], "a");

    let whole_seconds: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
    let patch = mutate(
        SandboxKind::SandboxClaim,
        &Operation::Create,
        &claim(),
        None,
        &Policy::default(),
        whole_seconds,
    )
    .unwrap();
    let mut stamped = claim();
    json_patch::patch(&mut stamped, &patch).unwrap();
    assert_eq!(
        stamped["metadata"]["annotations"][ADMITTED_AT_ANNOTATION],
        "2026-03-01T12:00:00.000000000Z"
    );

    let update = mutate(
        SandboxKind::SandboxClaim,
        &Operation::Update,
        &claim(),
        None,
        &Policy::default(),
        now(),
    )
    .unwrap();
    assert!(update.is_empty());
    let off = Policy::from_yaml("stampClaims: false").unwrap();
    assert!(
        mutate(
            SandboxKind::SandboxClaim,
            &Operation::Create,
            &claim(),
            None,
            &off,
            now()
        )
        .unwrap()
        .is_empty()
    );
}

/// A policy added a default runtime class since the seed Sandbox was
/// stored: an UPDATE that leaves the pod template alone gets no patch (it
/// would make the template look changed, and be checked whole), one that
/// changes it is defaulted, and a terminating object never is.
#[test]
fn unchanged_pod_templates_get_no_defaults_on_update() {
    let (_, stored) = mutate_twice(SandboxKind::Sandbox, &aio_sandbox(), &Policy::default());
    let policy = Policy::from_yaml("defaultRuntimeClassName: gvisor").unwrap();
    let update = |new: &Value, old: Option<&Value>| {
        mutate(
            SandboxKind::Sandbox,
            &Operation::Update,
            new,
            old,
            &policy,
            now(),
        )
        .unwrap()
    };
    let mut labelled = stored.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    assert!(update(&labelled, Some(&stored)).is_empty());
    // A template that is malformed but unchanged is left to validation too.
    let mut malformed = stored.clone();
    malformed["spec"]["podTemplate"]["spec"]["containers"] = json!({});
    assert!(update(&malformed, Some(&malformed)).is_empty());

    let mut retagged = stored.clone();
    retagged["spec"]["podTemplate"]["spec"]["containers"][0]["image"] = json!("a:2");
    assert_eq!(
        pointers(&update(&retagged, Some(&stored))),
        ["/spec/podTemplate/spec/runtimeClassName"]
    );
    // Without the stored version, the template counts as changed.
    assert_eq!(
        pointers(&update(&labelled, None)),
        ["/spec/podTemplate/spec/runtimeClassName"]
    );

    let mut terminating = retagged.clone();
    terminating["metadata"]["deletionTimestamp"] = json!("2026-03-01T12:00:00Z");
    assert!(update(&terminating, Some(&stored)).is_empty());
    // CREATE ignores a stored version and the deletion timestamp.
    let created = mutate(
        SandboxKind::Sandbox,
        &Operation::Create,
        &terminating,
        Some(&terminating),
        &policy,
        now(),
    )
    .unwrap();
    assert_eq!(
        pointers(&created),
        ["/spec/podTemplate/spec/runtimeClassName"]
    );
}

#[test]
fn pools_are_not_mutated() {
    let patch = mutate(
        SandboxKind::SandboxWarmPool,
        &Operation::Create,
        &pool(3),
        None,
        &Policy::default(),
        now(),
    )
    .unwrap();
    assert!(patch.is_empty());
}

#[test]
fn malformed_objects_are_refused_with_the_field() {
    let cases = [
        (
            json!({"kind": "Sandbox", "spec": {"podTemplate": "nope"}}),
            "spec.podTemplate: must be an object",
        ),
        (
            json!({"kind": "Sandbox", "spec": {}}),
            "spec.podTemplate: is required",
        ),
        (json!({"kind": "Sandbox"}), "spec: is required"),
        (
            json!({"kind": "Sandbox", "spec": {"podTemplate": {"spec": {"containers": {}}}}}),
            "spec.podTemplate.spec.containers: must be a list",
        ),
        (
            json!({"kind": "Sandbox", "spec": {"podTemplate": {"spec": {"containers": [1]}}}}),
            "spec.podTemplate.spec.containers[0]: must be an object",
        ),
        (
            json!({"kind": "Sandbox", "spec": {"podTemplate": {"spec": {"containers": [{"resources": []}]}}}}),
            "spec.podTemplate.spec.containers[0].resources: must be an object",
        ),
        (json!([1, 2]), "the object must be a JSON object"),
    ];
    for (object, expected) in cases {
        let denial = mutate(
            SandboxKind::Sandbox,
            &Operation::Create,
            &object,
            None,
            &Policy::default(),
            now(),
        )
        .unwrap_err();
        assert_eq!(denial.to_string(), expected);
    }
    let bad_claim = json!({"metadata": {"annotations": "x"}});
    assert_eq!(
        mutate(
            SandboxKind::SandboxClaim,
            &Operation::Create,
            &bad_claim,
            None,
            &Policy::default(),
            now()
        )
        .unwrap_err()
        .to_string(),
        "metadata.annotations: must be an object"
    );
}
