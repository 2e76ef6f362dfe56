//! A read-only view of one pod (its metadata and spec, as raw JSON) that the
//! Pod Security checks walk, and the collector their findings go into.
//!
//! The view lists every container the way the upstream checks visit them:
//! `initContainers`, then `containers`, then `ephemeralContainers`, each
//! with its field path, so a finding names the exact field. Reads fail
//! closed: a security field of the wrong type is reported as a denial
//! ("must be a string"), never treated as absent.

use serde_json::{Map, Value};

use super::super::field::{Denial, FieldPath, ObjectItem, object_items, optional, optional_object};
use super::super::policy::Profile;
use super::super::user_namespaces::UserNamespaces;

/// The container lists of a pod spec, in the order the checks visit them.
pub(crate) const CONTAINER_LISTS: [&str; 3] =
    ["initContainers", "containers", "ephemeralContainers"];

/// One container of the pod.
pub(crate) struct ContainerView<'v> {
    /// `...spec.containers[0]`.
    pub path: FieldPath,
    /// The container object.
    pub container: &'v Map<String, Value>,
    /// Its `securityContext`, when set.
    pub context: Option<&'v Map<String, Value>>,
    /// `...spec.containers[0].securityContext`.
    pub context_path: FieldPath,
}

/// One pod as the checks see it.
pub(crate) struct PodView<'v> {
    /// `metadata.annotations`, when set.
    pub annotations: Option<&'v Map<String, Value>>,
    /// The path of `metadata.annotations`.
    pub annotations_path: FieldPath,
    /// The pod spec.
    pub spec: &'v Map<String, Value>,
    /// The path of the pod spec.
    pub spec_path: FieldPath,
    /// The pod-level `securityContext`, when set.
    pub context: Option<&'v Map<String, Value>>,
    /// The path of the pod-level `securityContext`.
    pub context_path: FieldPath,
    /// Every container of every list.
    pub containers: Vec<ContainerView<'v>>,
    /// `spec.os.name: windows`: the Linux-only restricted checks do not apply.
    pub windows: bool,
    /// `spec.hostUsers: false`: the pod asks for a user namespace.
    pub asks_user_namespace: bool,
    /// The pod asks for a user namespace and the cluster is known to give
    /// it one (see [`UserNamespaces`]): the root-user checks (and procMount
    /// at baseline) are relaxed, as upstream relaxes them.
    pub user_namespace: bool,
}

/// Why a check that `hostUsers: false` relaxes still ran on a pod that set
/// it; ends the check's message.
const NOT_RELAXED: &str = " (hostUsers: false would allow it, but user namespaces are not known \
    to be supported on this cluster; if they are, set --user-namespaces=enabled)";

/// Where findings go, each tagged with the check and level that made it.
pub(crate) struct Findings<'o> {
    level: Profile,
    out: &'o mut Vec<Denial>,
}

impl<'o> Findings<'o> {
    pub(crate) fn new(level: Profile, out: &'o mut Vec<Denial>) -> Self {
        Findings { level, out }
    }

    /// Records `path: message (Pod Security <level>: <check>)`.
    pub(crate) fn deny(&mut self, check: &str, path: &FieldPath, message: impl AsRef<str>) {
        let level = match self.level {
            Profile::Baseline => "baseline",
            Profile::Restricted => "restricted",
        };
        let denial = Denial::new(
            path,
            format!("{} (Pod Security {level}: {check})", message.as_ref()),
        );
        crate::admission::field::record_denial(self.out, denial);
    }

    /// The value of a read, or `None` with the malformed field recorded.
    pub(crate) fn read<T>(&mut self, read: Result<T, Denial>) -> Option<T> {
        match read {
            Ok(value) => Some(value),
            Err(denial) => {
                crate::admission::field::record_denial(self.out, denial);
                None
            }
        }
    }

