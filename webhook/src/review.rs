//! Decoding AdmissionReviews and encoding the answers: pure functions of
//! bytes, so every malformed-input case is testable without a server.

use kube::core::{
    DynamicObject, TypeMeta,
    admission::{
        AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND,
    },
};
use serde_json::Value;

use crate::{Error, Result};

/// Decodes a request body into the `request` of an `admission.k8s.io/v1`
/// AdmissionReview.
///
/// The checks run from the outside in so the error names the first thing
/// wrong: not JSON, then not an AdmissionReview v1, then no `request`, then a
/// `request` of the wrong shape.
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
    let mut request: AdmissionRequest<DynamicObject> =
        serde_json::from_value(request).map_err(Error::MalformedRequest)?;
    request.types = types;
    Ok(request)
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
