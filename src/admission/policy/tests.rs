//! The policy file: parsing, defaults, and the errors that name the field.

use super::*;

fn error(yaml: &str) -> String {
    Policy::from_yaml(yaml).unwrap_err().to_string()
}

/// The file is refused with a message that starts with `prefix`.
fn assert_refused_starting(yaml: &str, prefix: &str) {
    let message = error(yaml);
    assert!(message.starts_with(prefix), "{message}");
}

/// The file is refused with a message that mentions `fragment`.
fn assert_refused_mentioning(yaml: &str, fragment: &str) {
    let message = error(yaml);
    assert!(message.contains(fragment), "{message}");
}

#[test]
fn the_documented_default_file_is_the_default_policy() {
    assert_eq!(
        Policy::from_yaml(DEFAULT_POLICY_YAML).unwrap(),
        Policy::default()
    );
    Policy::default().check().unwrap();
}

#[test]
fn an_empty_document_is_the_default_policy() {
    assert_eq!(Policy::from_yaml("").unwrap(), Policy::default());
    assert_eq!(Policy::from_yaml("# nothing\n").unwrap(), Policy::default());
    assert_eq!(Policy::from_yaml("{}").unwrap(), Policy::default());
}

#[test]
fn omitted_keys_keep_their_defaults_and_null_turns_them_off() {
    let policy =
        Policy::from_yaml("ceilings:\n  cpu: 8\ndefaults:\n  limits:\n    cpu: null\n").unwrap();
    assert_eq!(policy.ceilings.cpu, Some(Quantity::parse("8").unwrap()));
    assert_eq!(policy.ceilings.memory, Ceilings::default().memory);
    assert_eq!(policy.defaults.limits.cpu, None);
    assert_eq!(
        policy.defaults.limits.memory,
        DefaultLimits::default().memory
    );
    assert_eq!(policy.defaults.requests, DefaultRequests::default());
    assert_eq!(policy.max_pool_replicas, 1000);
}

#[test]
fn the_network_section_parses_and_a_bad_cidr_names_the_field() {
    let policy =
        Policy::from_yaml("network:\n  denyEgressCIDRs: [169.254.0.0/16, fd00:ec2::/32]\n")
            .unwrap();
    assert_eq!(policy.network.deny_egress().len(), 2);
    let open = Policy::from_yaml("network:\n  denyEgressCIDRs: []\n").unwrap();
    assert!(open.network.deny_egress().is_empty());
    assert_eq!(
        Policy::default().network.deny_egress_cidrs,
        DEFAULT_DENY_EGRESS.map(str::to_string)
    );
    assert_refused_starting(
        "network:\n  denyEgressCIDRs: [169.254.0.0/16, 10.0.0.300/8]\n",
        "network.denyEgressCIDRs[1]: \"10.0.0.300/8\" is not a CIDR",
    );
    assert_refused_mentioning(
        "network:\n  denyEgressCidrs: []\n",
        "unknown field `denyEgressCidrs`",
    );
    // A standalone Sandbox's policy: the deny list on egress unless the
    // file says otherwise.
    assert_eq!(
        Policy::default().network.standalone_policy,
        StandalonePolicy::Egress
    );
    for (text, mode) in [
        ("isolated", StandalonePolicy::Isolated),
        ("none", StandalonePolicy::None),
    ] {
        let policy = Policy::from_yaml(&format!("network:\n  standalonePolicy: {text}\n")).unwrap();
        assert_eq!(policy.network.standalone_policy, mode);
    }
    assert_refused_starting(
        "network:\n  standalonePolicy: deny\n",
        "network.standalonePolicy: unknown variant `deny`",
    );
}

#[test]
fn a_bad_quantity_names_the_field() {
    assert_refused_starting(
        "ceilings:\n  memory: 64Qi\n",
        "ceilings.memory: \"64Qi\" is not a Kubernetes quantity",
    );
}

#[test]
fn unknown_keys_are_refused_at_every_level() {
    assert_refused_mentioning("maxPoolReplica: 5\n", "unknown field `maxPoolReplica`");
    assert_refused_starting("ceilings:\n  gpu: 1\n", "ceilings: unknown field `gpu`");
    assert_refused_starting(
        "defaults:\n  request:\n    cpu: 1\n",
        "defaults: unknown field `request`",
    );
}

