use super::*;

fn printed(yaml: &str, policy: &Policy) -> (String, bool) {
    let reports = check_objects(yaml, policy).unwrap();
    let mut out = Vec::new();
    let admitted = write_input(&mut out, "input.yaml", &reports).unwrap();
    (String::from_utf8(out).unwrap(), admitted)
}

#[test]
fn the_seed_examples_are_admitted_by_the_default_policy() {
    let manifests = [
        include_str!("../../../examples/aio-sandbox.yaml"),
        include_str!("../../../examples/template.yaml"),
        include_str!("../../../examples/warmpool.yaml"),
    ]
    .join("\n---\n");
    let (text, admitted) = printed(&manifests, &Policy::default());
    assert!(admitted, "{text}");
    assert_eq!(
        text,
        "Sandbox/aio-sandbox-example: patch: [\
             {\"op\":\"add\",\"path\":\"/spec/podTemplate/spec/automountServiceAccountToken\",\"value\":false},\
             {\"op\":\"add\",\"path\":\"/spec/podTemplate/spec/securityContext\",\"value\":{\"seccompProfile\":{\"type\":\"RuntimeDefault\"}}}]\n\
             Sandbox/aio-sandbox-example: admitted\n\
             SandboxTemplate/aio: patch: [\
             {\"op\":\"add\",\"path\":\"/spec/podTemplate/spec/automountServiceAccountToken\",\"value\":false},\
             {\"op\":\"add\",\"path\":\"/spec/podTemplate/spec/securityContext\",\"value\":{\"seccompProfile\":{\"type\":\"RuntimeDefault\"}}}]\n\
             SandboxTemplate/aio: admitted\n\
             SandboxWarmPool/aio-pool: patch: []\n\
             SandboxWarmPool/aio-pool: admitted\n"
    );
}

#[test]
fn claims_get_their_stamp_and_generated_names_are_shown() {
    let reports = check_objects(
        include_str!("../../../examples/claim.yaml"),
        &Policy::default(),
    )
    .unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].name, "my-sandbox-*");
    assert!(reports[0].admitted());
    assert_eq!(reports[0].patch[0].path().as_str(), "/metadata/annotations");
}

#[test]
fn denials_warnings_and_skips_are_printed() {
    let yaml = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings}
- apiVersion: agents.x-k8s.io/v1alpha1
  kind: Sandbox
  metadata: {name: big}
  spec:
    podTemplate:
      spec:
        containers:
        - name: c
          image: busybox
          resources: {limits: {memory: 128Gi, cpu: 1}}
---
---
apiVersion: extensions.agents.x-k8s.io/v1alpha1
kind: SandboxWarmPool
metadata: {name: huge}
spec: {replicas: 5000, sandboxTemplateRef: {name: aio}}
";
    let (text, admitted) = printed(yaml, &Policy::default());
    assert!(!admitted);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "ConfigMap/settings: skipped: not a kind sandbox-operator admits"
    );
    assert!(
        lines[1].starts_with("Sandbox/big: patch: ["),
        "{}",
        lines[1]
    );
    assert_eq!(
        &lines[2..],
        [
            "Sandbox/big: denied: spec.podTemplate.spec.containers[0].resources.limits.memory: 128Gi exceeds the maximum 64Gi",
            "Sandbox/big: warning: spec.podTemplate.spec.containers[0].image: \"busybox\" has no tag, so it means latest; pin a version or digest",
            "SandboxWarmPool/huge: patch: []",
            "SandboxWarmPool/huge: denied: spec.replicas: 5000 exceeds the maximum 1000",
        ]
    );
}

#[test]
fn malformed_objects_and_yaml_are_reported() {
    let reports = check_objects(
            "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: x}\nspec: {podTemplate: 3}\n",
            &Policy::default(),
        )
        .unwrap();
    assert_eq!(
        reports[0].verdict.message(),
        "spec.podTemplate: must be an object"
    );

    let error =
        check_objects("kind: Sandbox\n---\nkind: [unclosed\n", &Policy::default()).unwrap_err();
    assert_eq!(error.to_string(), "document 2 is not valid YAML");
}

