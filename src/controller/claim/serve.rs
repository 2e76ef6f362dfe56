//! Serving a new claim: the pick, round one (steal, Sandbox, NetworkPolicy,
//! Service side by side) and round two (the claim's Ready status). See the
//! module docs of [`super`] for the design.

use std::sync::Arc;
use std::time::Duration;

use crate::controller::Action;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::desired::{
    PoolChoice, desired_network_policy, desired_sandbox, desired_service,
    desired_template_network_policy, pool_choice, same_policy_spec,
};
use super::record_status;
use super::status::{failed_without_sandbox, starting_status, warm_ready_status};
use super::steal::{Taken, candidates, has_pool, reserve_first, stolen_for, take_over};
use super::surplus::delete_pod;
use crate::api::reason;
use crate::api::{ORIGIN_POOL_LABEL, POD_NAME_ANNOTATION, Sandbox, SandboxClaim, SandboxTemplate};
use crate::controller::admit::admit_sandbox;
use crate::controller::policy_hold::with_hold;
use crate::controller::policy_name::NameTaken;
use crate::controller::takeover::pod_key;
use crate::controller::write_status;
use crate::controller::{
    Context, Created, Error, NetworkPolicyMode, Result, create_owned, kube_err, pod_is_ready,
};

/// What serving left the reconcile with.
pub(super) enum Served {
    /// The claim's Sandbox (cold path, or served by another process): mirror it.
    Sandbox(Box<Sandbox>),
    /// Nothing more to do now (warm path done, or waiting for something).
    Waiting(Action),
}

/// Serves a claim that has no Sandbox yet: the pick, the in-process
/// admission of its Sandbox, round one, round two.
pub(super) async fn serve(
    ctx: &Arc<Context>,
    claim: &SandboxClaim,
    namespace: &str,
    claim_uid: &str,
) -> Result<Served> {
    let mut legs = super::legs::Legs::start(claim);
    let Some(template) = template_or_report(ctx, claim, namespace).await? else {
        // The template's creation wakes the claim (`template_trigger`);
        // the requeue is a safety net.
        return Ok(Served::Waiting(Action::requeue(TEMPLATE_RECHECK)));
    };
    if let Some((taken, why)) =
        super::network::earlier_claims_policy(ctx, claim, namespace, claim_uid).or_else(|| {
            ownerless_service(ctx, claim, namespace).map(|why| (NameTaken::Lasting, why))
        })
    {
        // Nothing is taken or started under another's policy; an earlier
        // claim's wakes this claim when it goes (the 30 s are a safety net).
        let status = failed_without_sandbox(
            claim,
            taken.reason(),
            format!("no Pod is taken or started yet: {why}"),
            jiff::Timestamp::now(),
        );
        if claim.status.as_ref() != Some(&status) {
            write_status(ctx, claim, &status).await?;
        }
        return Ok(Served::Waiting(Action::requeue(Duration::from_secs(30))));
    }
    let mut pick = Pick::new(ctx, claim, namespace, claim_uid, &template);
    // From the pick to the Ready write this claim's writes come first (see
    // `controller::critical`); the mark goes when this function returns.
    let _serving = pick
        .first
        .is_some()
        .then(|| ctx.in_flight.begin(claim_uid, namespace));
    // The Sandbox as the webhook would store it, checked against the current
    // policy before anything is written (see `controller::admit`).
    let sandbox = desired_sandbox(claim, &template, pick.named.as_deref())
        .and_then(|s| admit_sandbox(&ctx.config.policy.current(), s));
    let sandbox = match sandbox {
        Ok(sandbox) => sandbox,
        Err(error) => {
            pick.release(ctx);
            return Err(error);
        }
    };
    let (sandbox, stolen) =
        match round_one(ctx, claim, namespace, &template, sandbox, &mut pick).await? {
            RoundOne::Created { sandbox, stolen } => {
                legs.round_one_done();
                (*sandbox, stolen.map(|p| *p))
            }
            // Another process served this claim first: mirror its Sandbox.
            RoundOne::ServedElsewhere(existing) => return Ok(Served::Sandbox(existing)),
        };
    // A lost first race: point the Sandbox at the Pod actually stolen, or at
    // none (cold path).
    let serving = stolen
        .as_ref()
        .map(|p| p.name_any())
        .or(pick.earlier.clone());
    // Pool sizing learns of the claim here, once per claim uid: a hit only
    // when the Pod was Ready in the steal's answer (a Pod still starting, or
    // none, is a miss: the claim waits for a start). A Pod stolen by an
    // earlier try counts by what the cache shows of it now.
    let hit = match &stolen {
        Some(pod) => pod_is_ready(pod),
        None => pick.earlier.as_deref().is_some_and(|name| {
            ctx.caches
                .pods
                .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
                .is_none_or(|pod| pod_is_ready(&pod))
        }),
    };
    // Only a claim that may use a pool counts: one that asks for none
    // (`warmpool: none`) or whose template's Pods need volume claims a pool
    // Pod lacks is cold by design, and counted as a miss it capped the hit
    // ratio and made an autoscaled pool grow for claims it can never
    // serve (found by review).
    if pick.warm_allowed {
        ctx.sizing.record_claim(
            namespace,
            &claim.spec.sandbox_template_ref.name,
            claim_uid,
            hit,
            super::status::admitted_at(claim).unwrap_or_else(jiff::Timestamp::now),
        );
    }
    // The repointed copy goes on: the one from before would look like a
    // Sandbox naming a Pod this claim never got.
    let sandbox = if serving != pick.named {
        repoint(ctx, &sandbox, serving.as_deref()).await?
    } else {
        sandbox
    };
    let launch = match (&serving, hit) {
        (Some(_), true) => "warm",
        (Some(_), false) => "starting pool Pod",
        (None, _) => "cold",
    };
    info!(pod = ?serving, launch, "created Sandbox");
    round_two(ctx, claim, sandbox, stolen, &legs).await
}
/// Why the claim's Service cannot be made: the cache shows a Service of its
/// name with no controller (left by a claim deleted with
/// `--cascade=orphan`, say). A claim reported that only after round one had
/// taken a warm Pod for it. One controlled by another object is left to
/// round one's create, which names it (a Sandbox's own, on the cold path,
/// goes with that Sandbox).
fn ownerless_service(ctx: &Context, claim: &SandboxClaim, namespace: &str) -> Option<String> {
    let name = claim.name_any();
    matches!(ctx.service_controller(namespace, &name), Some(None)).then(|| {
        format!(
            "Service {name} exists and has no controller (as after an orphaning deletion); the claim's Service is made under that name, so nothing is taken or started until it is deleted"
        )
    })
}