    /// `object[key]` as an optional string, failing closed.
    pub(crate) fn str<'v>(
        &mut self,
        object: &'v Map<String, Value>,
        key: &'static str,
        path: &FieldPath,
    ) -> Option<&'v str> {
        self.read(optional::<&str>(object, key, path)).flatten()
    }

    /// `object[key]` as an optional boolean, failing closed.
    pub(crate) fn bool(
        &mut self,
        object: &Map<String, Value>,
        key: &'static str,
        path: &FieldPath,
    ) -> Option<bool> {
        self.read(optional::<bool>(object, key, path)).flatten()
    }

    /// The objects of the list `object[key]` with their paths (none when the
    /// list is absent), failing closed.
    pub(crate) fn items<'v>(
        &mut self,
        object: &'v Map<String, Value>,
        key: &'static str,
        path: &FieldPath,
    ) -> Vec<ObjectItem<'v>> {
        self.read(object_items(object, key, path))
            .unwrap_or_default()
    }

    /// `object[key]` as an optional object, failing closed.
    pub(crate) fn object<'v>(
        &mut self,
        object: &'v Map<String, Value>,
        key: &'static str,
        path: &FieldPath,
    ) -> Option<&'v Map<String, Value>> {
        self.read(optional_object(object, key, path)).flatten()
    }
}

impl<'v> PodView<'v> {
    /// The pod-level security context, then each container's, with paths
    /// (a context may be absent).
    pub(crate) fn security_contexts(
        &self,
    ) -> impl Iterator<Item = (Option<&'v Map<String, Value>>, &FieldPath)> + '_ {
        std::iter::once((self.context, &self.context_path)).chain(
            self.containers
                .iter()
                .map(|container| (container.context, &container.context_path)),
        )
    }

    /// Runs `check` on the object `key` (like `seccompProfile`) of every
    /// security context that has one, pod first, with the object's path; a
    /// malformed one is recorded in `findings` and skipped. Findings come in
    /// context order.
    pub(crate) fn each_context_object(
        &self,
        key: &'static str,
        findings: &mut Findings<'_>,
        mut check: impl FnMut(&'v Map<String, Value>, &FieldPath, &mut Findings<'_>),
    ) {
        for (context, context_path) in self.security_contexts() {
            if let Some(object) = context.and_then(|c| findings.object(c, key, context_path)) {
                check(object, &context_path.key(key), findings);
            }
        }
    }

    /// What a denial of a check that `hostUsers: false` relaxes ends with:
    /// nothing, or, when the pod set it on a cluster not known to honour
    /// it, why it did not relax the check and how to say that it does.
    pub(crate) fn not_relaxed(&self) -> &'static str {
        if self.asks_user_namespace && !self.user_namespace {
            NOT_RELAXED
        } else {
            ""
        }
    }

    /// The view of a pod with `metadata` (may be absent) at `metadata_path`
    /// and `spec` at `spec_path`, on a cluster where `user_namespaces`;
    /// malformed structure is recorded in `findings` and left out of the
    /// view.
    pub(crate) fn new(
        metadata: Option<&'v Map<String, Value>>,
        metadata_path: &FieldPath,
        spec: &'v Map<String, Value>,
        spec_path: &FieldPath,
        user_namespaces: UserNamespaces,
        findings: &mut Findings<'_>,
    ) -> Self {
        let annotations = metadata.and_then(|m| findings.object(m, "annotations", metadata_path));
        let context = findings.object(spec, "securityContext", spec_path);
        let windows = findings
            .object(spec, "os", spec_path)
            .and_then(|os| findings.str(os, "name", &spec_path.key("os")))
            == Some("windows");
        let asks_user_namespace = findings.bool(spec, "hostUsers", spec_path) == Some(false);
        let mut containers = Vec::new();
        for list in CONTAINER_LISTS {
            let Some(items) = findings.read(object_items(spec, list, spec_path)) else {
                continue;
            };
            for (path, container) in items {
                let context = findings.object(container, "securityContext", &path);
                let context_path = path.key("securityContext");
                containers.push(ContainerView {
                    path,
                    container,
                    context,
                    context_path,
                });
            }
        }
        PodView {
            annotations,
            annotations_path: metadata_path.key("annotations"),
            spec,
            spec_path: spec_path.clone(),
            context,
            context_path: spec_path.key("securityContext"),
            containers,
            windows,
            asks_user_namespace,
            user_namespace: asks_user_namespace && user_namespaces.supported(),
        }
    }
}