#[test]
fn wrong_types_and_values_name_the_field() {
    assert_refused_starting("profile: strict\n", "profile: unknown variant `strict`");
    assert_refused_starting("maxPoolReplicas: many\n", "maxPoolReplicas: invalid type");
    assert_refused_starting("stampClaims: 3\n", "stampClaims: invalid type");
}

#[test]
fn rule_violations_name_the_field_and_rule() {
    assert_eq!(
        error("defaults:\n  requests:\n    cpu: 3\n"),
        "defaults.requests.cpu: 3 exceeds defaults.limits.cpu 2"
    );
    assert_eq!(
        error("ceilings:\n  memory: 1Gi\n"),
        "defaults.limits.memory: 2Gi exceeds ceilings.memory 1Gi"
    );
    assert_eq!(
        error("defaults:\n  limits:\n    memory: null\nceilings:\n  memory: 100Mi\n"),
        "defaults.requests.memory: 128Mi exceeds ceilings.memory 100Mi"
    );
    assert_eq!(
        error("ceilings:\n  cpu: -1\n"),
        "ceilings.cpu: -1 must not be negative"
    );
    assert_eq!(
        error("maxPoolReplicas: -1\n"),
        "maxPoolReplicas: -1 must not be negative"
    );
    assert_eq!(
        error("allowedRuntimeClasses: []\n"),
        "allowedRuntimeClasses: must not be empty; use null to allow any runtime class"
    );
    assert_eq!(
        error("defaultRuntimeClassName: runc\nallowedRuntimeClasses: [gvisor]\n"),
        "defaultRuntimeClassName: \"runc\" is not in allowedRuntimeClasses"
    );
    assert_eq!(
        error("allowedCapabilities: [CHOWN, \"\"]\n"),
        "allowedCapabilities[1]: must not be empty"
    );
}

#[test]
fn capabilities_compare_without_prefix_or_case() {
    let policy = Policy::default();
    assert!(policy.allows_capability("NET_BIND_SERVICE"));
    assert!(policy.allows_capability("cap_net_bind_service"));
    assert!(!policy.allows_capability("SYS_ADMIN"));
    assert!(!policy.allows_capability("CAP_SYS_ADMIN"));
}

#[test]
fn sandbox_rule_settings_parse_and_are_checked() {
    let policy = Policy::from_yaml(
        "allowedServiceAccounts: [default, ci]\n\
         allowedTolerations: [{key: gpu, operator: Exists}]\n\
         allowedExtendedResources: [nvidia.com/gpu]\n\
         ceilings: {ephemeral-storage: 1Gi}\n",
    )
    .unwrap();
    assert_eq!(policy.allowed_service_accounts, ["default", "ci"]);
    assert_eq!(policy.allowed_tolerations[0].key, "gpu");
    assert_eq!(
        policy.allowed_tolerations[0].operator.as_deref(),
        Some("Exists")
    );
    assert_eq!(
        policy.ceilings.get_named("ephemeral-storage"),
        Some(&Quantity::parse("1Gi").unwrap())
    );
    assert_eq!(policy.ceilings.memory, Ceilings::default().memory);
    assert_eq!(
        error("allowedServiceAccounts: [default, \"\"]\n"),
        "allowedServiceAccounts[1]: must not be empty"
    );
    assert_eq!(
        error("ceilings: {ephemeral-storage: -1}\n"),
        "ceilings.ephemeral-storage: -1 must not be negative"
    );
    assert!(error("allowedTolerations: [{operator: Exists}]\n").contains("missing field `key`"));
}

#[test]
fn priority_classes_and_resource_claims_parse_and_default_to_refused() {
    let policy = Policy::default();
    assert!(policy.allowed_priority_classes.is_empty());
    assert!(!policy.allow_resource_claims);
    let policy =
        Policy::from_yaml("allowedPriorityClasses: [sandbox-low]\nallowResourceClaims: true\n")
            .unwrap();
    assert_eq!(policy.allowed_priority_classes, ["sandbox-low"]);
    assert!(policy.allow_resource_claims);
    assert_eq!(
        error("allowedPriorityClasses: [sandbox-low, \" \"]\n"),
        "allowedPriorityClasses[1]: must not be empty"
    );
    assert_refused_starting(
        "allowResourceClaims: 1\n",
        "allowResourceClaims: invalid type",
    );
}
