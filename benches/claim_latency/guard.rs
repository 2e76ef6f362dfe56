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
//! first thing measured), and removes it at the end of the run.

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
/// like the chart's file or a release's (`...ownership-guard`). A cluster
/// without the admissionregistration v1 policy API (before Kubernetes 1.30)
/// holds none.
pub async fn installed(client: &Client) -> Result<Vec<String>, String> {
    let is_guard = |name: &str| name.ends_with("ownership-guard");
    let mut found = Vec::new();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    match policies.list(&ListParams::default()).await {
        Ok(list) => found.extend(
            list.items
                .iter()
                .map(|p| p.name_any())
                .filter(|n| is_guard(n))
                .map(|n| format!("ValidatingAdmissionPolicy {n}")),
        ),
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(found),
        Err(e) => return Err(format!("list ValidatingAdmissionPolicies: {e}")),
    }
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let list = bindings
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list ValidatingAdmissionPolicyBindings: {e}"))?;
    found.extend(
        list.items
            .iter()
            .map(|b| b.name_any())
            .filter(|n| is_guard(n))
            .map(|n| format!("ValidatingAdmissionPolicyBinding {n}")),
    );
    Ok(found)
}

/// Refuses `--no-ownership-guard` on a cluster that has a guard (checked
/// before the bench makes anything).
pub fn check_off(wanted: bool, found: &[String]) -> Result<(), String> {
    if wanted || found.is_empty() {
        return Ok(());
    }
    Err(format!(
        "--no-ownership-guard: this cluster has the ownership guard ({}), so the run would still pass through it; the bench never removes a guard it did not apply. On the local control plane (`eval $(make cluster-env)`), delete those objects with kubectl and run again",
        found.join(", ")
    ))
}

/// Applies the file's guard when `wanted` and none was `found`.
pub async fn apply(client: &Client, wanted: bool, found: &[String]) -> Result<Guard, String> {
    match (wanted, found.is_empty()) {
        (false, _) => Ok(Guard::Off),
        (true, false) => Ok(Guard::AlreadyInstalled),
        (true, true) => {
            sandbox_operator::webhook::guard::register(client)
                .await
                .map_err(|e| {
                    format!(
                        "apply the ownership guard (needs Kubernetes 1.30+; or run with --no-ownership-guard): {e:#}"
                    )
                })?;
            Ok(Guard::AppliedByBench)
        }
    }
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

    #[test]
    fn a_run_without_the_guard_is_refused_where_one_is_installed() {
        let found = vec!["ValidatingAdmissionPolicyBinding r1-ownership-guard".to_string()];
        let err = check_off(false, &found).unwrap_err();
        assert!(err.starts_with("--no-ownership-guard:"), "{err}");
        assert!(err.contains("r1-ownership-guard"), "{err}");
        assert!(check_off(false, &[]).is_ok());
        assert!(check_off(true, &found).is_ok());
    }
}
