//! The ownership guard during a bench run. The chart installs it by
//! default, and the API server then evaluates its CEL rules on every create
//! and update of a Pod, Service or NetworkPolicy (and of a PVC or one of the
//! operator's own kinds): the operator's writes, and the floor's bare
//! patches too. So the bench measures with it, applied from the same file
//! the chart ships (`sandbox_operator::webhook::guard`), unless
//! `--no-ownership-guard` asks for a run without it. The run states which it
//! was: before this module, a run measured whatever an earlier process had
//! left on the cluster (the integration tests apply the guard and keep it,
//! so `.ci/run`'s bench had it and a bench on a fresh control plane had not).
//!
//! A guard found installed (the file's, or a Helm release's, whose objects
//! are named `<release>-ownership-guard`) is measured as it is: never
//! re-applied, changed or removed. The bench applies the file's guard only
//! when none is there, as late as it can (just before the pool is made, the
//! first thing measured), and removes it at the end of the run. A guard
//! found incomplete (no binding found names a policy found) enforces
//! nothing, so a run could not say what it measured: the bench refuses it
//! before it makes anything, naming the objects.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

/// How the guard stood for this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// The bench applied it; it removes it again at the end.
    AppliedByBench,
    /// It was installed before the run, and stays as it was.
    AlreadyInstalled,
    /// `--no-ownership-guard`, and the cluster has none.
    Off,
}

impl Guard {
    /// As printed in the report's header and its JSON.
    pub fn label(self) -> &'static str {
        match self {
            Guard::AppliedByBench => "on (applied by the bench, as the chart installs it)",
            Guard::AlreadyInstalled => "on (installed on the cluster before the run)",
            Guard::Off => "off (--no-ownership-guard)",
        }
    }
}

/// The guard's objects this cluster holds: the policies and bindings named
/// like the chart's file or a release's (`...ownership-guard`).
#[derive(Debug, Default, PartialEq)]
pub struct Found {
    /// The guard policies, by name.
    policies: Vec<String>,
    /// The guard bindings: (name, the policy it binds).
    bindings: Vec<(String, String)>,
}

impl Found {
    /// Each object, as messages name it.
    fn names(&self) -> String {
        let policies = self
            .policies
            .iter()
            .map(|n| format!("ValidatingAdmissionPolicy {n}"));
        let bindings = self
            .bindings
            .iter()
            .map(|(n, _)| format!("ValidatingAdmissionPolicyBinding {n}"));
        policies.chain(bindings).collect::<Vec<_>>().join(", ")
    }

    fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.bindings.is_empty()
    }

    /// Whether a binding found binds a policy found: only then do the API
    /// server's checks run.
    fn enforcing(&self) -> bool {
        self.bindings
            .iter()
            .any(|(_, policy)| self.policies.contains(policy))
    }
}

/// Lists the guard's objects. A cluster without the admissionregistration
/// v1 policy API (before Kubernetes 1.30) holds none.
pub async fn installed(client: &Client) -> Result<Found, String> {
    let is_guard = |name: &String| name.ends_with("ownership-guard");
    let Some(policies) =
        list::<ValidatingAdmissionPolicy>(client, "ValidatingAdmissionPolicies").await?
    else {
        return Ok(Found::default());
    };
    let bindings =
        list::<ValidatingAdmissionPolicyBinding>(client, "ValidatingAdmissionPolicyBindings")
            .await?
            .unwrap_or_default();
    Ok(Found {
        policies: policies
            .iter()
            .map(|p| p.name_any())
            .filter(is_guard)
            .collect(),
        bindings: bindings
            .iter()
            .map(|b| (b.name_any(), b.spec.policy_name.clone()))
            .filter(|(name, _)| is_guard(name))
            .collect(),
    })
}

/// Every object of a cluster-scoped kind; `None` when the API server does
/// not serve the kind (404).
async fn list<K>(client: &Client, kinds: &str) -> Result<Option<Vec<K>>, String>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    match Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => Ok(Some(list.items)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(format!("list {kinds}: {e}")),
    }
}

