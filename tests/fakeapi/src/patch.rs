//! How an update or patch turns the stored object into the new one, as the
//! real API server does it: JSON patch (RFC 6902, `test` included), JSON
//! merge patch (RFC 7386), replace; the `status` subresource touches only
//! `.status` and the main resource never does; identity fields are kept;
//! a `metadata.resourceVersion` left in the result is a precondition.
//!
//! Pure functions: the store calls [`apply`] on the copy it read and commits
//! only if nobody wrote in between.

use serde_json::Value;

use crate::http::status;

/// The body of a write to an existing object.
#[derive(Clone, Debug)]
pub enum Change {
    /// PUT: the whole object.
    Replace(Value),
    /// PATCH `application/json-patch+json`.
    JsonPatch(Value),
    /// PATCH `application/merge-patch+json`.
    MergePatch(Value),
}

/// Resources whose `.status` is written only through `/status` (core kinds
/// with a status subresource, and every custom resource: this project's
/// CRDs all declare one).
pub fn has_status_subresource(prefix: &str, resource: &str) -> bool {
    const CORE: [&str; 6] = [
        "pods",
        "services",
        "namespaces",
        "nodes",
        "persistentvolumeclaims",
        "persistentvolumes",
    ];
    let group = prefix
        .strip_prefix("apis/")
        .and_then(|g| g.split('/').next());
    match group {
        None => CORE.contains(&resource),
        Some("apps" | "batch" | "policy" | "autoscaling") => true,
        Some(group) => !group.ends_with(".k8s.io") && group.contains('.'),
    }
}

/// The bare 422 the API server answers to any JSON patch it cannot apply,
/// a failed `test` included: the cause is only in `details.causes`.
fn unprocessable(cause: &str) -> Value {
    let mut body = status(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
    );
    body["details"] = serde_json::json!({
        "causes": [{"reason": "UnexpectedServerResponse", "message": cause}]
    });
    body
}

/// 409 Conflict as the API server words it.
pub fn conflict(resource: &str, name: &str) -> Value {
    let mut body = status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
             modified; please apply your changes to the latest version and try again"
        ),
    );
    body["details"] = serde_json::json!({"name": name, "kind": resource});
    body
}

/// The object `change` makes of `stored`. `subresource` is `Some("status")`
/// for a `/status` write; `status_split` says whether the resource has a
/// status subresource. Errors are Status bodies (400, 409, 422).
pub fn apply(
    stored: &Value,
    change: &Change,
    subresource: Option<&str>,
    status_split: bool,
    resource: &str,
) -> Result<Value, Value> {
    let name = stored["metadata"]["name"].as_str().unwrap_or_default();
    let mut result = match change {
        Change::Replace(body) => body.clone(),
        Change::JsonPatch(ops) => {
            let ops: json_patch::Patch = serde_json::from_value(ops.clone())
                .map_err(|e| status(400, "BadRequest", &e.to_string()))?;
            let mut doc = stored.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| unprocessable(&e.to_string()))?;
            doc
        }
        Change::MergePatch(patch) => {
            let mut doc = stored.clone();
            json_patch::merge(&mut doc, patch);
            doc
        }
    };
    if !result.is_object() {
        return Err(status(
            400,
            "BadRequest",
            "the object must be a JSON object",
        ));
    }
    // A resourceVersion in the result is a precondition on the stored one.
    let wanted = &result["metadata"]["resourceVersion"];
    if !wanted.is_null() && *wanted != stored["metadata"]["resourceVersion"] {
        return Err(conflict(resource, name));
    }
    match subresource {
        Some("status") => {
            let new_status = result.get("status").cloned();
            result = stored.clone();
            set_or_remove(&mut result, "status", new_status);
        }
        Some(other) => {
            return Err(status(
                404,
                "NotFound",
                &format!("the fake has no subresource {other}"),
            ));
        }
        None if status_split => set_or_remove(&mut result, "status", stored.get("status").cloned()),
        None => {}
    }
    keep_identity(stored, &mut result);
    Ok(result)
}

fn set_or_remove(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(value) => map.insert(field.to_owned(), value),
            None => map.remove(field),
        };
    }
}

/// Fields a client cannot change: name, namespace, uid, creationTimestamp,
/// generation, deletionTimestamp, kind and apiVersion.
fn keep_identity(stored: &Value, result: &mut Value) {
    for field in ["kind", "apiVersion"] {
        set_or_remove(result, field, stored.get(field).cloned());
    }
    if !result["metadata"].is_object() {
        result["metadata"] = serde_json::json!({});
    }
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
    ] {
        set_or_remove(
            &mut result["metadata"],
            field,
            stored["metadata"].get(field).cloned(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"kind": "Pod", "apiVersion": "v1",
               "metadata": {"name": "a", "uid": "u", "resourceVersion": "5", "labels": {"x": "1"}},
               "spec": {"n": 1}, "status": {"phase": "Running"}})
    }

    #[test]
    fn failed_test_and_bad_op_give_the_same_bare_422() {
        let test = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}]);
        let bad = json!([{"op": "remove", "path": "/metadata/labels/nope"}]);
        let a = apply(&pod(), &Change::JsonPatch(test), None, true, "pods").unwrap_err();
        let b = apply(&pod(), &Change::JsonPatch(bad), None, true, "pods").unwrap_err();
        for e in [&a, &b] {
            assert_eq!(e["code"], 422);
            assert_eq!(e["reason"], "Invalid");
        }
        assert_eq!(a["message"], b["message"]);
    }

    #[test]
    fn merge_patch_resource_version_is_a_precondition() {
        let stale = json!({"metadata": {"resourceVersion": "4", "labels": {"y": "2"}}});
        let e = apply(&pod(), &Change::MergePatch(stale), None, true, "pods").unwrap_err();
        assert_eq!(e["code"], 409);
        let fresh = json!({"metadata": {"resourceVersion": "5", "labels": {"y": "2"}}});
        let ok = apply(&pod(), &Change::MergePatch(fresh), None, true, "pods").unwrap();
        assert_eq!(ok["metadata"]["labels"], json!({"x": "1", "y": "2"}));
    }

    #[test]
    fn status_only_through_the_subresource() {
        let patch = json!({"spec": {"n": 2}, "status": {"phase": "Failed"}});
        let main = apply(
            &pod(),
            &Change::MergePatch(patch.clone()),
            None,
            true,
            "pods",
        )
        .unwrap();
        assert_eq!(
            (main["spec"]["n"].clone(), main["status"]["phase"].clone()),
            (json!(2), json!("Running"))
        );
        let sub = apply(
            &pod(),
            &Change::MergePatch(patch),
            Some("status"),
            true,
            "pods",
        )
        .unwrap();
        assert_eq!(
            (sub["spec"]["n"].clone(), sub["status"]["phase"].clone()),
            (json!(1), json!("Failed"))
        );
        assert!(has_status_subresource(
            "apis/agents.x-k8s.io/v1alpha1",
            "sandboxes"
        ));
        assert!(!has_status_subresource("api/v1", "secrets"));
        assert!(!has_status_subresource(
            "apis/admissionregistration.k8s.io/v1",
            "x"
        ));
    }
}
