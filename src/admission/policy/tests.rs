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

// Review findings (policy 106): bad names, enum values, fractional bytes
// and non-canonical deny-list ranges are refused when the policy loads,
// naming the field with its index and the rule.

#[test]
fn runtime_class_service_account_and_priority_class_names_are_dns_subdomains() {
    // Stamped into every template that sets none: the API server would
    // refuse every Pod made from them.
    assert_refused_starting(
        "defaultRuntimeClassName: \"Bad Name!\"\n",
        "defaultRuntimeClassName: \"Bad Name!\" is not a valid RuntimeClass name (a DNS-1123 subdomain",
    );
    assert_refused_starting(
        "defaultRuntimeClassName: gVisor\n",
        "defaultRuntimeClassName: \"gVisor\" is not a valid RuntimeClass name",
    );
    assert_refused_starting(
        "allowedRuntimeClasses: [gvisor, kata_qemu]\n",
        "allowedRuntimeClasses[1]: \"kata_qemu\" is not a valid RuntimeClass name",
    );
    assert_eq!(
        error("allowedRuntimeClasses: [gvisor, \"\"]\n"),
        "allowedRuntimeClasses[1]: must not be empty"
    );
    assert_refused_starting(
        "allowedServiceAccounts: [default, CI-Bot]\n",
        "allowedServiceAccounts[1]: \"CI-Bot\" is not a valid ServiceAccount name",
    );
    assert_refused_starting(
        "allowedServiceAccounts: [\" default\"]\n",
        "allowedServiceAccounts[0]: \" default\" is not a valid ServiceAccount name",
    );
    // Each dot-separated part starts and ends with a letter or digit.
    for bad in ["sandbox..low", "sandbox-.low", ".sandbox", "sandbox-"] {
        assert_refused_starting(
            &format!("allowedPriorityClasses: [ok, {bad:?}]\n"),
            &format!("allowedPriorityClasses[1]: {bad:?} is not a valid PriorityClass name"),
        );
    }
    let long = format!("{}.b", "a".repeat(252));
    assert_refused_starting(
        &format!("allowedPriorityClasses: [{long}]\n"),
        "allowedPriorityClasses[0]: ",
    );
    let policy = Policy::from_yaml(&format!(
        "defaultRuntimeClassName: kata-qemu.v2\n\
         allowedRuntimeClasses: [kata-qemu.v2, gvisor]\n\
         allowedServiceAccounts: [default, ci-bot.2]\n\
         allowedPriorityClasses: [sandbox-low, {}]\n",
        "a".repeat(253)
    ))
    .unwrap();
    assert_eq!(
        policy.default_runtime_class_name.as_deref(),
        Some("kata-qemu.v2")
    );
}

#[test]
fn toleration_operators_and_effects_are_the_kubernetes_ones() {
    assert_eq!(
        error("allowedTolerations: [{key: gpu, operator: exists}]\n"),
        "allowedTolerations[0].operator: \"exists\" must be Equal, Exists, Lt or Gt (Lt and Gt: Kubernetes 1.35+); leave it out to allow any"
    );
    assert_refused_starting(
        "allowedTolerations: [{key: gpu}, {key: gpu, operator: \"\"}]\n",
        "allowedTolerations[1].operator: \"\" must be Equal, Exists, Lt or Gt",
    );
    // Kubernetes 1.35+ compares numeric taint values with Lt and Gt: a
    // value is needed (found by the second read: refusing them stopped a
    // policy that allowed them).
    assert_refused_starting(
        "allowedTolerations: [{key: gpu}, {key: gpu, operator: Gt}]\n",
        "allowedTolerations[1].value: must be set when operator is Gt",
    );
    assert_refused_starting(
        "allowedTolerations: [{key: gpu}, {key: gpu, operator: Exists, value: \"yes\"}]\n",
        "allowedTolerations[1].value: \"yes\" must be empty when operator is Exists",
    );
    assert_eq!(
        error("allowedTolerations: [{key: gpu, effect: NoSchedul}]\n"),
        "allowedTolerations[0].effect: \"NoSchedul\" must be empty or one of NoSchedule, PreferNoSchedule, NoExecute"
    );
    let policy = Policy::from_yaml(
        "allowedTolerations:\n\
         - {key: gpu, operator: Exists, value: \"\", effect: \"\"}\n\
         - {key: sandboxes, operator: Equal, value: \"true\", effect: NoSchedule}\n\
         - {key: a, effect: PreferNoSchedule}\n\
         - {key: b, value: x, effect: NoExecute}\n\
         - {key: c, operator: Lt, value: \"5\"}\n",
    )
    .unwrap();
    assert_eq!(policy.allowed_tolerations.len(), 5);
}

