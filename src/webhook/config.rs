//! The Mutating/ValidatingWebhookConfigurations of the operator.
//!
//! Each setting is chosen on purpose (the chart renders the same values):
//! - `failurePolicy: Fail`: the policy is a security boundary (privileged
//!   Pods, host namespaces); if the webhook is down, sandbox objects are
//!   refused rather than stored unchecked. The blast radius is small: only
//!   our four resources (and the validating webhook a pool's scale
//!   subresource) are matched, never Pods or core objects.
//! - `timeoutSeconds: 5`: admission is pure in-memory work (well under a
//!   millisecond); 5 s leaves room for a TLS handshake on a cold connection
//!   and stays far below the API server's own request timeout.
//! - `sideEffects: None`: the webhook only computes a verdict; dry-run
//!   requests are safe.
//! - `matchPolicy: Equivalent`: a future API version of the same resources
//!   is still checked.
//! - `reinvocationPolicy: IfNeeded` (mutating): if a later mutating webhook
//!   changes the pod template, ours runs again and re-applies the defaults
//!   (the mutation is idempotent).
//! - `namespaceSelector` excludes `kube-system` and the operator's own
//!   namespace, so a broken webhook can never lock the operator out of
//!   repairing itself.
//! - `matchConditions` (only when the operator runs as a ServiceAccount):
//!   the operator's own Sandbox CREATEs skip both webhooks, because the
//!   claim controller runs the same defaulting and validation in-process on
//!   every Sandbox it creates ([`crate::controller::admit`]). That takes two
//!   webhook calls off the warm path. Every other writer, and the operator's
//!   updates, are still checked. Only a ServiceAccount qualifies: a person's
//!   or an admin's identity is shared with humans whose Sandboxes must be
//!   checked, and only those allowed to impersonate the operator could send
//!   a request under its name.
//! - `matchConditions` (validating, always): claim CREATEs skip the
//!   validating webhook; the mutating webhook, which a claim CREATE calls
//!   anyway for its admission stamp, validates it with the same rules and
//!   refuses it with the same message. One webhook call per claim create
//!   instead of two. Claim UPDATEs (where the stamp must not change) and
//!   every other kind still go through both.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::ObjectMeta;

mod registration;
pub use registration::*;

/// Rules matching our four resources (CREATE and UPDATE).
pub fn rules() -> Vec<RuleWithOperations> {
    let rule = |group: &str, resources: &[&str]| RuleWithOperations {
        api_groups: Some(vec![group.into()]),
        api_versions: Some(vec!["v1alpha1".into()]),
        operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        scope: Some("Namespaced".into()),
    };
    vec![
        rule("agents.x-k8s.io", &["sandboxes"]),
        rule(
            "extensions.agents.x-k8s.io",
            &["sandboxtemplates", "sandboxclaims", "sandboxwarmpools"],
        ),
    ]
}

/// The validating webhook's rules: [`rules`], and UPDATEs of a pool's scale
/// subresource (`kubectl scale`, an HPA, KEDA), which the policy's
/// `maxPoolReplicas` bounds like a write of the pool itself. The mutating
/// webhook has nothing to default in a Scale and does not see them.
pub fn validating_rules() -> Vec<RuleWithOperations> {
    let mut all = rules();
    all.push(RuleWithOperations {
        api_groups: Some(vec!["extensions.agents.x-k8s.io".into()]),
        api_versions: Some(vec!["v1alpha1".into()]),
        operations: Some(vec!["UPDATE".into()]),
        resources: Some(vec!["sandboxwarmpools/scale".into()]),
        scope: Some("Namespaced".into()),
    });
    all
}

/// Name of the match condition that lets the operator's own Sandbox
/// creates skip the webhooks.
pub const SKIP_OWN_SANDBOX_CREATES: &str = "not-the-operators-own-sandbox-create";

/// Whether `username` may skip the webhooks for its Sandbox creates: only a
/// ServiceAccount (`system:serviceaccount:<namespace>:<name>`).
pub fn is_service_account(username: &str) -> bool {
    username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'))
}