/// How often a claim whose template does not exist looks again without
/// any event (its template's creation wakes it).
const TEMPLATE_RECHECK: Duration = Duration::from_secs(60);

/// Whether the claim said `TemplateNotFound` (and waits for its template's
/// creation to wake it).
pub(crate) fn waits_for_its_template(claim: &SandboxClaim) -> bool {
    claim.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == crate::api::READY && c.reason == reason::TEMPLATE_NOT_FOUND)
    })
}

/// The template of a claim, or `None` after reporting `TemplateNotFound`.
/// Read from the cache, else from the API server (the cache may not show a
/// template made a moment ago); once the claim has said `TemplateNotFound`,
/// from the cache alone: the template's creation reaches the cache and
/// wakes the claim, so a claim waiting for a template that never comes
/// costs no request (thousands of them used to cost a GET each every 5 s).
async fn template_or_report(
    ctx: &Context,
    claim: &SandboxClaim,
    namespace: &str,
) -> Result<Option<SandboxTemplate>> {
    let template_name = &claim.spec.sandbox_template_ref.name;
    let found = if waits_for_its_template(claim) {
        ctx.template(namespace, template_name).map(|t| (*t).clone())
    } else {
        ctx.template_or_get(namespace, template_name).await?
    };
    if let Some(template) = found {
        return Ok(Some(template));
    }
    let message =
        format!("SandboxTemplate {template_name} does not exist in namespace {namespace}");
    let status = failed_without_sandbox(
        claim,
        reason::TEMPLATE_NOT_FOUND,
        message.clone(),
        jiff::Timestamp::now(),
    );
    if claim.status.as_ref() != Some(&status) {
        write_status(ctx, claim, &status).await?;
        ctx.event(
            claim,
            EventType::Warning,
            reason::TEMPLATE_NOT_FOUND,
            "Serve",
            message,
        )
        .await;
    }
    Ok(None)
}

/// The pick (no write): a Pod stolen for this claim earlier (a retried
/// reconcile, or a crash between the steal and the Sandbox create), else the
/// first free candidate, reserved in memory, and the next ones to try.
struct Pick {
    choice: PoolChoice,
    earlier: Option<String>,
    warm_allowed: bool,
    first: Option<Arc<Pod>>,
    rest: Vec<Arc<Pod>>,
    /// The Pod the Sandbox names when it is created.
    named: Option<String>,
}