#[test]
fn volume_types_are_the_names_of_volume_sources() {
    assert_eq!(
        error("allowedVolumeTypes: [secret, emptydir]\n"),
        "allowedVolumeTypes[1]: \"emptydir\" is not a volume type; did you mean emptyDir? \
         (volume types are spelled as the keys of a pod's volumes)"
    );
    assert_refused_starting(
        "allowedVolumeTypes: [\"configmap\"]\n",
        "allowedVolumeTypes[0]: \"configmap\" is not a volume type; did you mean configMap?",
    );
    assert_refused_starting(
        "allowedVolumeTypes: [nfs, fooBar]\n",
        "allowedVolumeTypes[1]: \"fooBar\" is not a volume type (one of awsElasticBlockStore, azureDisk,",
    );
    let policy =
        Policy::from_yaml("allowedVolumeTypes: [nfs, hostPath, scaleIO, vsphereVolume, image]\n")
            .unwrap();
    assert_eq!(policy.allowed_volume_types.len(), 5);
}

#[test]
fn the_volume_type_list_is_every_volume_source_of_the_api() {
    use k8s_openapi::api::core::v1::Volume;
    // No `..Default::default()`: a source added to the API fails to compile
    // here until it is added to the list.
    let every = Volume {
        name: "v".into(),
        aws_elastic_block_store: Some(Default::default()),
        azure_disk: Some(Default::default()),
        azure_file: Some(Default::default()),
        cephfs: Some(Default::default()),
        cinder: Some(Default::default()),
        config_map: Some(Default::default()),
        csi: Some(Default::default()),
        downward_api: Some(Default::default()),
        empty_dir: Some(Default::default()),
        ephemeral: Some(Default::default()),
        fc: Some(Default::default()),
        flex_volume: Some(Default::default()),
        flocker: Some(Default::default()),
        gce_persistent_disk: Some(Default::default()),
        git_repo: Some(Default::default()),
        glusterfs: Some(Default::default()),
        host_path: Some(Default::default()),
        image: Some(Default::default()),
        iscsi: Some(Default::default()),
        nfs: Some(Default::default()),
        persistent_volume_claim: Some(Default::default()),
        photon_persistent_disk: Some(Default::default()),
        portworx_volume: Some(Default::default()),
        projected: Some(Default::default()),
        quobyte: Some(Default::default()),
        rbd: Some(Default::default()),
        scale_io: Some(Default::default()),
        secret: Some(Default::default()),
        storageos: Some(Default::default()),
        vsphere_volume: Some(Default::default()),
    };
    let json = serde_json::to_value(every).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|key| *key != "name")
        .collect();
    keys.sort_unstable();
    let mut listed = names::VOLUME_TYPES.to_vec();
    listed.sort_unstable();
    assert_eq!(listed, keys);
    // The Pod Security restricted set is a subset.
    for kind in crate::admission::pss::ALLOWED_VOLUME_TYPES {
        assert!(names::VOLUME_TYPES.contains(&kind), "{kind}");
    }
}

#[test]
fn capabilities_are_linux_capability_names_with_or_without_the_prefix() {
    assert_eq!(
        error("allowedCapabilities: [CHOWN, SYS_ADMN]\n"),
        "allowedCapabilities[1]: \"SYS_ADMN\" is not a Linux capability name \
         (such as NET_BIND_SERVICE; CAP_ and case are optional)"
    );
    assert_refused_starting(
        "allowedCapabilities: [ALL]\n",
        "allowedCapabilities[0]: \"ALL\" is not a Linux capability name",
    );
    assert_refused_starting(
        "allowedCapabilities: [\"CAP_CAP_CHOWN\"]\n",
        "allowedCapabilities[0]: \"CAP_CAP_CHOWN\" is not a Linux capability name",
    );
    let policy = Policy::from_yaml(
        "allowedCapabilities: [cap_net_raw, \" CAP_BPF \", CHECKPOINT_RESTORE, Sys_Ptrace]\n",
    )
    .unwrap();
    assert!(policy.allows_capability("NET_RAW"));
    assert!(policy.allows_capability("BPF"));
    for name in super::super::pss::BASELINE_CAPABILITIES {
        assert!(names::LINUX_CAPABILITIES.contains(&name), "{name}");
    }
}