/// The match conditions of both webhooks: none, or the one that skips the
/// operator's own Sandbox CREATEs when it runs as the ServiceAccount
/// `operator_user` (see the module docs). Pure.
pub fn match_conditions(operator_user: Option<&str>) -> Option<Vec<MatchCondition>> {
    let user = operator_user.filter(|u| is_service_account(u))?;
    // A username of a ServiceAccount holds no quote or backslash (checked
    // above: DNS names), so it is safe inside a CEL string literal.
    if user.contains(['\'', '\\']) {
        return None;
    }
    Some(vec![MatchCondition {
        name: SKIP_OWN_SANDBOX_CREATES.into(),
        expression: format!(
            "!(request.userInfo.username == '{user}' && request.resource.group == 'agents.x-k8s.io' \
             && request.resource.resource == 'sandboxes' && request.operation == 'CREATE')"
        ),
    }])
}

/// Name of the validating webhook's match condition that leaves claim
/// CREATEs to the mutating webhook.
pub const CLAIM_CREATES_CHECKED_WHEN_MUTATED: &str =
    "claim-creates-are-checked-by-the-mutating-webhook";

/// The validating webhook's match conditions: those of both webhooks
/// ([`match_conditions`]) and, with `claim_creates_in_one_call`, the one
/// that leaves claim CREATEs to the mutating webhook (see the module
/// docs). Pure.
pub fn validating_match_conditions(
    operator_user: Option<&str>,
    claim_creates_in_one_call: bool,
) -> Option<Vec<MatchCondition>> {
    let mut all = match_conditions(operator_user).unwrap_or_default();
    if !claim_creates_in_one_call {
        return Some(all).filter(|all| !all.is_empty());
    }
    all.push(MatchCondition {
        name: CLAIM_CREATES_CHECKED_WHEN_MUTATED.into(),
        expression: "!(request.resource.group == 'extensions.agents.x-k8s.io' \
             && request.resource.resource == 'sandboxclaims' && request.operation == 'CREATE')"
            .into(),
    });
    Some(all)
}

/// Namespaces the webhook applies to: all but `kube-system` and the
/// operator's own, or exactly `only` when the operator watches one namespace.
pub fn namespace_selector(operator_namespace: &str, only: Option<&str>) -> LabelSelector {
    if let Some(only) = only {
        return LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![only.to_string()]),
            }]),
            match_labels: None,
        };
    }
    let mut excluded = vec!["kube-system".to_string()];
    if operator_namespace != "kube-system" {
        excluded.push(operator_namespace.to_string());
    }
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "NotIn".into(),
            values: Some(excluded),
        }]),
        match_labels: None,
    }
}

/// What registering the webhooks by URL needs to know.
#[derive(Debug, Clone, Copy)]
pub struct ByUrl<'a> {
    /// Name of both configurations.
    pub name: &'a str,
    /// Where the webhook server listens, like `https://127.0.0.1:9443`.
    pub base_url: &'a str,
    /// PEM of the CA that signed the serving certificate.
    pub ca_bundle: &'a str,
    /// The operator's namespace (never admitted by the webhooks).
    pub operator_namespace: &'a str,
    /// Admit only this namespace, when set.
    pub only: Option<&'a str>,
    /// The operator's own user, whose Sandbox creates skip the webhooks
    /// when it is a ServiceAccount.
    pub operator_user: Option<&'a str>,
    /// Claim CREATEs skip the validating webhook (the mutating one
    /// validates them).
    pub claim_creates_in_one_call: bool,
}