#[test]
fn run_policy_check_reads_files_and_a_policy() {
    let directory =
        std::env::temp_dir().join(format!("sandbox-operator-check-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let policy = directory.join("policy.yaml");
    std::fs::write(&policy, "ceilings: {memory: 4Gi}\n").unwrap();
    let aio = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/aio-sandbox.yaml"
    ));
    let offline = UserNamespaces::Unsupported;
    assert!(run_policy_check(std::slice::from_ref(&aio), None, offline).unwrap());
    assert!(!run_policy_check(std::slice::from_ref(&aio), Some(&policy), offline).unwrap());
    std::fs::write(&policy, "ceilings: {memory: 4Qi}\n").unwrap();
    let error = run_policy_check(std::slice::from_ref(&aio), Some(&policy), offline).unwrap_err();
    assert!(
        format!("{error:#}").contains("ceilings.memory: \"4Qi\" is not a Kubernetes quantity"),
        "{error:#}"
    );
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn host_users_false_is_judged_as_the_flag_says_and_noted() {
    let yaml = "\
apiVersion: agents.x-k8s.io/v1alpha1
kind: Sandbox
metadata: {name: root}
spec:
  podTemplate:
    spec:
      hostUsers: false
      securityContext: {runAsUser: 0}
      containers: [{name: c, image: a:1}]
";
    let restricted = Policy::from_yaml("profile: restricted").unwrap();
    let offline = Policy {
        user_namespaces: UserNamespaces::Unsupported,
        ..restricted.clone()
    };
    let (text, admitted) = printed(yaml, &offline);
    assert!(!admitted, "{text}");
    assert!(
            text.contains(
                "Sandbox/root: denied: spec.podTemplate.spec.securityContext.runAsUser: 0 (root) is not allowed (hostUsers: false would allow it, but user namespaces are not known to be supported on this cluster; if they are, set --user-namespaces=enabled) (Pod Security restricted: runAsUser)"
            ),
            "{text}"
        );
    assert!(
            text.contains("Sandbox/root: note: spec.podTemplate.spec.hostUsers: false relaxed no Pod Security check"),
            "{text}"
        );
    let supported = Policy {
        user_namespaces: UserNamespaces::Supported,
        ..restricted
    };
    let (text, _) = printed(yaml, &supported);
    assert!(text.contains("Sandbox/root: note: spec.podTemplate.spec.hostUsers: false was judged as on a cluster that supports user namespaces"), "{text}");
}

/// A template with a pod template the default policy admits, under
/// `api_version` and `kind`.
fn template(api_version: &str, kind: &str, name: &str) -> String {
    format!(
        "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: {name}}}\n\
             spec: {{podTemplate: {{spec: {{containers: [{{name: c, image: \"busybox:1.36\", \
             resources: {{limits: {{cpu: 1, memory: 1Gi}}}}}}]}}}}}}\n"
    )
}

/// Objects that come close to one of the four kinds without being one
/// served were skipped, and the check exited 0 (found by review): now
/// each is denied naming `apiVersion` or `kind` and the expected value.
/// Unrelated kinds are still skipped.
#[test]
fn near_misses_of_our_kinds_are_denied_naming_api_version_and_kind() {
    let documents = [
        template(
            "extensions.agents.x-k8s.io/v1alpha1",
            "SandboxTemplate",
            "good",
        ),
        template("agents.x-k8s.io/v1alpha1", "SandboxTemplate", "wrong-group"),
        template(
            "extensions.agents.x-k8s.io/v1alpha1",
            "Sandboxtemplate",
            "wrong-case",
        ),
        template(
            "extensions.agents.x-k8s.io/v9",
            "SandboxTemplate",
            "wrong-version",
        ),
        template("v1", "sandbox", "both"),
        template(
            "extensions.agents.x-k8s.io/v1alpha1",
            "SandboxFoo",
            "unknown-kind",
        ),
        "apiVersion: agents.x-k8s.io/v1alpha1\nmetadata: {name: no-kind}\n".to_owned(),
        "kind: SandboxClaim\nmetadata: {name: no-version}\n".to_owned(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n".to_owned(),
        "apiVersion: example.com/v1\nkind: SandboxPolicy\nmetadata: {name: other}\n".to_owned(),
        // Another project's kind of the same name is theirs.
        "apiVersion: example.com/v1\nkind: Sandbox\nmetadata: {name: theirs}\n".to_owned(),
        // A typed list, as the API server prints one: its items get
        // the list's apiVersion and kind.
        "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxTemplateList\n\
             items: [{metadata: {name: listed}, spec: {podTemplate: {spec: {containers: [{name: c, \
             image: \"busybox:1.36\", resources: {limits: {cpu: 1, memory: 1Gi}}}]}}}}]\n"
            .to_owned(),
    ];
    let (text, admitted) = printed(&documents.join("---\n"), &Policy::default());
    assert!(!admitted, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("SandboxTemplate/good: patch: ["),
        "{text}"
    );
    assert_eq!(
        &lines[1..13],
        [
            "SandboxTemplate/good: admitted",
            "SandboxTemplate/wrong-group: denied: apiVersion: \"agents.x-k8s.io/v1alpha1\" does not serve SandboxTemplate: expected extensions.agents.x-k8s.io/v1alpha1",
            "Sandboxtemplate/wrong-case: denied: kind: \"Sandboxtemplate\" is not a served kind: expected SandboxTemplate (kinds are case-sensitive)",
            "SandboxTemplate/wrong-version: denied: apiVersion: \"extensions.agents.x-k8s.io/v9\" does not serve SandboxTemplate: expected extensions.agents.x-k8s.io/v1alpha1",
            "sandbox/both: denied: kind: \"sandbox\" is not a served kind: expected Sandbox (kinds are case-sensitive)",
            "sandbox/both: denied: apiVersion: \"v1\" does not serve Sandbox: expected agents.x-k8s.io/v1alpha1",
            "SandboxFoo/unknown-kind: denied: kind: \"SandboxFoo\" is not a kind of extensions.agents.x-k8s.io: expected SandboxTemplate, SandboxClaim or SandboxWarmPool",
            "<no kind>/no-kind: denied: kind: is missing: expected Sandbox",
            "SandboxClaim/no-version: denied: apiVersion: is missing: expected extensions.agents.x-k8s.io/v1alpha1",
            "ConfigMap/settings: skipped: not a kind sandbox-operator admits",
            "SandboxPolicy/other: skipped: not a kind sandbox-operator admits",
            "Sandbox/theirs: skipped: not a kind sandbox-operator admits",
        ]
    );
    assert!(
        lines[13].starts_with("SandboxTemplate/listed: patch: [")
            && lines[14..] == ["SandboxTemplate/listed: admitted"],
        "{text}"
    );
    // Through the library too: denied, never judged (no patch).
    let report = check_object(
        &serde_yaml::from_str(&documents[3]).unwrap(),
        &Policy::default(),
    );
    assert!(report.handled && !report.judged && !report.admitted());
    assert!(report.patch.is_empty());
}

/// A document that is a string or a list was skipped (found by review):
/// now it is denied, named by where it is.
#[test]
fn documents_that_are_not_mappings_are_denied() {
    let yaml = "\
apiVersion SandboxTemplate
---
- apiVersion: agents.x-k8s.io/v1alpha1
  kind: Sandbox
---
42
---
apiVersion: v1
kind: List
items:
- just text
-
";
    let (text, admitted) = printed(yaml, &Policy::default());
    assert!(!admitted, "{text}");
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "document 1: denied: the document is a string (\"apiVersion SandboxTemplate\"), not a mapping: a manifest is an object with apiVersion and kind",
            "document 2: denied: the document is a list, not a mapping: a manifest is an object with apiVersion and kind; put each object in a document of its own (separated by ---) or in the items of a kind: List",
            "document 3: denied: the document is a number (42), not a mapping: a manifest is an object with apiVersion and kind",
            "document 4 items[0]: denied: the document is a string (\"just text\"), not a mapping: a manifest is an object with apiVersion and kind",
            "document 4 items[1]: denied: the document is empty, not a mapping: a manifest is an object with apiVersion and kind",
        ]
    );
}

