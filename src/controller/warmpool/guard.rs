//! What stops a pool from creating Pods, and how it is reported: a template
//! that violates the current admission policy (the policy holds at creation
//! time too, so a template admitted under an older or laxer policy fills no
//! pool), a pool or template name too long for a label ([`names`]), a pool
//! NetworkPolicy that could not be made ([`super::network`]), or the API
//! server refusing the pool's writes ([`refused`]: Pod Security admission,
//! a quota, a missing ServiceAccount).
//!
//! Guarantee: each blocker gives the pool's `Ready=False` condition with its
//! reason (by [`super::record`]) and a Warning Event, sent once per distinct
//! message per [`crate::controller::memo::WriteMemo`] window.

use k8s_openapi::api::core::v1::PodSpec;
use kube::runtime::events::EventType;

use super::super::{Context, Error};
use crate::admission::Policy;
use crate::api::{SandboxTemplate, SandboxWarmPool, reason};

/// What blocks a pool's creates: the condition reason and the message.
pub type Blocker = (&'static str, String);

/// The template's pod spec as `policy` admits it (defaults applied), or its
/// violations as a blocker. Pure; a reconcile asks
/// [`super::template_facts::TemplateMemo`], which calls it once per template
/// version and policy snapshot.
pub(super) fn admit(policy: &Policy, template: &SandboxTemplate) -> Result<PodSpec, Blocker> {
    use kube::ResourceExt;
    crate::admission::admit_pod_template(policy, &template.spec.pod_template)
        .map(|admitted| admitted.spec)
        .map_err(|denials| {
            (
                reason::POLICY_VIOLATION,
                format!(
                    "template {} violates the admission policy, no Pod is created: {}",
                    template.name_any(),
                    denials
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )
        })
}

/// The names of a pool that no label can carry (longer than 63
/// characters): its own (the pool label of its Pods) and its template's
/// (their template label). The webhook refuses them; a pool stored without
/// it would have every Pod create refused (422), so it creates nothing and
/// says which field breaks which rule. Pure.
pub(super) fn names(pool: &SandboxWarmPool) -> Option<Blocker> {
    use kube::ResourceExt;
    let name = pool.name_any();
    let problems: Vec<String> = [
        ("metadata.name", name.as_str(), "the name"),
        (
            "spec.sandboxTemplateRef.name",
            pool.spec.sandbox_template_ref.name.as_str(),
            "the template's name",
        ),
    ]
    .into_iter()
    .filter_map(|(path, name, whose)| {
        crate::admission::label_value_rule(name, whose).map(|rule| format!("{path}: {rule}"))
    })
    .collect();
    (!problems.is_empty()).then(|| {
        (
            reason::POLICY_VIOLATION,
            format!("{}; no Pod is created", problems.join("; ")),
        )
    })
}

/// The blocker of a write of the pool's that the API server refused
/// (`PodRejected`, `QuotaExceeded`, `Forbidden`, `NameConflict`, with the API
/// server's message), the same mapping as a Sandbox's; `None` for a
/// transient failure (a timeout, a 5xx, a conflict), which changes no
/// status and is retried with backoff. Pure.
pub(super) fn refused(error: &Error) -> Option<Blocker> {
    crate::controller::errors::refusal(error, reason::POD_REJECTED)
        .map(|(reason, message)| (reason, without_generated_name(&message)))
}

/// The API server's refusal without the Pod's name: pool Pods are created
/// with `generateName`, and admission refuses them after the name is
/// made, so the message names a new Pod at each try
/// (`pods "p-x7k2q" is forbidden: ...`). With the name, no two messages
/// matched: every try wrote the status again and sent an Event (found by
/// review). Pure.
pub(super) fn without_generated_name(message: &str) -> String {
    for verdict in ["\" is forbidden", "\" is invalid"] {
        if let Some(end) = message.find(verdict)
            && let Some(start) = message[..end].rfind('"')
        {
            return format!("{}\"<generated name>{}", &message[..start], &message[end..]);
        }
    }
    message.to_owned()
}

/// The refusal the pool's `Ready` condition already shows, when it shows
/// one: a transient failure (a timeout, a 5xx, a conflict) after it keeps
/// it, instead of flipping the status back to `Filling` and on again at the
/// next refusal (found by review). Pure.
pub(super) fn shown_refusal(pool: &SandboxWarmPool) -> Option<Blocker> {
    let ready = crate::api::find_condition(&pool.status.as_ref()?.conditions, crate::api::READY)?;
    let reason = [
        reason::FORBIDDEN,
        reason::QUOTA_EXCEEDED,
        reason::POD_REJECTED,
        reason::NAME_CONFLICT,
    ]
    .into_iter()
    .find(|r| *r == ready.reason)?;
    (ready.status == "False").then(|| (reason, ready.message.clone()))
}

/// Sends a Warning Event for a blocker, unless the same message was sent
/// for this pool a moment ago.
pub(super) async fn warn_once(
    ctx: &Context,
    pool: &SandboxWarmPool,
    key: &str,
    (reason, message): &Blocker,
) {
    let memo = serde_json::Value::String(message.clone());
    let event_key = format!("pool-blocked-event/{key}");
    if ctx.written.recently_wrote(&event_key, &memo) {
        return;
    }
    ctx.event(
        pool,
        EventType::Warning,
        reason,
        "CreatePod",
        message.clone(),
    )
    .await;
    ctx.written.record(&event_key, memo);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, template: &str) -> SandboxWarmPool {
        let mut pool = SandboxWarmPool::new(name, Default::default());
        pool.spec.sandbox_template_ref.name = template.into();
        pool
    }

    #[test]
    fn a_refusal_message_leaves_out_the_generated_pod_name() {
        assert_eq!(
            without_generated_name(
                "create warm pod: pods \"p-x7k2q\" is forbidden: violates PodSecurity \"restricted:latest\""
            ),
            "create warm pod: pods \"<generated name>\" is forbidden: violates PodSecurity \"restricted:latest\""
        );
        assert_eq!(
            without_generated_name("Pod \"p-d6pvl\" is invalid: metadata.labels: too long"),
            "Pod \"<generated name>\" is invalid: metadata.labels: too long"
        );
        assert_eq!(without_generated_name("exceeded quota"), "exceeded quota");
    }

    #[test]
    fn names_no_label_can_carry_block_the_pool_with_the_field_and_the_rule() {
        assert_eq!(names(&pool(&"p".repeat(63), &"t".repeat(63))), None);
        let (reason, message) = names(&pool(&"p".repeat(64), "t")).unwrap();
        assert_eq!(reason, reason::POLICY_VIOLATION);
        assert_eq!(
            message,
            "metadata.name: 64 characters is longer than 63: the name is used as a label value; \
             no Pod is created"
        );
        let (_, message) = names(&pool("p", &"t".repeat(200))).unwrap();
        assert_eq!(
            message,
            "spec.sandboxTemplateRef.name: 200 characters is longer than 63: the template's name \
             is used as a label value; no Pod is created"
        );
        let (_, both) = names(&pool(&"p".repeat(64), &"t".repeat(64))).unwrap();
        assert!(
            both.starts_with("metadata.name: ")
                && both.contains("; spec.sandboxTemplateRef.name: ")
        );
    }
}
