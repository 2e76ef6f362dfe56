//! The HTTP face: turns a request into a store operation and the answer into
//! a response shaped like the real API server's (objects, lists with their
//! resourceVersion, newline-delimited watch events, `Status` bodies).

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use serde_json::{Value, json};

use crate::faults::{self, Hook, RequestInfo};
use crate::patch::{self, Change};
use crate::path::{ResourcePath, Selector};
use crate::store::Commit;
use crate::{Logged, Shared};

/// The response body type of the fake.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A `Status` body.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn stream(lines: futures::channel::mpsc::UnboundedReceiver<Bytes>) -> Response<Body> {
    let body = StreamBody::new(lines.map(|line| Ok(http_body::Frame::data(line))));
    Response::new(BodyExt::boxed_unsync(body))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Answers one request (faults first, then the store), and logs it.
pub(crate) async fn handle(
    shared: &Shared,
    request: Request<kube::client::Body>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let info = RequestInfo {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        resource: ResourcePath::parse(parts.uri.path()),
    };
    let actions = shared.faults.lock().expect("faults").take(&info);
    let (failure, hooks) = faults::on_arrival(actions, &info).await;
    let (code, response) = match failure {
        Some(failure) => {
            let code = failure["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            (code, respond(code, &failure))
        }
        None => serve(shared, &info, &parts.method, &content_type, hooks).await,
    };
    shared.log.lock().expect("log").push(Logged {
        method: info.method,
        path: info.path,
        query: info.query,
        code,
    });
    response
}

async fn serve(
    shared: &Shared,
    info: &RequestInfo,
    method: &Method,
    content_type: &str,
    hooks: Vec<Hook>,
) -> (u16, Response<Body>) {
    let Some(path) = info.resource.clone() else {
        let body = status(404, "NotFound", "the fake serves only resource paths");
        return (404, respond(404, &body));
    };
    if *method == Method::GET && path.name.is_none() && info.is_watch() {
        return (200, watch(shared, info, &path));
    }
    let result = match (method.clone(), path.key()) {
        (Method::GET, Some(key)) => {
            let read = shared.state().get(&key);
            run(&hooks, info).await;
            read.map(|o| (200, o))
        }
        (Method::GET, None) => list(shared, info, &path),
        (Method::POST, None) => {
            run(&hooks, info).await;
            shared
                .state()
                .create(&path.collection, info.body.clone())
                .map(|o| (201, o))
        }
        (Method::PUT, Some(_)) => {
            write(
                shared,
                info,
                &path,
                Change::Replace(info.body.clone()),
                hooks,
            )
            .await
        }
        (Method::PATCH, Some(_)) => match patch_kind(content_type, info.body.clone()) {
            Ok(change) => write(shared, info, &path, change, hooks).await,
            Err(e) => Err(e),
        },
        (Method::DELETE, Some(key)) => {
            run(&hooks, info).await;
            shared.state().delete(&key, &info.body).map(|o| (200, o))
        }
        _ => Err(status(
            405,
            "MethodNotAllowed",
            &format!("the fake does not serve {method} {}", info.path),
        )),
    };
    match result {
        Ok((code, body)) => (code, respond(code, &body)),
        Err(failure) => {
            let code = failure["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            (code, respond(code, &failure))
        }
    }
}

async fn run(hooks: &[Hook], info: &RequestInfo) {
    for hook in hooks {
        hook(info.clone()).await;
    }
}

fn patch_kind(content_type: &str, body: Value) -> Result<Change, Value> {
    match content_type.split(';').next().unwrap_or_default().trim() {
        "application/json-patch+json" => Ok(Change::JsonPatch(body)),
        "application/merge-patch+json" => Ok(Change::MergePatch(body)),
        other => Err(status(
            415,
            "UnsupportedMediaType",
            &format!("the fake does not implement patch type {other:?}"),
        )),
    }
}

/// Read, hooks, apply, commit over the version read; again on a concurrent
/// write (the API server's guaranteed update).
async fn write(
    shared: &Shared,
    info: &RequestInfo,
    path: &ResourcePath,
    change: Change,
    hooks: Vec<Hook>,
) -> Result<(u16, Value), Value> {
    let key = path.key().expect("named");
    let split = patch::has_status_subresource(&key.prefix, &key.resource);
    let mut hooks = Some(hooks);
    loop {
        let stored = shared.state().get(&key)?;
        if let Some(hooks) = hooks.take() {
            run(&hooks, info).await;
        }
        let new = patch::apply(
            &stored,
            &change,
            path.subresource.as_deref(),
            split,
            &key.resource,
        )?;
        let version = stored["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match shared.state().commit(&key, &version, new) {
            Commit::Done(object) => return Ok((200, object)),
            Commit::Stale => continue,
        }
    }
}

fn api_version(prefix: &str) -> String {
    prefix
        .strip_prefix("api/")
        .or_else(|| prefix.strip_prefix("apis/"))
        .unwrap_or(prefix)
        .to_owned()
}

fn selector(info: &RequestInfo) -> Result<Selector, Value> {
    let text = query_param(&info.query, "labelSelector").unwrap_or_default();
    Selector::parse(&text).map_err(|bad| {
        status(
            400,
            "BadRequest",
            &format!("unable to parse requirement: {bad}"),
        )
    })
}

fn list(shared: &Shared, info: &RequestInfo, path: &ResourcePath) -> Result<(u16, Value), Value> {
    if query_param(&info.query, "fieldSelector").is_some() {
        return Err(status(
            400,
            "BadRequest",
            "the fake does not implement fieldSelector",
        ));
    }
    let selector = selector(info)?;
    let (items, version) = shared.state().list(&path.collection, &selector);
    let kind = items
        .first()
        .and_then(|o| o["kind"].as_str())
        .map(|k| format!("{k}List"))
        .unwrap_or_else(|| "List".into());
    Ok((
        200,
        json!({
            "kind": kind,
            "apiVersion": api_version(&path.collection.prefix),
            "metadata": {"resourceVersion": version.to_string()},
            "items": items,
        }),
    ))
}

fn watch(shared: &Shared, info: &RequestInfo, path: &ResourcePath) -> Response<Body> {
    let selector = match selector(info) {
        Ok(selector) => selector,
        Err(failure) => return respond(400, &failure),
    };
    let since = query_param(&info.query, "resourceVersion").filter(|v| v != "0");
    let mut state = shared.state();
    let lines = match since.map(|v| v.parse::<u64>()) {
        None => {
            let objects: Vec<Value> = state
                .objects
                .iter()
                .filter(|(k, _)| k.in_collection(&path.collection))
                .map(|(_, o)| o.clone())
                .collect();
            state.hub.subscribe_from_state(
                path.collection.clone(),
                selector,
                objects.iter().collect(),
            )
        }
        Some(Ok(since)) => match state
            .hub
            .subscribe(path.collection.clone(), selector, since)
        {
            Ok(lines) => lines,
            Err(gone) => crate::watch::error_stream(&gone),
        },
        Some(Err(_)) => {
            return respond(
                400,
                &status(400, "BadRequest", "resourceVersion is not a number"),
            );
        }
    };
    stream(lines)
}
