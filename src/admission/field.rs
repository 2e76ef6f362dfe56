//! Field paths and typed reads of untyped objects.
//!
//! Admission works on the raw JSON of the request rather than on the typed
//! CRD structs: a mutating webhook runs before the API server checks the
//! schema, so the object may be any shape, and a single wrong-typed field must
//! produce a message that names it instead of a decode error about the whole
//! object. Every read here therefore either returns the field or a
//! [`Denial`] that says where and what was expected.

use std::borrow::Cow;
use std::fmt;

use json_patch::jsonptr::{PointerBuf, Token};
use serde_json::{Map, Value};

/// One rejected field: where, and which rule it breaks.
///
/// Displays as `path: message`, for example
/// `spec.podTemplate.spec.containers[0].resources.limits.memory: 128Gi exceeds the maximum 64Gi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The field, as a dotted path with `[index]` for list items
    /// (`spec.podTemplate.spec.volumes[1].hostPath`).
    pub path: String,
    /// The rule, phrased so that `path: message` reads as a sentence.
    pub message: String,
}

impl Denial {
    pub(crate) fn new(path: &FieldPath, message: impl Into<String>) -> Self {
        Denial {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// How many denials one verdict lists at most. An object may break a rule
/// once per list item (a container with 75,000 host ports), and each new
/// denial is compared with those recorded (two rules may reach the same
/// field), so without a bound one review could cost quadratic time in its
/// size: seconds of CPU for every caller of the webhook.
pub(crate) const MAX_DENIALS: usize = 50;

/// Records `denial` in `out` once, up to [`MAX_DENIALS`]; the first one
/// past the bound is replaced by a note that more were not listed, and the
/// rest are dropped.
pub(crate) fn record_denial(out: &mut Vec<Denial>, denial: Denial) {
    if out.len() > MAX_DENIALS || out.contains(&denial) {
        return;
    }
    if out.len() < MAX_DENIALS {
        out.push(denial);
    } else {
        out.push(Denial {
            path: String::new(),
            message: format!(
                "and more: one answer lists at most {MAX_DENIALS} denials; fix these and try again"
            ),
        });
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A path into an object, rendered two ways: dotted for people
/// (`metadata.annotations[agents.x-k8s.io/admitted-at]`) and as an RFC 6901
/// JSON pointer for patches (`/metadata/annotations/agents.x-k8s.io~1admitted-at`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Segment>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(Cow<'static, str>),
    Index(usize),
}

impl FieldPath {
    /// The object itself.
    pub(crate) fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// The member `key` of the object at this path.
    pub(crate) fn key(&self, key: impl Into<Cow<'static, str>>) -> Self {
        let mut segments = Vec::with_capacity(self.0.len() + 1);
        segments.extend_from_slice(&self.0);
        segments.push(Segment::Key(key.into()));
        FieldPath(segments)
    }

    /// Item `index` of the list at this path.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segments = Vec::with_capacity(self.0.len() + 1);
        segments.extend_from_slice(&self.0);
        segments.push(Segment::Index(index));
        FieldPath(segments)
    }

    /// The JSON pointer to this path, with `/` and `~` in keys escaped.
    pub(crate) fn pointer(&self) -> PointerBuf {
        PointerBuf::from_tokens(self.0.iter().map(|segment| match segment {
            Segment::Key(key) => Token::new(key.as_ref()),
            Segment::Index(index) => Token::from(*index),
        }))
    }
}

impl fmt::Display for FieldPath {
    /// Field names join with dots; map keys that are not plain identifiers
    /// (`nvidia.com/gpu`, annotation keys) go in brackets, as the API server
    /// writes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) if is_identifier(key) => {
                    if position > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                Segment::Key(key) => write!(f, "[{key}]")?,
            }
        }
        Ok(())
    }
}

