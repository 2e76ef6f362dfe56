//! Resource amounts in the policy: the `{cpu, memory}` defaults and the
//! ceilings (cpu, memory, ephemeral-storage). Omitted keys keep their
//! built-in value and `null` turns a setting off.

use serde::{Deserialize, Serialize};

use super::super::quantity::Quantity;

/// The two resources the policy defaults and caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputeResource {
    /// `cpu`.
    Cpu,
    /// `memory`.
    Memory,
}

impl ComputeResource {
    /// Both resources, in the order messages list them.
    pub const ALL: [ComputeResource; 2] = [ComputeResource::Cpu, ComputeResource::Memory];

    /// The resource name as it appears in `resources.limits`.
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeResource::Cpu => "cpu",
            ComputeResource::Memory => "memory",
        }
    }
}

/// Declares a `{cpu, memory}` section whose omitted keys keep their built-in
/// value (so `ceilings: {cpu: "8"}` keeps the memory ceiling) and whose
/// `null` keys turn the setting off.
macro_rules! resource_amounts {
    ($(#[$doc:meta])* $name:ident { cpu: $cpu:literal, memory: $memory:literal }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            #[doc = concat!("CPU (default `", $cpu, "`); `None` turns it off.")]
            pub cpu: Option<Quantity>,
            #[doc = concat!("Memory (default `", $memory, "`); `None` turns it off.")]
            pub memory: Option<Quantity>,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    cpu: Some(builtin($cpu)),
                    memory: Some(builtin($memory)),
                }
            }
        }

        impl $name {
            /// The amount for one resource.
            pub fn get(&self, resource: ComputeResource) -> Option<&Quantity> {
                match resource {
                    ComputeResource::Cpu => self.cpu.as_ref(),
                    ComputeResource::Memory => self.memory.as_ref(),
                }
            }
        }
    };
}

resource_amounts! {
    /// Requests given to a container that sets neither request nor limit.
    DefaultRequests { cpu: "100m", memory: "128Mi" }
}

resource_amounts! {
    /// Limits given to a container without a limit.
    DefaultLimits { cpu: "2", memory: "2Gi" }
}

/// The largest request or limit one container may set, per resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ceilings {
    /// CPU (default `16`); `None` turns it off.
    pub cpu: Option<Quantity>,
    /// Memory (default `64Gi`); `None` turns it off.
    pub memory: Option<Quantity>,
    /// Local scratch space (default `20Gi`); `None` turns it off.
    #[serde(rename = "ephemeral-storage")]
    pub ephemeral_storage: Option<Quantity>,
}

impl Default for Ceilings {
    fn default() -> Self {
        Ceilings {
            cpu: Some(builtin("16")),
            memory: Some(builtin("64Gi")),
            ephemeral_storage: Some(builtin("20Gi")),
        }
    }
}

impl Ceilings {
    /// The ceiling of cpu or memory.
    pub fn get(&self, resource: ComputeResource) -> Option<&Quantity> {
        match resource {
            ComputeResource::Cpu => self.cpu.as_ref(),
            ComputeResource::Memory => self.memory.as_ref(),
        }
    }

    /// The ceiling of a resource by its name in `resources.limits`
    /// (`cpu`, `memory`, `ephemeral-storage`); `None` for any other name.
    pub fn get_named(&self, name: &str) -> Option<&Quantity> {
        match name {
            "cpu" => self.cpu.as_ref(),
            "memory" => self.memory.as_ref(),
            "ephemeral-storage" => self.ephemeral_storage.as_ref(),
            _ => None,
        }
    }
}

/// One allowed toleration: `key` must match exactly; `operator`, `value`
/// and `effect` must match when set here (unset means any).
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TolerationRule {
    /// The taint key (`""` matches only tolerations with an empty key, which
    /// tolerate every taint).
    pub key: String,
    /// `Equal`, `Exists`, or `Lt` / `Gt` (Kubernetes 1.35+, numeric taint
    /// values); unset allows any.
    pub operator: Option<String>,
    /// The taint value; unset allows any.
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; unset allows any.
    pub effect: Option<String>,
}

impl TolerationRule {
    /// The field of this rule that breaks a rule of the API, and how:
    /// `operator` must be `Equal`, `Exists`, `Lt` or `Gt`, `value` empty
    /// with `Exists` and set with `Lt` and `Gt`,
    /// `effect` empty or a taint effect. A rule the API would refuse in a
    /// toleration would match no toleration the API server stores.
    pub(super) fn problem(&self) -> Option<(&'static str, String)> {
        const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
        if let Some(operator) = &self.operator
            && !matches!(operator.as_str(), "Equal" | "Exists" | "Lt" | "Gt")
        {
            return Some((
                "operator",
                format!(
                    "{operator:?} must be Equal, Exists, Lt or Gt (Lt and Gt: Kubernetes 1.35+); \
                     leave it out to allow any"
                ),
            ));
        }
        if matches!(self.operator.as_deref(), Some("Lt" | "Gt"))
            && self.value.as_deref().is_none_or(str::is_empty)
        {
            return Some((
                "value",
                format!(
                    "must be set when operator is {} (it compares the taint's value with this one)",
                    self.operator.as_deref().unwrap_or_default()
                ),
            ));
        }
        if self.operator.as_deref() == Some("Exists")
            && let Some(value) = self.value.as_deref().filter(|v| !v.is_empty())
        {
            return Some((
                "value",
                format!(
                    "{value:?} must be empty when operator is Exists (a toleration with Exists \
                     matches every value and has none)"
                ),
            ));
        }
        if let Some(effect) = &self.effect
            && !effect.is_empty()
            && !EFFECTS.contains(&effect.as_str())
        {
            return Some((
                "effect",
                format!("{effect:?} must be empty or one of {}", EFFECTS.join(", ")),
            ));
        }
        None
    }
}

/// Why `amount` of a resource counted in bytes (`memory`,
/// `ephemeral-storage`) is not a whole number of bytes, if it is not: a
/// default would be stamped into templates as written, and `100m` of memory
/// is a tenth of a byte, not 100 megabytes.
pub(super) fn fraction_of_byte_rule(amount: &Quantity, resource: &str) -> Option<String> {
    const BYTE: i128 = 1_000_000_000; // nano-units
    let nanos = amount.nanos();
    if nanos % BYTE == 0 {
        return None;
    }
    let what = if nanos.abs() < BYTE {
        "is a fraction of a byte"
    } else {
        "is not a whole number of bytes"
    };
    let hint = if amount.as_str().ends_with('m') {
        " (the suffix m means thousandths: write M or Mi)"
    } else {
        ""
    };
    Some(format!(
        "{amount} {what}; {resource} is counted in whole bytes{hint}"
    ))
}

/// Default requests and limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceDefaults {
    /// Requests given to a container that sets neither request nor limit.
    pub requests: DefaultRequests,
    /// Limits given to a container without a limit.
    pub limits: DefaultLimits,
}

fn builtin(text: &str) -> Quantity {
    Quantity::parse(text).expect("built-in quantities are valid")
}
