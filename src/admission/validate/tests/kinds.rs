//! Per-kind rules: replicas, immutability, template references, malformed objects.

use super::*;

#[test]
fn sandbox_replicas_must_be_zero_or_one() {
    for (replicas, allowed) in [
        (json!(0), true),
        (json!(1), true),
        (json!(2), false),
        (json!(-1), false),
    ] {
        let mut sandbox = aio_sandbox();
        sandbox["spec"]["replicas"] = replicas.clone();
        let verdict = create(SandboxKind::Sandbox, &sandbox);
        assert_eq!(verdict.allowed(), allowed, "{replicas}");
    }
    let mut sandbox = aio_sandbox();
    sandbox["spec"]["replicas"] = json!(2);
    assert_eq!(
        denials(&create(SandboxKind::Sandbox, &sandbox)),
        ["spec.replicas: 2 is outside the allowed range 0 to 1"]
    );
    sandbox["spec"]["replicas"] = json!("one");
    assert_eq!(
        denials(&create(SandboxKind::Sandbox, &sandbox)),
        ["spec.replicas: must be an integer"]
    );
}

#[test]
fn volume_claim_templates_cannot_change_on_update() {
    let mut old = aio_sandbox();
    old["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "work"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]);
    let mut new = old.clone();
    new["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
        json!("2Gi");
    let policy = Policy::default();
    let update = |new: &Value, old: &Value| {
        denials(&validate(
            SandboxKind::Sandbox,
            &Operation::Update,
            new,
            Some(old),
            &policy,
        ))
    };
    assert_eq!(
        update(&new, &old),
        ["spec.volumeClaimTemplates: field is immutable"]
    );
    assert_eq!(
        update(&aio_sandbox(), &old),
        ["spec.volumeClaimTemplates: field is immutable"]
    );
    assert_eq!(
        update(&old, &aio_sandbox()),
        ["spec.volumeClaimTemplates: field is immutable"]
    );
    assert!(update(&old, &old).is_empty());
    // Other fields may change.
    let mut paused = old.clone();
    paused["spec"]["replicas"] = json!(0);
    assert!(update(&paused, &old).is_empty());
    // On CREATE there is nothing to compare with.
    assert!(
        validate(
            SandboxKind::Sandbox,
            &Operation::Create,
            &new,
            Some(&old),
            &policy
        )
        .allowed()
    );
}

#[test]
fn claims_need_a_template_name_that_never_changes() {
    assert!(create(SandboxKind::SandboxClaim, &claim()).allowed());
    for (reference, expected) in [
        (
            json!({"name": ""}),
            "spec.sandboxTemplateRef.name: must not be empty",
        ),
        (json!({}), "spec.sandboxTemplateRef.name: must not be empty"),
        (
            json!({"name": 5}),
            "spec.sandboxTemplateRef.name: must be a string",
        ),
        (json!("aio"), "spec.sandboxTemplateRef: must be an object"),
        (json!(null), "spec.sandboxTemplateRef: is required"),
    ] {
        let mut object = claim();
        object["spec"]["sandboxTemplateRef"] = reference;
        assert_eq!(
            denials(&create(SandboxKind::SandboxClaim, &object)),
            [expected]
        );
    }
    let mut object = claim();
    object["spec"]["sandboxTemplateRef"]["name"] = json!("Not_A_Name");
    assert!(
        denials(&create(SandboxKind::SandboxClaim, &object))[0]
            .starts_with("spec.sandboxTemplateRef.name: \"Not_A_Name\" is not a valid object name")
    );

    let mut moved = claim();
    moved["spec"]["sandboxTemplateRef"]["name"] = json!("other");
    let verdict = update(SandboxKind::SandboxClaim, &moved, &claim());
    assert_eq!(
        denials(&verdict),
        ["spec.sandboxTemplateRef: field is immutable"]
    );
}

#[test]
fn pool_replicas_are_capped_and_the_template_may_change() {
    assert!(create(SandboxKind::SandboxWarmPool, &pool(1000)).allowed());
    assert_eq!(
        denials(&create(SandboxKind::SandboxWarmPool, &pool(1001))),
        ["spec.replicas: 1001 exceeds the maximum 1000"]
    );
    assert_eq!(
        denials(&create(SandboxKind::SandboxWarmPool, &pool(-1))),
        ["spec.replicas: -1 must not be negative"]
    );
    let small = Policy::from_yaml("maxPoolReplicas: 5").unwrap();
    assert!(
        !validate(
            SandboxKind::SandboxWarmPool,
            &Operation::Create,
            &pool(6),
            None,
            &small
        )
        .allowed()
    );

    let mut retemplated = pool(3);
    retemplated["spec"]["sandboxTemplateRef"]["name"] = json!("aio-v2");
    let verdict = update(SandboxKind::SandboxWarmPool, &retemplated, &pool(3));
    assert!(verdict.allowed());
}

#[test]
fn malformed_objects_get_clear_denials_not_panics() {
    let cases = [
        (
            json!({"spec": {"podTemplate": "nope"}}),
            "spec.podTemplate: must be an object",
        ),
        (
            json!({"spec": {"podTemplate": {}}}),
            "spec.podTemplate.spec: is required",
        ),
        (json!({"spec": []}), "spec: must be an object"),
        (json!({}), "spec: is required"),
        (json!("text"), "the object must be a JSON object"),
        (
            json!({"spec": {"podTemplate": {"spec": {}}}}),
            "spec.podTemplate.spec.containers: at least one container is required",
        ),
        (
            json!({"spec": {"podTemplate": {"spec": {"containers": [7]}}}}),
            "spec.podTemplate.spec.containers[0]: must be an object",
        ),
        (
            json!({"spec": {"podTemplate": {"spec": {"containers": [{"image": "a:1", "resources": {"limits": []}}]}}}}),
            "spec.podTemplate.spec.containers[0].resources.limits: must be an object",
        ),
        (
            json!({"spec": {"podTemplate": {"spec": {"containers": [{"image": "a:1"}], "hostNetwork": "yes"}}}}),
            "spec.podTemplate.spec.hostNetwork: must be true or false",
        ),
    ];
    for (object, expected) in cases {
        let verdict = create(SandboxKind::Sandbox, &object);
        assert_eq!(denials(&verdict), [expected], "{object}");
    }
    assert_eq!(
        denials(&create(
            SandboxKind::SandboxWarmPool,
            &json!({"spec": {"sandboxTemplateRef": {"name": "a"}}})
        )),
        ["spec.replicas: is required"]
    );
}

#[test]
fn all_findings_are_reported_together() {
    let verdict = create_sandbox_with(
        json!({"securityContext": {"privileged": true}, "resources": {"limits": {"memory": "128Gi"}}}),
        json!({"hostNetwork": true}),
    );
    assert_eq!(verdict.denials.len(), 3);
    assert_eq!(verdict.message().matches("; ").count(), 2);
}

/// A `shutdownTime` without a `shutdownPolicy` is admitted with a warning
/// that the default deletes the Sandbox and its volume claims (upstream
/// agent-sandbox v0.1.1 and later default to Retain).
#[test]
fn a_shutdown_time_without_a_policy_warns_that_it_deletes() {
    let mut sandbox = super::sandbox_with(json!({}), json!({}));
    sandbox["spec"]["shutdownTime"] = json!("2030-01-01T00:00:00Z");
    let verdict = create(SandboxKind::Sandbox, &sandbox);
    assert!(verdict.allowed(), "{}", verdict.message());
    assert_eq!(verdict.warnings.len(), 1, "{:?}", verdict.warnings);
    assert!(
        verdict.warnings[0].starts_with(
            "spec.shutdownPolicy: not set, so at spec.shutdownTime the Sandbox is deleted"
        ),
        "{:?}",
        verdict.warnings
    );
    for policy in ["Delete", "Retain"] {
        sandbox["spec"]["shutdownPolicy"] = json!(policy);
        assert!(
            create(SandboxKind::Sandbox, &sandbox).warnings.is_empty(),
            "{policy}"
        );
    }
    // Without a shutdownTime there is nothing to say.
    let plain = super::sandbox_with(json!({}), json!({}));
    assert!(create(SandboxKind::Sandbox, &plain).warnings.is_empty());
}

/// A template's `networkPolicy` that leaves egress out is admitted with a
/// warning that it allows no egress, DNS included.
#[test]
fn a_network_policy_without_egress_warns_that_it_denies_all() {
    let template = |network: Value| {
        json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
            "metadata": {"name": "t"},
            "spec": {"podTemplate": super::sandbox_with(json!({}), json!({}))["spec"]["podTemplate"].clone(),
                "networkPolicy": network}})
    };
    let verdict = create(
        SandboxKind::SandboxTemplate,
        &template(json!({"ingress": [{}]})),
    );
    assert!(verdict.allowed(), "{}", verdict.message());
    assert_eq!(
        verdict.warnings,
        [
            "spec.networkPolicy.egress: not set, so sandboxes of this template get no egress at all, DNS included; `egress: [{}]` allows everywhere but the policy file's denied ranges"
        ]
    );
    let open = create(
        SandboxKind::SandboxTemplate,
        &template(json!({"egress": [{}]})),
    );
    assert!(open.warnings.is_empty(), "{:?}", open.warnings);
}