fn is_identifier(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `object[key]`, treating an explicit `null` like an absent field (the API
/// server drops nulls on write, and so do we when reading).
pub(crate) fn present<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    object.get(key).filter(|value| !value.is_null())
}

/// A JSON list, as [`optional`] reads it.
pub(crate) type List<'v> = &'v Vec<Value>;

/// A JSON type a field can be read as, with the rule a wrong type breaks.
pub(crate) trait FieldType<'v>: Sized {
    /// What the denial says when the value has another type.
    const EXPECTED: &'static str;
    /// The value as this type, if it is one.
    fn read(value: &'v Value) -> Option<Self>;
}

macro_rules! field_type {
    ($type:ty, $read:path, $expected:literal) => {
        impl<'v> FieldType<'v> for $type {
            const EXPECTED: &'static str = $expected;
            fn read(value: &'v Value) -> Option<Self> {
                $read(value)
            }
        }
    };
}

field_type!(bool, Value::as_bool, "must be true or false");
field_type!(i64, Value::as_i64, "must be an integer");
field_type!(&'v str, Value::as_str, "must be a string");
field_type!(List<'v>, Value::as_array, "must be a list");
field_type!(
    &'v Map<String, Value>,
    Value::as_object,
    "must be an object"
);

/// `object[key]` as `T`; `None` when absent (or null), a denial naming the
/// key's path when it is something else.
pub(crate) fn optional<'v, T: FieldType<'v>>(
    object: &'v Map<String, Value>,
    key: &'static str,
    path: &FieldPath,
) -> Result<Option<T>, Denial> {
    present(object, key)
        .map(|value| T::read(value).ok_or_else(|| Denial::new(&path.key(key), T::EXPECTED)))
        .transpose()
}

/// `object[key]` as an object; `None` when absent, a denial when it is
/// something else.
pub(crate) fn optional_object<'v>(
    object: &'v Map<String, Value>,
    key: &'static str,
    path: &FieldPath,
) -> Result<Option<&'v Map<String, Value>>, Denial> {
    optional(object, key, path)
}

/// `object[key]` as an object that must be there.
pub(crate) fn required_object<'v>(
    object: &'v Map<String, Value>,
    key: &'static str,
    path: &FieldPath,
) -> Result<&'v Map<String, Value>, Denial> {
    optional_object(object, key, path)?.ok_or_else(|| Denial::new(&path.key(key), "is required"))
}

/// A list item that is an object, with its path.
pub(crate) type ObjectItem<'v> = (FieldPath, &'v Map<String, Value>);

/// The items of the list `object[key]` that are objects, with their paths;
/// the first item that is not an object is a denial.
pub(crate) fn object_items<'v>(
    object: &'v Map<String, Value>,
    key: &'static str,
    path: &FieldPath,
) -> Result<Vec<ObjectItem<'v>>, Denial> {
    let Some(items) = optional::<List>(object, key, path)? else {
        return Ok(Vec::new());
    };
    let list_path = path.key(key);
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let item_path = list_path.index(index);
            match item {
                Value::Object(map) => Ok((item_path, map)),
                _ => Err(Denial::new(&item_path, "must be an object")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_dotted_paths_and_escaped_pointers() {
        let path = FieldPath::root()
            .key("spec")
            .key("podTemplate")
            .key("spec")
            .key("containers")
            .index(0)
            .key("resources")
            .key("limits")
            .key("memory");
        assert_eq!(
            path.to_string(),
            "spec.podTemplate.spec.containers[0].resources.limits.memory"
        );
        assert_eq!(
            path.pointer().as_str(),
            "/spec/podTemplate/spec/containers/0/resources/limits/memory"
        );

        let annotation = FieldPath::root()
            .key("metadata")
            .key("annotations")
            .key("agents.x-k8s.io/admitted-at");
        assert_eq!(
            annotation.to_string(),
            "metadata.annotations[agents.x-k8s.io/admitted-at]"
        );
        assert_eq!(
            annotation.pointer().as_str(),
            "/metadata/annotations/agents.x-k8s.io~1admitted-at"
        );
        assert_eq!(FieldPath::root().key("a~b").pointer().as_str(), "/a~0b");
    }

    #[test]
    fn typed_reads_name_the_field_on_a_wrong_type() {
        let object = serde_json::json!({"a": 1, "b": null, "c": {}, "d": [1]});
        let object = object.as_object().unwrap();
        let root = FieldPath::root().key("spec");
        assert_eq!(
            optional_object(object, "a", &root).unwrap_err().to_string(),
            "spec.a: must be an object"
        );
        assert_eq!(optional_object(object, "b", &root), Ok(None));
        assert!(optional_object(object, "c", &root).unwrap().is_some());
        assert_eq!(
            required_object(object, "missing", &root)
                .unwrap_err()
                .to_string(),
            "spec.missing: is required"
        );
        assert_eq!(
            object_items(object, "d", &root).unwrap_err().to_string(),
            "spec.d[0]: must be an object"
        );
    }
}