impl Pick {
    fn new(
        ctx: &Context,
        claim: &SandboxClaim,
        namespace: &str,
        claim_uid: &str,
        template: &SandboxTemplate,
    ) -> Pick {
        let choice = pool_choice(claim);
        let earlier = earlier_pod(ctx, namespace, claim_uid);
        let warm_allowed =
            choice != PoolChoice::None && template.spec.volume_claim_templates.is_none();
        let (first, rest) = if earlier.is_none() && warm_allowed {
            reserve_first(ctx, candidates(ctx, claim, namespace, template, &choice))
        } else {
            (None, Vec::new())
        };
        let named = earlier
            .clone()
            .or_else(|| first.as_ref().map(|p| p.name_any()));
        Pick {
            choice,
            earlier,
            warm_allowed,
            first,
            rest,
            named,
        }
    }

    /// Gives the reserved candidate back when nothing will be written.
    fn release(self, ctx: &Context) {
        if let Some(first) = &self.first {
            ctx.reservations.release(&pod_key(first));
        }
    }
}

/// What round one left.
enum RoundOne {
    /// The claim's Sandbox was created; the Pod stolen for it, if any.
    Created {
        sandbox: Box<Sandbox>,
        stolen: Option<Box<Pod>>,
    },
    /// Another process served the claim first; this is its Sandbox.
    ServedElsewhere(Box<Sandbox>),
}

/// Round one, side by side: the steal, the Sandbox, the NetworkPolicy and
/// the Service.
async fn round_one(
    ctx: &Arc<Context>,
    claim: &SandboxClaim,
    namespace: &str,
    template: &SandboxTemplate,
    sandbox: Sandbox,
    pick: &mut Pick,
) -> Result<RoundOne> {
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let service = desired_service(claim, template)?;
    let policy = ensure_claim_policy(ctx, claim, namespace, template);
    let (first, rest) = (pick.first.take(), std::mem::take(&mut pick.rest));
    let named = pick.named.clone();
    let cold = first.is_none();
    let steal = async {
        match first {
            Some(first) => take_over(ctx, claim, first, rest, None, named.as_deref()).await,
            None => Ok(None),
        }
    };
    let service = create_owned(&services, &service, "Service");
    // Each write's step is logged when that write returns, not when the
    // round does.
    let created = create_owned(&sandboxes, &sandbox, "Sandbox");
    let policy = logged(claim, "claim: NetworkPolicy created", policy);
    // Cold (nothing to steal): the policy first, so the Pod the Sandbox
    // controller starts is never without it. Side by side, a refused
    // policy (a quota, a permission) or a crash between the two left the
    // Sandbox to start its Pod with none (found by review): a cold Pod has
    // no pool's policy to fall back on. A stolen Pod keeps its pool's
    // policy (its origin label) until the claim's exists, so the warm path
    // keeps its one round.
    // (Boxed: the round's future stays the size it was.)
    let policy: futures::future::BoxFuture<'_, Result<()>> = if cold {
        Box::pin(policy).await?;
        Box::pin(std::future::ready(Ok(())))
    } else {
        Box::pin(policy)
    };
    let (created, service_created, policy_created, stolen) = futures::join!(
        logged(claim, "claim: Sandbox created", created),
        logged(claim, "claim: Service created", service),
        policy,
        steal
    );
    let stolen = stolen?;
    let ready_taken = stolen.as_ref().is_some_and(|t| pod_is_ready(&t.pod));
    if pick.warm_allowed && pick.earlier.is_none() && !ready_taken {
        let starting = stolen.as_ref().map(|t| t.pod.name_any());
        pool_exhausted(ctx, claim, namespace, &pick.choice, starting);
    }
    let sandbox = match created {
        Ok(Created::New(sandbox)) => sandbox,
        Ok(Created::Existing(existing)) => {
            // Another process served this claim first. A Pod this call stole
            // is not the one its Sandbox uses: give it back by deleting it
            // (it is owned by the claim and never served).
            if let Some(Taken {
                pod,
                by_this_call: true,
            }) = &stolen
                && existing.annotations().get(POD_NAME_ANNOTATION) != Some(&pod.name_any())
            {
                warn!(pod = %pod.name_any(), "claim was served by another process; deleting the Pod stolen for it");
                delete_pod(ctx, &claim.uid().unwrap_or_default(), pod).await?;
            }
            return Ok(RoundOne::ServedElsewhere(Box::new(existing)));
        }
        Err(error) => {
            // A Sandbox of this name that is not the claim's: the Pod stolen
            // now would never serve, so it is given back. Any other error:
            // it stays with the claim and the retry uses it.
            if let (
                Error::NameConflict { .. },
                Some(Taken {
                    pod,
                    by_this_call: true,
                }),
            ) = (&error, &stolen)
            {
                delete_pod(ctx, &claim.uid().unwrap_or_default(), pod).await?;
            }
            return Err(error);
        }
    };
    service_created?;
    policy_created?;
    remember_round_one(ctx, claim);
    Ok(RoundOne::Created {
        sandbox: Box::new(sandbox),
        stolen: stolen.map(|t| Box::new(t.pod)),
    })
}