/// What the run does about the guard, decided before the bench makes
/// anything: refuses an incomplete guard (it enforces nothing, so the run
/// could not say what it measured) and `--no-ownership-guard` on a cluster
/// that has a guard.
pub fn decide(wanted: bool, found: &Found) -> Result<Guard, String> {
    if !found.is_empty() && !found.enforcing() {
        let or_whole = if wanted {
            ", or install the guard whole,"
        } else {
            ""
        };
        return Err(format!(
            "the cluster holds an incomplete ownership guard ({}): a policy enforces only through a binding that names it, so the run could not say whether it measured the guard. Delete those objects with kubectl (on the local control plane, after `eval $(make cluster-env)`){or_whole} and run again",
            found.names()
        ));
    }
    match (wanted, found.is_empty()) {
        (false, true) => Ok(Guard::Off),
        (false, false) => Err(format!(
            "--no-ownership-guard: this cluster has the ownership guard ({}), so the run would still pass through it; the bench never removes a guard it did not apply. On the local control plane (`eval $(make cluster-env)`), delete those objects with kubectl and run again",
            found.names()
        )),
        (true, false) => Ok(Guard::AlreadyInstalled),
        (true, true) => Ok(Guard::AppliedByBench),
    }
}

/// Applies the file's guard when [`decide`] said the bench applies it.
pub async fn apply(client: &Client, guard: Guard) -> Result<Guard, String> {
    if guard == Guard::AppliedByBench {
        sandbox_operator::webhook::guard::register(client)
            .await
            .map_err(|e| {
                format!(
                    "apply the ownership guard (needs Kubernetes 1.30+; or run with --no-ownership-guard): {e:#}"
                )
            })?;
    }
    Ok(guard)
}

/// Removes the guard if this run applied it; one installed before stays.
pub async fn restore(client: &Client, guard: Guard) {
    if guard != Guard::AppliedByBench {
        return;
    }
    let Ok((policy, binding)) = sandbox_operator::webhook::guard::guard_objects() else {
        return;
    };
    let params = DeleteParams::default();
    let (policy, binding) = (policy.name_any(), binding.name_any());
    if let Err(e) = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete(&binding, &params)
        .await
    {
        eprintln!("warning: could not remove ValidatingAdmissionPolicyBinding {binding}: {e}");
    }
    if let Err(e) = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .delete(&policy, &params)
        .await
    {
        eprintln!("warning: could not remove ValidatingAdmissionPolicy {policy}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(policies: &[&str], bindings: &[(&str, &str)]) -> Found {
        Found {
            policies: policies.iter().map(|p| p.to_string()).collect(),
            bindings: bindings
                .iter()
                .map(|(b, p)| (b.to_string(), p.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_run_without_the_guard_is_refused_where_one_is_installed() {
        let release = found(
            &["r1-ownership-guard"],
            &[("r1-ownership-guard", "r1-ownership-guard")],
        );
        let err = decide(false, &release).unwrap_err();
        assert!(err.starts_with("--no-ownership-guard:"), "{err}");
        assert!(
            err.contains("ValidatingAdmissionPolicyBinding r1-ownership-guard"),
            "{err}"
        );
        assert_eq!(decide(false, &Found::default()), Ok(Guard::Off));
        assert_eq!(decide(true, &release), Ok(Guard::AlreadyInstalled));
        assert_eq!(decide(true, &Found::default()), Ok(Guard::AppliedByBench));
    }

    #[test]
    fn an_incomplete_guard_is_refused_either_way() {
        for incomplete in [
            found(&["sandbox-ownership-guard"], &[]),
            found(
                &[],
                &[("sandbox-ownership-guard", "sandbox-ownership-guard")],
            ),
            found(
                &["a-ownership-guard"],
                &[("b-ownership-guard", "b-ownership-guard")],
            ),
        ] {
            for wanted in [true, false] {
                let err = decide(wanted, &incomplete).unwrap_err();
                assert!(
                    err.starts_with("the cluster holds an incomplete ownership guard ("),
                    "{err}"
                );
                assert!(err.contains(&incomplete.names()), "{err}");
                // Completing it is advice only for a run that wants it.
                assert_eq!(err.contains("install the guard whole"), wanted, "{err}");
            }
        }
        // A whole pair beside a stray object still enforces.
        let whole = found(
            &["sandbox-ownership-guard", "old-ownership-guard"],
            &[("sandbox-ownership-guard", "sandbox-ownership-guard")],
        );
        assert_eq!(decide(true, &whole), Ok(Guard::AlreadyInstalled));
    }
}
