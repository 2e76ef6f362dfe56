//! Decoding AdmissionReviews and encoding the answers: pure functions of
//! bytes, so every malformed-input case is testable without a server.

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::core::{
    DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta,
    admission::{
        AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND,
        Operation,
    },
};
use serde_json::{Map, Value};

use crate::{Error, Result};

/// Decodes a request body into the `request` of an `admission.k8s.io/v1`
/// AdmissionReview.
///
/// The checks run from the outside in so the error names the first thing
/// wrong: not JSON, then not an AdmissionReview v1, then no `request`, then a
/// `request` of the wrong shape (naming the member: `request.uid`,
/// `request.object`), then a `request` without what the API server always
/// sends: a non-empty `uid` (the answer is matched to the request by it),
/// an `object` for CREATE and UPDATE, and an `oldObject` for UPDATE (a
/// subresource's too: a scale UPDATE carries the Scale before and after).
/// DELETE and CONNECT need neither. Without those checks a handler could
/// only guess: a policy that skips an object it was not given admits it,
/// and one that compares with a missing stored object skips its
/// immutability rules.
pub(crate) fn decode_review(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>> {
    let value: Value = serde_json::from_slice(body).map_err(Error::InvalidJson)?;
    let mut fields = match value {
        Value::Object(fields) => fields,
        _ => {
            return Err(Error::UnsupportedReview {
                api_version: String::new(),
                kind: String::new(),
            });
        }
    };
    let text = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let types = TypeMeta {
        api_version: text("apiVersion"),
        kind: text("kind"),
    };
    if types.api_version != META_API_VERSION_V1 || types.kind != META_KIND {
        return Err(Error::UnsupportedReview {
            api_version: types.api_version,
            kind: types.kind,
        });
    }
    let request = match fields.remove("request") {
        None | Some(Value::Null) => return Err(Error::MissingRequest),
        Some(request) => request,
    };
    let Value::Object(members) = request else {
        return Err(malformed("request", "must be an object"));
    };
    // Decoded whole (the large object is moved, not copied); only when that
    // fails is each member decoded again on its own, to name the one at
    // fault.
    let mut request: AdmissionRequest<DynamicObject> =
        match serde_json::from_value(Value::Object(members)) {
            Ok(request) => request,
            Err(error) => return Err(malformed_member(body, error)),
        };
    request.types = types;
    if request.uid.is_empty() {
        return Err(malformed(
            "request.uid",
            "must not be empty: the API server matches the answer to the request by it",
        ));
    }
    let operation = match request.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete | Operation::Connect => return Ok(request),
    };
    if request.object.is_none() {
        return Err(malformed(
            "request.object",
            format!("is required for {operation}"),
        ));
    }
    if request.operation == Operation::Update && request.old_object.is_none() {
        return Err(malformed("request.oldObject", "is required for UPDATE"));
    }
    Ok(request)
}