/// Both configurations, registered by URL, for local clusters. Pure.
pub fn by_url(
    target: &ByUrl<'_>,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    let ByUrl {
        name,
        base_url,
        ca_bundle,
        operator_namespace,
        only,
        operator_user,
        claim_creates_in_one_call,
    } = *target;
    let client = |path: &str| WebhookClientConfig {
        url: Some(format!("{}{path}", base_url.trim_end_matches('/'))),
        ca_bundle: Some(ByteString(ca_bundle.as_bytes().to_vec())),
        service: None,
    };
    let labels = Some(BTreeMap::from([(
        MANAGED_BY_LABEL.to_string(),
        REGISTERED_BY_URL.to_string(),
    )]));
    let metadata = ObjectMeta {
        name: Some(name.into()),
        labels,
        ..Default::default()
    };
    // The two webhooks differ only in name, path and the mutating one's
    // reinvocation policy: both are built as one shape.
    let webhook = |name: &str, path: &str| ValidatingWebhook {
        name: name.into(),
        admission_review_versions: vec!["v1".into()],
        client_config: client(path),
        failure_policy: Some("Fail".into()),
        match_policy: Some("Equivalent".into()),
        namespace_selector: Some(namespace_selector(operator_namespace, only)),
        match_conditions: match_conditions(operator_user),
        rules: Some(rules()),
        side_effects: "None".into(),
        timeout_seconds: Some(5),
        ..Default::default()
    };
    let mutating_webhook = MutatingWebhook {
        reinvocation_policy: Some("IfNeeded".into()),
        ..as_mutating(webhook("mutate.sandboxes.agents.x-k8s.io", "/mutate"))
    };
    let mutating = MutatingWebhookConfiguration {
        metadata: metadata.clone(),
        webhooks: Some(vec![mutating_webhook]),
    };
    let validating = ValidatingWebhookConfiguration {
        metadata,
        webhooks: Some(vec![ValidatingWebhook {
            match_conditions: validating_match_conditions(operator_user, claim_creates_in_one_call),
            rules: Some(validating_rules()),
            ..webhook("validate.sandboxes.agents.x-k8s.io", "/validate")
        }]),
    };
    (mutating, validating)
}

