//! The Pod-shaping parts that a Sandbox and a SandboxTemplate share: the Pod
//! template (metadata plus a full `PodSpec`) and PersistentVolumeClaim
//! templates. Plain data; their JSON shape is the upstream v0.1 one, so the
//! generated CRD schemas do not depend on which module holds them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, PodSpec};

api_object! {
    /// Labels and annotations copied onto the Pod made from a template.
    pub struct PodMetadata {
        /// Labels added to the Pod.
        pub labels: Option<BTreeMap<String, String>>,
        /// Annotations added to the Pod.
        pub annotations: Option<BTreeMap<String, String>>,
    }
}

api_object! {
    /// The Pod a sandbox runs: labels/annotations plus a full `PodSpec`.
    pub struct PodTemplate {
        /// Only labels and annotations are used.
        pub metadata: Option<PodMetadata>,
        /// The Pod's spec.
        pub spec: PodSpec,
    }
}

api_object! {
    /// Metadata of a PersistentVolumeClaim template.
    pub struct EmbeddedObjectMetadata {
        /// Name of the template; the claim is named `<name>-<sandbox>` and the
        /// volume is mounted under this name.
        pub name: Option<String>,
        /// Labels added to the PersistentVolumeClaim.
        pub labels: Option<BTreeMap<String, String>>,
        /// Annotations added to the PersistentVolumeClaim.
        pub annotations: Option<BTreeMap<String, String>>,
    }
}

api_object! {
    /// A PersistentVolumeClaim created for, and owned by, a Sandbox.
    pub struct PersistentVolumeClaimTemplate {
        /// The claim's metadata; `name` is required in practice.
        #[serde(default)]
        pub metadata: EmbeddedObjectMetadata,
        /// The claim's spec.
        pub spec: PersistentVolumeClaimSpec,
    }
}
