//! Resource paths and label selectors: how a request URL names an object or
//! a collection, for any group (core `/api/v1`, `/apis/<group>/<version>`),
//! namespaced or cluster-scoped, with an optional subresource.

use std::collections::BTreeMap;

/// One stored object's identity: group/version prefix, resource (plural),
/// namespace (`None` for cluster-scoped objects) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `api/v1` or `apis/<group>/<version>`.
    pub prefix: String,
    /// Plural resource name, e.g. `pods`, `sandboxclaims`.
    pub resource: String,
    /// Namespace of a namespaced object.
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
}

impl ObjectKey {
    /// The URL path of the object (no subresource).
    pub fn path(&self) -> String {
        match &self.namespace {
            Some(ns) => format!(
                "/{}/namespaces/{ns}/{}/{}",
                self.prefix, self.resource, self.name
            ),
            None => format!("/{}/{}/{}", self.prefix, self.resource, self.name),
        }
    }

    /// Whether the object belongs to `collection`.
    pub fn in_collection(&self, collection: &Collection) -> bool {
        self.prefix == collection.prefix
            && self.resource == collection.resource
            && (collection.namespace.is_none() || collection.namespace == self.namespace)
    }
}

/// A collection: every object of a resource, in one namespace or in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collection {
    /// `api/v1` or `apis/<group>/<version>`.
    pub prefix: String,
    /// Plural resource name.
    pub resource: String,
    /// One namespace, or all (and cluster-scoped objects) when `None`.
    pub namespace: Option<String>,
}

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    /// The collection.
    pub collection: Collection,
    /// The object, when the path names one.
    pub name: Option<String>,
    /// `status` and the like.
    pub subresource: Option<String>,
}

impl ResourcePath {
    /// Parses `/api/v1/...` or `/apis/<group>/<version>/...`; `None` for
    /// anything else (discovery, non-resource URLs).
    pub fn parse(path: &str) -> Option<ResourcePath> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (prefix, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => (format!("api/{version}"), rest),
            ["apis", group, version, rest @ ..] => (format!("apis/{group}/{version}"), rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
                (Some((*namespace).to_owned()), rest)
            }
            rest => (None, rest),
        };
        let (resource, name, subresource) = match rest {
            [resource] => (resource, None, None),
            [resource, name] => (resource, Some(*name), None),
            [resource, name, sub] => (resource, Some(*name), Some(*sub)),
            _ => return None,
        };
        Some(ResourcePath {
            collection: Collection {
                prefix,
                resource: (*resource).to_owned(),
                namespace,
            },
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
        })
    }

    /// The key of the named object.
    pub fn key(&self) -> Option<ObjectKey> {
        Some(ObjectKey {
            prefix: self.collection.prefix.clone(),
            resource: self.collection.resource.clone(),
            namespace: self.collection.namespace.clone(),
            name: self.name.clone()?,
        })
    }
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
/// `k notin (a,b)`, comma-separated, all must hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses a selector; `Err` names the requirement it could not read.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part).ok_or_else(|| part.to_owned())?);
        }
        Ok(Selector(requirements))
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }

    /// Whether a JSON object's `metadata.labels` satisfy the selector.
    pub fn matches_object(&self, object: &serde_json::Value) -> bool {
        let labels: BTreeMap<String, String> = object["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Option<Requirement> {
    let set = |rest: &str| -> Option<Vec<String>> {
        let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
        Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
    };
    if let Some((key, rest)) = part.split_once(" notin ") {
        return Some(Requirement::NotIn(key.trim().to_owned(), set(rest)?));
    }
    if let Some((key, rest)) = part.split_once(" in ") {
        return Some(Requirement::In(key.trim().to_owned(), set(rest)?));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Some(Requirement::NotEquals(
            key.trim().into(),
            value.trim().into(),
        ));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Some(Requirement::Equals(key.trim().into(), value.trim().into()));
    }
    if let Some(key) = part.strip_prefix('!') {
        return Some(Requirement::NotExists(key.trim().into()));
    }
    let valid = part
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    valid.then(|| Requirement::Exists(part.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_every_shape() {
        let p = ResourcePath::parse("/api/v1/namespaces/ns/pods/a/status").unwrap();
        assert_eq!(p.collection.namespace.as_deref(), Some("ns"));
        assert_eq!(p.collection.resource, "pods");
        assert_eq!(p.name.as_deref(), Some("a"));
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let p = ResourcePath::parse("/api/v1/namespaces/ns").unwrap();
        assert_eq!(p.collection.resource, "namespaces");
        assert_eq!(p.name.as_deref(), Some("ns"));
        let p = ResourcePath::parse("/apis/agents.x-k8s.io/v1alpha1/sandboxes").unwrap();
        assert_eq!(p.collection.prefix, "apis/agents.x-k8s.io/v1alpha1");
        assert!(p.name.is_none() && p.collection.namespace.is_none());
        assert!(ResourcePath::parse("/version").is_none());
        assert_eq!(p.key(), None);
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let m = |s: &str| Selector::parse(s).unwrap().matches(&labels);
        assert!(m("a=1") && m("a==1,b") && m("!c") && m("a in (1,3)") && m("c notin (1)"));
        assert!(!m("a=2") && !m("c") && !m("!a") && !m("a!=1") && !m("b notin (2)"));
        assert!(Selector::parse("a in 1").is_err());
    }
}