fn malformed(field: &str, reason: impl Into<String>) -> Error {
    Error::MalformedRequest {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// The error for a `request` that did not decode (`error`, which names no
/// field): the first member of it that does not decode on its own as its
/// type, or a required one that is missing. The body is parsed again, as
/// this runs only for a refused request.
fn malformed_member(body: &[u8], error: serde_json::Error) -> Error {
    let members = serde_json::from_slice::<Map<String, Value>>(body)
        .ok()
        .and_then(|mut review| match review.remove("request") {
            Some(Value::Object(members)) => Some(members),
            _ => None,
        })
        .unwrap_or_default();
    // Whether a member decodes as the type given, on its own.
    macro_rules! decodes {
        ($t:ty) => {
            |value: &Value| serde_json::from_value::<$t>(value.clone()).map(drop)
        };
    }
    type Decodes = fn(&Value) -> serde_json::Result<()>;
    // Each member `AdmissionRequest` reads, whether it is required, and
    // its type there.
    let checks: [(&str, bool, Decodes); 15] = [
        ("uid", true, decodes!(String)),
        ("kind", true, decodes!(GroupVersionKind)),
        ("resource", true, decodes!(GroupVersionResource)),
        ("subResource", false, decodes!(Option<String>)),
        ("requestKind", false, decodes!(Option<GroupVersionKind>)),
        (
            "requestResource",
            false,
            decodes!(Option<GroupVersionResource>),
        ),
        ("requestSubResource", false, decodes!(Option<String>)),
        ("name", false, decodes!(String)),
        ("namespace", false, decodes!(Option<String>)),
        ("operation", true, decodes!(Operation)),
        ("userInfo", true, decodes!(UserInfo)),
        ("object", false, decodes!(Option<DynamicObject>)),
        ("oldObject", false, decodes!(Option<DynamicObject>)),
        ("dryRun", false, decodes!(bool)),
        ("options", false, decodes!(Option<RawExtension>)),
    ];
    for (key, required, decodes) in checks {
        let field = format!("request.{key}");
        match members.get(key) {
            None if required => return malformed(&field, "is required"),
            None => {}
            Some(value) => {
                if let Err(error) = decodes(value) {
                    return malformed(&field, error.to_string());
                }
            }
        }
    }
    malformed("request", error.to_string())
}

/// Wraps a handler's answer in an `admission.k8s.io/v1` AdmissionReview.
///
/// The `uid` is always the request's: the API server discards an answer
/// whose uid differs, so the transport does not trust the handler with it.
pub(crate) fn encode_review(
    request: &AdmissionRequest<DynamicObject>,
    mut response: AdmissionResponse,
) -> Result<Vec<u8>> {
    response.uid.clone_from(&request.uid);
    let review = AdmissionReview::<DynamicObject> {
        types: TypeMeta {
            api_version: META_API_VERSION_V1.to_owned(),
            kind: META_KIND.to_owned(),
        },
        request: None,
        response: Some(response),
    };
    serde_json::to_vec(&review).map_err(Error::EncodeResponse)
}

/// The Sandbox review the server's integration tests send, shared with the
/// unit tests below.
#[cfg(test)]
#[path = "../tests/server/sandbox_review.rs"]
mod sandbox_review;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        }))
        .unwrap()
    }

    /// The Sandbox review the server's tests send too.
    fn request_body() -> Value {
        sandbox_review::sandbox_request("7f0c6a6e-1111-2222-3333-444455556666", "demo")
    }

    #[test]
    fn decodes_a_v1_review() {
        let request = decode_review(&review(request_body())).unwrap();
        assert_eq!(request.uid, "7f0c6a6e-1111-2222-3333-444455556666");
        assert_eq!(request.kind.kind, "Sandbox");
        assert_eq!(request.types.api_version, "admission.k8s.io/v1");
    }

    #[test]
    fn names_each_kind_of_malformed_input() {
        let cases: [(&[u8], &str); 6] = [
            (b"{not json", "invalid_json"),
            (b"", "invalid_json"),
            (b"[1, 2]", "unsupported_review"),
            (
                br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#,
                "unsupported_review",
            ),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                "missing_request",
            ),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5}}"#,
                "malformed_request",
            ),
        ];
        for (body, label) in cases {
            let error = decode_review(body).unwrap_err();
            assert_eq!(error.label(), label, "{}", String::from_utf8_lossy(body));
            assert_eq!(error.status_code(), http::StatusCode::BAD_REQUEST);
        }
    }

    /// A `request` of the wrong shape named no member (`"uid": 5` gave
    /// "invalid type: integer `5`, expected a string"), an empty `uid` was
    /// accepted, and a CREATE or UPDATE without its objects reached the
    /// policy (found by review): each is refused naming `request.<member>`.
    #[test]
    fn a_malformed_request_names_the_member() {
        let with = |changes: Value| {
            let mut request = request_body();
            for (key, value) in changes.as_object().unwrap() {
                if value.is_null() {
                    request.as_object_mut().unwrap().remove(key);
                } else {
                    request[key] = value.clone();
                }
            }
            review(request)
        };
        let stored = request_body()["object"].clone();
        let cases = [
            (
                json!({"uid": 5}),
                "request.uid: invalid type: integer `5`, expected a string",
            ),
            (
                json!({"uid": ""}),
                "request.uid: must not be empty: the API server matches the answer to the request by it",
            ),
            (json!({"uid": null}), "request.uid: is required"),
            (json!({"userInfo": null}), "request.userInfo: is required"),
            (
                json!({"kind": {"group": "agents.x-k8s.io", "version": "v1alpha1", "kind": 7}}),
                "request.kind: invalid type: integer `7`, expected a string",
            ),
            (
                json!({"operation": "PATCH"}),
                "request.operation: unknown variant `PATCH`, expected one of `CREATE`, `UPDATE`, `DELETE`, `CONNECT`",
            ),
            (
                json!({"name": ["demo"]}),
                "request.name: invalid type: sequence, expected a string",
            ),
            (
                json!({"dryRun": "yes"}),
                "request.dryRun: invalid type: string \"yes\", expected a boolean",
            ),
            (
                json!({"userInfo": {"groups": "admins"}}),
                "request.userInfo: invalid type: string \"admins\", expected a sequence",
            ),
            (
                json!({"object": {"metadata": {"name": 5}}}),
                "request.object: invalid type: integer `5`, expected a string",
            ),
            (
                json!({"object": null}),
                "request.object: is required for CREATE",
            ),
            (
                json!({"operation": "UPDATE", "object": null, "oldObject": stored.clone()}),
                "request.object: is required for UPDATE",
            ),
            (
                json!({"operation": "UPDATE"}),
                "request.oldObject: is required for UPDATE",
            ),
        ];
        for (changes, expected) in cases {
            let error = decode_review(&with(changes.clone())).unwrap_err();
            assert_eq!(error.label(), "malformed_request", "{changes}");
            assert_eq!(error.status_code(), http::StatusCode::BAD_REQUEST);
            assert_eq!(
                error.describe(),
                format!("malformed AdmissionReview request: {expected}"),
                "{changes}"
            );
        }
        let error = decode_review(&review(json!("not a request"))).unwrap_err();
        assert_eq!(
            error.describe(),
            "malformed AdmissionReview request: request: must be an object"
        );

        // What the API server sends is decoded as before: UPDATE with both
        // objects (a scale UPDATE's are Scales), DELETE with the stored
        // object only, CONNECT with neither.
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "p"}, "spec": {"replicas": 3}});
        for changes in [
            json!({"operation": "UPDATE", "oldObject": stored.clone()}),
            json!({"operation": "UPDATE", "subResource": "scale",
                "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                "object": scale.clone(), "oldObject": scale}),
            json!({"operation": "DELETE", "object": null, "oldObject": stored}),
            json!({"operation": "DELETE", "object": null}),
            json!({"operation": "CONNECT", "object": null}),
        ] {
            let decoded = decode_review(&with(changes.clone()));
            assert!(decoded.is_ok(), "{changes}: {:?}", decoded.err());
        }
    }

    #[test]
    fn wrong_version_message_names_what_was_sent() {
        let error = decode_review(br#"{"apiVersion":"v1","kind":"Pod"}"#).unwrap_err();
        assert!(
            error
                .describe()
                .contains(r#"got kind "Pod" with apiVersion "v1""#)
        );
    }

    #[test]
    fn answer_carries_the_request_uid_even_if_the_handler_forgot_it() {
        let request = decode_review(&review(request_body())).unwrap();
        let mut response = AdmissionResponse::from(&request);
        response.uid = "something else".into();
        let body: Value =
            serde_json::from_slice(&encode_review(&request, response).unwrap()).unwrap();
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(
            body["response"]["uid"],
            "7f0c6a6e-1111-2222-3333-444455556666"
        );
        assert_eq!(body["response"]["allowed"], true);
    }
}