/// The same webhook as a mutating one: every field of a validating webhook
/// has the same name and meaning in a mutating one. Pure.
fn as_mutating(webhook: ValidatingWebhook) -> MutatingWebhook {
    serde_json::to_value(webhook)
        .and_then(serde_json::from_value)
        .expect("a ValidatingWebhook reads as a MutatingWebhook")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_configuration_marked_as_registered_by_url_is_ours() {
        let (m, _) = by_url(&ByUrl {
            name: "x",
            base_url: "https://127.0.0.1:9443",
            ca_bundle: "PEM",
            operator_namespace: "sandbox-system",
            only: None,
            operator_user: None,
            claim_creates_in_one_call: true,
        });
        assert!(
            registered_by_url(&m.metadata),
            "what registration writes is ours"
        );
        let labelled = |value: &str| ObjectMeta {
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                value.to_string(),
            )])),
            ..ObjectMeta::default()
        };
        assert!(!registered_by_url(&labelled("Helm")));
        assert!(!registered_by_url(&ObjectMeta::default()));
    }

    #[test]
    fn the_mutating_webhook_is_the_validating_one_but_for_name_path_and_reinvocation() {
        let (m, v) = by_url(&ByUrl {
            name: "x",
            base_url: "https://127.0.0.1:9443",
            ca_bundle: "PEM",
            operator_namespace: "sandbox-system",
            only: Some("team-a"),
            operator_user: Some("system:serviceaccount:sandbox-system:operator"),
            claim_creates_in_one_call: true,
        });
        assert_eq!(m.metadata, v.metadata);
        let (mw, vw) = (&m.webhooks.unwrap()[0], &v.webhooks.unwrap()[0]);
        assert_eq!(mw.name, "mutate.sandboxes.agents.x-k8s.io");
        assert_eq!(vw.name, "validate.sandboxes.agents.x-k8s.io");
        assert_eq!(mw.reinvocation_policy.as_deref(), Some("IfNeeded"));
        assert_eq!(
            mw.client_config.ca_bundle,
            Some(ByteString(b"PEM".to_vec()))
        );
        assert_eq!(mw.client_config.ca_bundle, vw.client_config.ca_bundle);
        assert_eq!(mw.admission_review_versions, vw.admission_review_versions);
        assert_eq!(mw.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(mw.failure_policy, vw.failure_policy);
        assert_eq!(mw.match_policy, vw.match_policy);
        assert!(mw.namespace_selector.is_some());
        assert_eq!(mw.namespace_selector, vw.namespace_selector);
        assert!(mw.match_conditions.is_some());
        let mut conditions = mw.match_conditions.clone().unwrap();
        conditions.push(
            validating_match_conditions(None, true)
                .unwrap()
                .pop()
                .unwrap(),
        );
        assert_eq!(Some(conditions), vw.match_conditions);
        assert_eq!(vw.rules, Some(validating_rules()));
        assert_eq!(
            mw.rules.as_deref(),
            vw.rules.as_ref().map(|r| &r[..r.len() - 1])
        );
        assert_eq!(mw.side_effects, vw.side_effects);
        assert_eq!(mw.timeout_seconds, Some(5));
        assert_eq!(mw.timeout_seconds, vw.timeout_seconds);
    }

    #[test]
    fn url_configurations_are_scoped_and_documented_choices_hold() {
        let (m, v) = by_url(&ByUrl {
            name: "x",
            base_url: "https://127.0.0.1:9443/",
            ca_bundle: "PEM",
            operator_namespace: "sandbox-system",
            only: None,
            operator_user: None,
            claim_creates_in_one_call: true,
        });
        assert!(m.webhooks.as_ref().unwrap()[0].match_conditions.is_none());
        assert_eq!(
            v.webhooks.as_ref().unwrap()[0].match_conditions,
            validating_match_conditions(None, true)
        );
        let mw = &m.webhooks.unwrap()[0];
        assert_eq!(
            mw.client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/mutate")
        );
        assert!(mw.client_config.service.is_none());
        assert_eq!(mw.side_effects, "None");
        assert_eq!(mw.reinvocation_policy.as_deref(), Some("IfNeeded"));
        let vw = &v.webhooks.unwrap()[0];
        assert_eq!(
            vw.client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/validate")
        );
        let excluded = vw
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0]
            .values
            .clone()
            .unwrap();
        assert_eq!(excluded, ["kube-system", "sandbox-system"]);
        let resources: Vec<String> = rules()
            .into_iter()
            .flat_map(|r| r.resources.unwrap())
            .collect();
        assert_eq!(resources.len(), 4);
        assert_eq!(mw.rules, Some(rules()));
        let validating: Vec<String> = vw
            .rules
            .clone()
            .unwrap()
            .into_iter()
            .flat_map(|r| r.resources.unwrap())
            .collect();
        assert_eq!(
            validating.last().map(String::as_str),
            Some("sandboxwarmpools/scale"),
            "the validating webhook also sees a pool's scale requests"
        );
        let only = namespace_selector("ns", Some("team-a"));
        assert_eq!(only.match_expressions.unwrap()[0].operator, "In");
    }

    #[test]
    fn only_a_service_account_skips_the_webhooks_for_its_own_sandbox_creates() {
        assert!(match_conditions(None).is_none());
        for person in [
            "admin",
            "kubernetes-admin",
            "system:serviceaccount:ns",
            "system:serviceaccount::sa",
            "system:serviceaccount:ns:",
            "system:serviceaccounts:ns:sa",
        ] {
            assert!(match_conditions(Some(person)).is_none(), "{person}");
        }
        let user = "system:serviceaccount:sandbox-system:sandbox-operator";
        let conditions = match_conditions(Some(user)).unwrap();
        assert_excludes(
            &conditions,
            &[
                "request.userInfo.username == 'system:serviceaccount:sandbox-system:sandbox-operator'",
                "request.resource.resource == 'sandboxes'",
                "request.operation == 'CREATE'",
            ],
        );
        let (m, v) = by_url(&ByUrl {
            name: "x",
            base_url: "https://127.0.0.1:1",
            ca_bundle: "PEM",
            operator_namespace: "ns",
            only: None,
            operator_user: Some(user),
            claim_creates_in_one_call: true,
        });
        assert_eq!(
            m.webhooks.unwrap()[0].match_conditions,
            Some(conditions.clone())
        );
        let validating = v.webhooks.unwrap()[0].match_conditions.clone().unwrap();
        assert_eq!(validating[..1], conditions[..]);
        assert_eq!(validating[1].name, CLAIM_CREATES_CHECKED_WHEN_MUTATED);
    }

    #[test]
    fn only_claim_creates_skip_the_validating_webhook() {
        assert!(validating_match_conditions(None, false).is_none());
        assert_excludes(
            &validating_match_conditions(None, true).unwrap(),
            &[
                "request.resource.group == 'extensions.agents.x-k8s.io'",
                "request.resource.resource == 'sandboxclaims'",
                "request.operation == 'CREATE'",
            ],
        );
    }

    /// `conditions` is one condition: the negation of all of `parts`.
    fn assert_excludes(conditions: &[MatchCondition], parts: &[&str]) {
        assert_eq!(conditions.len(), 1);
        let expression = &conditions[0].expression;
        assert!(expression.starts_with("!("), "{expression}");
        for part in parts {
            assert!(expression.contains(part), "{expression}");
        }
    }
}