/// Records round one's creates in the write memo: until the caches show
/// them, later reconciles of this claim must not make them again (see
/// `observe_and_serve`, `ensure_service`, `ensure_network_policy`).
fn remember_round_one(ctx: &Context, claim: &SandboxClaim) {
    let claim_uid = claim.uid().unwrap_or_default();
    let [policy_key, _] = super::policy_memo_keys(&claim_uid);
    for key in [
        policy_key,
        super::sandbox_key(&claim_uid),
        super::service_key(&claim_uid),
    ] {
        ctx.written.record(&key, serde_json::Value::Bool(true));
    }
}

/// Awaits `write`, then puts `step` on the claim's timeline.
async fn logged<T>(
    claim: &SandboxClaim,
    step: &'static str,
    write: impl std::future::Future<Output = T>,
) -> T {
    let done = write.await;
    super::super::timeline(claim, &claim.name_any(), step);
    done
}

/// The NetworkPolicy that covers the claim's Pod: the claim's own
/// (`per-claim`, created owned by the claim) or its template's
/// (`per-template`, see [`ensure_template_policy`]).
async fn ensure_claim_policy(
    ctx: &Context,
    claim: &SandboxClaim,
    namespace: &str,
    template: &SandboxTemplate,
) -> Result<()> {
    match ctx.config.claim_network_policy {
        NetworkPolicyMode::PerClaim => {
            let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), namespace);
            // With the hold: the Pod stolen beside it may outlive the
            // claim (see `policy_hold`); in the same create, no request added.
            let policy = with_hold(
                desired_network_policy(
                    claim,
                    template.spec.network_policy.as_ref(),
                    &ctx.config.policy.current().network.deny_egress(),
                )?,
                ctx.network_policies_listed(),
            );
            create_owned(&policies, &policy, "NetworkPolicy")
                .await
                .map(|_| ())
        }
        NetworkPolicyMode::PerTemplate => ensure_template_policy(ctx, template).await,
    }
}

/// Round two: the claim's Ready status, straight from the steal's answer.
async fn round_two(
    ctx: &Context,
    claim: &SandboxClaim,
    sandbox: Sandbox,
    stolen: Option<Pod>,
    legs: &super::legs::Legs,
) -> Result<Served> {
    match stolen {
        Some(pod) if pod_is_ready(&pod) => {
            let pool = pod.labels().get(ORIGIN_POOL_LABEL).cloned();
            let status = warm_ready_status(
                claim,
                &pod,
                pool,
                &ctx.config.cluster_domain,
                jiff::Timestamp::now(),
            );
            // Only a Ready this call wrote ends the legs (not one skipped
            // or refused as stale: a later reconcile writes that one).
            if record_status(ctx, claim, &status).await? {
                legs.ready_written(&ctx.metrics);
            }
            Ok(Served::Waiting(Action::await_change()))
        }
        // Still starting in the steal's answer (no idle Pod was Ready, or
        // this one stopped being Ready meanwhile): the claim says which Pod
        // it got and waits for the Sandbox's status to say Ready.
        Some(pod) => {
            let now = jiff::Timestamp::now();
            let status = starting_status(claim, &pod, &ctx.config.cluster_domain, now);
            record_status(ctx, claim, &status).await?;
            // The adoption's and the Pod's events bring the claim back; the
            // re-check covers a split brain as for any claim not Ready.
            Ok(Served::Waiting(Action::requeue(super::NOT_READY_RECHECK)))
        }
        None => Ok(Served::Sandbox(Box::new(sandbox))),
    }
}