/// A claim's `spec.warmpool` is `default`, `none` or a pool's name: the
/// controller reads any other string as a pool's name, so `Default` or a
/// typo named a pool that cannot exist and the claim started cold with no
/// word (found by review).
#[test]
fn a_claims_warm_pool_is_default_none_or_a_pool_name() {
    for choice in [
        json!("default"),
        json!("none"),
        json!("aio-pool"),
        json!("pool.v2"),
        json!(""),
        json!(null),
    ] {
        let mut object = claim();
        object["spec"]["warmpool"] = choice.clone();
        let verdict = create(SandboxKind::SandboxClaim, &object);
        assert!(verdict.allowed(), "{choice}: {}", verdict.message());
    }
    const RULE: &str = "is not default, none or a pool name (a valid object name: lowercase \
                        letters, digits, '-' and '.', starting and ending with a letter or digit, \
                        at most 253 characters)";
    for (choice, expected) in [
        (
            json!("Default"),
            format!("spec.warmpool: \"Default\" {RULE}"),
        ),
        (json!("NONE"), format!("spec.warmpool: \"NONE\" {RULE}")),
        (
            json!("Bad Pool!"),
            format!("spec.warmpool: \"Bad Pool!\" {RULE}"),
        ),
        (json!("pool-"), format!("spec.warmpool: \"pool-\" {RULE}")),
        (json!(5), "spec.warmpool: must be a string".to_owned()),
    ] {
        let mut object = claim();
        object["spec"]["warmpool"] = choice;
        assert_eq!(
            denials(&create(SandboxKind::SandboxClaim, &object)),
            [expected]
        );
    }
}