#[test]
fn extended_resources_are_qualified_names_outside_the_standard_ones() {
    for standard in ["cpu", "memory", "ephemeral-storage"] {
        assert_eq!(
            error(&format!("allowedExtendedResources: [{standard}]\n")),
            format!(
                "allowedExtendedResources[0]: \"{standard}\" is not an extended resource: cpu, memory \
                 and ephemeral-storage are bounded by ceilings, not allow-listed"
            )
        );
    }
    assert_eq!(
        error("allowedExtendedResources: [nvidia.com/gpu, gpu]\n"),
        "allowedExtendedResources[1]: \"gpu\" is not an extended resource name: write it with \
         its domain, e.g. example.com/gpu"
    );
    for bad in [
        "nvidia.com/",
        "/gpu",
        "Example.com/gpu",
        "example..com/gpu",
        "example.com/-gpu",
        "example.com/gpu/0",
        "example.com/g pu",
    ] {
        assert_refused_starting(
            &format!("allowedExtendedResources: [{bad:?}]\n"),
            &format!("allowedExtendedResources[0]: {bad:?} is not "),
        );
    }
    let long_name = format!("example.com/{}", "g".repeat(64));
    assert_refused_starting(
        &format!("allowedExtendedResources: [{long_name}]\n"),
        "allowedExtendedResources[0]: ",
    );
    for native in ["kubernetes.io/gpu", "node.kubernetes.io/gpu"] {
        assert_refused_starting(
            &format!("allowedExtendedResources: [{native}]\n"),
            &format!("allowedExtendedResources[0]: \"{native}\" is in the kubernetes.io namespace"),
        );
    }
    for bad in ["hugepages-", "hugepages-2Qi", "hugepages--2Mi"] {
        assert_refused_starting(
            &format!("allowedExtendedResources: [{bad:?}]\n"),
            &format!("allowedExtendedResources[0]: {bad:?} is not a huge page size"),
        );
    }
    // What the validator asks to be allow-listed: any resource but cpu,
    // memory and ephemeral-storage, huge pages included (the built-in
    // policy file names hugepages-2Mi as an example).
    let policy = Policy::from_yaml(
        "allowedExtendedResources: [nvidia.com/gpu, example.com/GPU_v2.a, hugepages-2Mi, hugepages-1Gi]\n",
    )
    .unwrap();
    assert_eq!(policy.allowed_extended_resources.len(), 4);
}

#[test]
fn byte_amounts_must_be_whole_bytes() {
    assert_eq!(
        error("defaults: {requests: {memory: 100m}}\n"),
        "defaults.requests.memory: 100m is a fraction of a byte; memory is counted in whole bytes \
         (the suffix m means thousandths: write M or Mi)"
    );
    assert_eq!(
        error("defaults: {limits: {memory: 1500m}}\n"),
        "defaults.limits.memory: 1500m is not a whole number of bytes; memory is counted in whole \
         bytes (the suffix m means thousandths: write M or Mi)"
    );
    assert_eq!(
        error("ceilings: {memory: 64.5}\n"),
        "ceilings.memory: 64.5 is not a whole number of bytes; memory is counted in whole bytes"
    );
    assert_refused_starting(
        "ceilings: {ephemeral-storage: 0.5}\n",
        "ceilings.ephemeral-storage: 0.5 is a fraction of a byte; ephemeral-storage is counted in whole bytes",
    );
    // Whole bytes however written; cpu may be fractional.
    let policy = Policy::from_yaml(
        "defaults: {requests: {cpu: 100m, memory: 0.5Ki}, limits: {cpu: 1500m, memory: 1.5Gi}}\n\
         ceilings: {memory: 2e9, ephemeral-storage: 1000m}\n",
    )
    .unwrap();
    assert_eq!(
        policy.defaults.requests.memory,
        Some(Quantity::parse("512").unwrap())
    );
}

#[test]
fn the_deny_list_refuses_what_the_template_rule_refuses() {
    assert_eq!(
        error("network:\n  denyEgressCIDRs: [169.254.0.0/16, \"::ffff:169.254.0.0/112\"]\n"),
        "network.denyEgressCIDRs[1]: \"::ffff:169.254.0.0/112\" is an IPv4-mapped IPv6 range; \
         write the IPv4 range instead"
    );
    assert_eq!(
        error("network:\n  denyEgressCIDRs: [169.254.0.0/016]\n"),
        "network.denyEgressCIDRs[0]: \"169.254.0.0/016\" is not in canonical form; write it as 169.254.0.0/16"
    );
    for (written, canonical) in [
        ("169.254.0.0/+16", "169.254.0.0/16"),
        ("FD00:EC2::254/128", "fd00:ec2::254/128"),
        ("fd00:0:0::/48", "fd00::/48"),
        ("::ffff:a9fe:0/112", ""),
    ] {
        let message = error(&format!("network:\n  denyEgressCIDRs: [{written:?}]\n"));
        assert!(
            message.starts_with(&format!("network.denyEgressCIDRs[0]: {written:?} ")),
            "{message}"
        );
        assert!(message.contains(canonical), "{message}");
    }
}

/// The policies the chart ships (its default and its CI values) pass every
/// check, so the checks above refuse no shipped file.
#[test]
fn the_charts_policies_load() {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/sandbox-operator");
    let mut files = vec![chart.join("values.yaml")];
    for entry in std::fs::read_dir(chart.join("ci")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for file in files {
        let values: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let policy = serde_yaml::to_string(&values["policy"]).unwrap();
        Policy::from_yaml(&policy).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