/// An empty input printed nothing and passed (found by review): it is
/// now an error saying no objects were found (exit code 2, as for input
/// that is not YAML). An empty `kind: List` (what `kubectl get -o yaml`
/// prints when nothing matches) says so and passes.
#[test]
fn an_empty_input_says_no_objects_were_found_and_fails() {
    for empty in ["", "\n", "# only a comment\n", "---\n---\n", "--- ~\n"] {
        let error = check_objects(empty, &Policy::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no objects found: the input is empty (or holds only comments and empty \
                 documents)",
            "{empty:?}"
        );
    }
    let (text, admitted) = printed(
        "apiVersion: v1\nkind: List\nitems: []\n",
        &Policy::default(),
    );
    assert!(admitted, "{text}");
    assert_eq!(
        text,
        "input.yaml: no objects found: every kind: List in it has no items\n"
    );

    let file = std::env::temp_dir().join(format!(
        "sandbox-operator-check-empty-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&file, "# nothing here\n").unwrap();
    let offline = UserNamespaces::Unsupported;
    let error = run_policy_check(std::slice::from_ref(&file), None, offline).unwrap_err();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        format!("{error:#}"),
        format!(
            "in {}: no objects found: the input is empty (or holds only comments and empty \
                 documents)",
            file.display()
        )
    );
}