/// A Pod this claim already stole: in memory (while the cache shows that
/// Pod, not terminating: every Pod stolen was picked from the cache, so
/// one it no longer shows was deleted, with the claim's Sandbox, say, and
/// the memory is forgotten), else in the cache (claim-uid label AND the
/// claim as controller, which only a steal writes), but not one this
/// process gave back (deleted) and the cache still shows.
pub(super) fn earlier_pod(ctx: &Context, namespace: &str, claim_uid: &str) -> Option<String> {
    let remembered = ctx.reservations.stolen_for(claim_uid).filter(|name| {
        let alive = ctx
            .caches
            .pods
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
            .is_some_and(|p| !crate::controller::is_terminating(p.as_ref()));
        if !alive {
            ctx.reservations.forget_steal(claim_uid, name);
        }
        alive
    });
    remembered.or_else(|| {
        ctx.caches
            .index
            .labelled_for_claim(claim_uid)
            .iter()
            .filter_map(|r| ctx.caches.pods.get(r))
            .filter(|p| !ctx.reservations.was_given_back(&pod_key(p)))
            .find(|p| stolen_for(p, claim_uid, None))
            .map(|p| p.name_any())
    })
}

/// Points the Sandbox's `agents.x-k8s.io/pod-name` at `pod` (or removes it:
/// cold path), conditioned on the Sandbox's resourceVersion.
pub(super) async fn repoint(
    ctx: &Context,
    sandbox: &Sandbox,
    pod: Option<&str>,
) -> Result<Sandbox> {
    crate::controller::repoint::point_sandbox_at(&ctx.client, sandbox, pod).await
}

/// When the template has a pool that keeps idle Pods: counts a claim that
/// found no idle Ready Pod in it (and took one still starting, `starting`,
/// or went cold) and, off the claim's path, publishes the PoolExhausted
/// Event. A template without such a pool (none, or only pools sized to
/// zero) has nothing to exhaust: its claims are cold by design, and
/// counting them would raise the exhaustion alert for good.
fn pool_exhausted(
    ctx: &Arc<Context>,
    claim: &SandboxClaim,
    namespace: &str,
    choice: &PoolChoice,
    starting: Option<String>,
) {
    let template = claim.spec.sandbox_template_ref.name.clone();
    if !has_pool(ctx, namespace, &template, choice) {
        return;
    }
    ctx.metrics
        .pool_exhausted
        .with_label_values(&[namespace, &template])
        .inc();
    if !ctx.config.events {
        return;
    }
    let (ctx, claim) = (Arc::clone(ctx), claim.clone());
    tokio::spawn(async move {
        ctx.event(
            &claim,
            EventType::Normal,
            crate::api::reason::POOL_EXHAUSTED,
            "Claim",
            match starting {
                Some(pod) => format!(
                    "no idle Ready Pod of template {template}: taking the pool's Pod {pod}, still starting"
                ),
                None => format!("no idle Ready Pod of template {template}: starting a cold sandbox"),
            },
        )
        .await;
    });
}

/// Memo key of the NetworkPolicy of template `template_uid` (see
/// [`ensure_template_policy`]); forgotten when the policy is deleted.
pub(crate) fn template_policy_key(template_uid: &str) -> String {
    format!("template-policy/{template_uid}")
}

/// Makes sure the template's NetworkPolicy exists (checked against the API
/// server at most every half minute per template; a policy of that name
/// controlled by anything else is a [`Error::NameConflict`]).
pub async fn ensure_template_policy(ctx: &Context, template: &SandboxTemplate) -> Result<()> {
    let key = template_policy_key(template.metadata.uid.as_deref().unwrap_or_default());
    let generation = serde_json::json!(template.metadata.generation);
    if ctx.written.recently_wrote(&key, &generation) {
        return Ok(());
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(
        ctx.client.clone(),
        &template.namespace().unwrap_or_default(),
    );
    let desired = desired_template_network_policy(
        template,
        &ctx.config.policy.current().network.deny_egress(),
    )?;
    let created = create_owned(&policies, &desired, "NetworkPolicy").await?;
    if let Created::Existing(existing) = created
        && !same_policy_spec(existing.spec.as_ref(), desired.spec.as_ref())
    {
        policies
            .patch(
                &desired.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": desired.spec })),
            )
            .await
            .map_err(kube_err("update the template's NetworkPolicy"))?;
    }
    ctx.written.record(&key, generation);
    Ok(())
}
