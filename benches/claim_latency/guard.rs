//! The ownership guard during a bench run. The chart installs it by
//! default, and the API server then evaluates its CEL rules on every Pod,
//! Service and NetworkPolicy write: the operator's, and the floor's bare
//! patches too. So the bench measures with it, applied from the same file
//! the chart ships (`sandbox_operator::webhook::guard`), unless
//! `--no-ownership-guard` asks for a run without it. The run states which it
//! was: before this module, a run measured whatever an earlier process had
//! left on the cluster (the integration tests apply the guard and keep it,
//! so `.ci/run`'s bench had it and a bench on a fresh control plane had not).

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};

/// How the guard stood for this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// The bench applied it; it removes it again at the end.
    AppliedByBench,
    /// It was installed before the run (re-applied from this build's file),
    /// and stays.
    AlreadyInstalled,
    /// `--no-ownership-guard`, and the cluster has none under its name.
    Off,
}

impl Guard {
    /// As printed in the report's header and its JSON.
    pub fn label(self) -> &'static str {
        match self {
            Guard::AppliedByBench | Guard::AlreadyInstalled => "on (as the chart installs it)",
            Guard::Off => "off (--no-ownership-guard)",
        }
    }
}

/// The policy's and its binding's names, from the chart's file.
fn names() -> Result<(String, String), String> {
    let (policy, binding) = sandbox_operator::webhook::guard::guard_objects()
        .map_err(|e| format!("ownership guard: {e:#}"))?;
    Ok((policy.name_any(), binding.name_any()))
}

/// Applies the guard (`wanted`), or checks that none is installed.
pub async fn prepare(client: &Client, wanted: bool) -> Result<Guard, String> {
    let (policy, binding) = names()?;
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let installed = bindings
        .get_opt(&binding)
        .await
        .map_err(|e| format!("read ValidatingAdmissionPolicyBinding {binding}: {e}"))?
        .is_some();
    match (wanted, installed) {
        (false, false) => Ok(Guard::Off),
        (false, true) => Err(format!(
            "--no-ownership-guard: ValidatingAdmissionPolicyBinding {binding} is installed on this cluster, so the run would still pass through it; the bench never removes a guard it did not apply (`kubectl delete validatingadmissionpolicybinding {binding}` and `kubectl delete validatingadmissionpolicy {policy}` on a local control plane, then run again)"
        )),
        (true, _) => {
            sandbox_operator::webhook::guard::register(client)
                .await
                .map_err(|e| format!("apply the ownership guard ({policy}): {e:#}"))?;
            Ok(if installed {
                Guard::AlreadyInstalled
            } else {
                Guard::AppliedByBench
            })
        }
    }
}

/// Removes the guard if this run applied it; one installed before stays.
pub async fn restore(client: &Client, guard: Guard) {
    if guard != Guard::AppliedByBench {
        return;
    }
    let Ok((policy, binding)) = names() else {
        return;
    };
    let params = DeleteParams::default();
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
