//! The objects: one map keyed by [`ObjectKey`], one resourceVersion counter
//! for everything (as etcd's revision), creates with `generateName`, uid and
//! creationTimestamp, conditional commits, deletes with uid/resourceVersion
//! preconditions and finalizers, and ownerReference garbage collection.
//!
//! Guarantees: every write gets a new, larger resourceVersion and one watch
//! event; [`State::commit`] writes only over the exact version that was read
//! (else the caller reads again, like the API server's guaranteed update);
//! a delete removes, in the same step, every dependent whose owners are all
//! gone (background propagation, cascading), and strips dangling owner
//! references from dependents that still have a live owner.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use crate::http::status;
use crate::path::{Collection, ObjectKey, Selector};
use crate::watch::{Change, EventType, Hub};

/// Everything the fake stores.
pub struct State {
    /// Objects by key.
    pub objects: BTreeMap<ObjectKey, Value>,
    /// Last resourceVersion handed out.
    pub version: u64,
    /// Watch history and subscribers.
    pub hub: Hub,
    /// Every change ever made (for assertions; never compacted).
    pub audit: Vec<Change>,
    counter: u64,
}

/// Result of a conditional commit.
pub enum Commit {
    /// Written: the stored object.
    Done(Value),
    /// The object changed (or went away) since it was read: read again.
    Stale,
}

fn rv(object: &Value) -> Option<&str> {
    object["metadata"]["resourceVersion"].as_str()
}

fn not_found(key: &ObjectKey) -> Value {
    let mut body = status(
        404,
        "NotFound",
        &format!("{} \"{}\" not found", key.resource, key.name),
    );
    body["details"] = json!({"name": key.name, "kind": key.resource});
    body
}

impl State {
    /// An empty store whose watch history keeps `history` changes.
    pub fn new(history: usize) -> State {
        State {
            objects: BTreeMap::new(),
            version: 0,
            hub: Hub::new(history),
            audit: Vec::new(),
            counter: 0,
        }
    }

    fn record(&mut self, kind: EventType, key: ObjectKey, before: Option<Value>, after: Value) {
        let change = Change {
            version: self.version,
            kind,
            key,
            before,
            after,
        };
        self.audit.push(change.clone());
        self.hub.publish(change);
    }

    fn next_version(&mut self, object: &mut Value) {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
    }

    /// The object at `key`, or the 404 Status.
    pub fn get(&self, key: &ObjectKey) -> Result<Value, Value> {
        self.objects.get(key).cloned().ok_or_else(|| not_found(key))
    }

    /// The objects of a collection matching a selector, and the current
    /// resourceVersion (the list's).
    pub fn list(&self, collection: &Collection, selector: &Selector) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .iter()
            .filter(|(k, o)| k.in_collection(collection) && selector.matches_object(o))
            .map(|(_, o)| o.clone())
            .collect();
        (items, self.version)
    }

    /// Creates an object in `collection` (name from `metadata.name`, or
    /// `generateName` plus a suffix): 409 AlreadyExists when taken.
    pub fn create(&mut self, collection: &Collection, mut object: Value) -> Result<Value, Value> {
        if !object["metadata"].is_object() {
            return Err(status(400, "BadRequest", "metadata is required"));
        }
        self.counter += 1;
        let name = match (
            object["metadata"]["name"].as_str(),
            object["metadata"]["generateName"].as_str(),
        ) {
            (Some(name), _) => name.to_owned(),
            (None, Some(prefix)) => format!("{prefix}{}", suffix(self.counter)),
            (None, None) => {
                return Err(status(
                    422,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        let key = ObjectKey {
            prefix: collection.prefix.clone(),
            resource: collection.resource.clone(),
            namespace: collection.namespace.clone(),
            name: name.clone(),
        };
        if self.objects.contains_key(&key) {
            let mut body = status(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", key.resource),
            );
            body["details"] = json!({"name": name, "kind": key.resource});
            return Err(body);
        }
        let meta = &mut object["metadata"];
        meta["name"] = json!(name);
        if let Some(namespace) = &key.namespace {
            meta["namespace"] = json!(namespace);
        }
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.counter));
        meta["creationTimestamp"] = json!(now());
        meta["generation"] = json!(1);
        if let Some(map) = meta.as_object_mut() {
            map.remove("deletionTimestamp");
        }
        self.next_version(&mut object);
        self.objects.insert(key.clone(), object.clone());
        self.record(EventType::Added, key, None, object.clone());
        Ok(object)
    }

    /// Writes `new` over the object if it is still at `read_version`.
    /// A changed `spec` bumps `metadata.generation`; an object being deleted
    /// whose finalizers are all gone is removed.
    pub fn commit(&mut self, key: &ObjectKey, read_version: &str, mut new: Value) -> Commit {
        let Some(stored) = self.objects.get(key).cloned() else {
            return Commit::Stale;
        };
        if rv(&stored) != Some(read_version) {
            return Commit::Stale;
        }
        if new.get("spec") != stored.get("spec") {
            let generation = stored["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        self.next_version(&mut new);
        let finalized = !new["metadata"]["deletionTimestamp"].is_null()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty);
        if finalized {
            self.remove(key, new.clone());
            return Commit::Done(new);
        }
        self.objects.insert(key.clone(), new.clone());
        self.record(EventType::Modified, key.clone(), Some(stored), new.clone());
        Commit::Done(new)
    }

    /// Deletes the object, checking the preconditions of the DeleteOptions
    /// body (`preconditions.uid`, `preconditions.resourceVersion`: 409 when
    /// they do not hold). With finalizers the object only gets its
    /// deletionTimestamp.
    pub fn delete(&mut self, key: &ObjectKey, options: &Value) -> Result<Value, Value> {
        let stored = self.get(key)?;
        let preconditions = &options["preconditions"];
        for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            let wanted = &preconditions[field];
            if !wanted.is_null() && *wanted != stored["metadata"][field] {
                let mut body = status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {} \"{}\": Precondition failed: \
                         {what} in precondition: {}, {what} in object meta: {}",
                        key.resource,
                        key.name,
                        wanted.as_str().unwrap_or_default(),
                        stored["metadata"][field].as_str().unwrap_or_default()
                    ),
                );
                body["details"] = json!({"name": key.name, "kind": key.resource});
                return Err(body);
            }
        }
        let has_finalizers = stored["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let mut last = stored.clone();
        if has_finalizers {
            if last["metadata"]["deletionTimestamp"].is_null() {
                last["metadata"]["deletionTimestamp"] = json!(now());
                self.next_version(&mut last);
                self.objects.insert(key.clone(), last.clone());
                self.record(EventType::Modified, key.clone(), Some(stored), last.clone());
            }
            return Ok(last);
        }
        self.version += 1;
        last["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.remove(key, last.clone());
        Ok(last)
    }

    /// Removes the object (DELETED event), then collects its garbage.
    fn remove(&mut self, key: &ObjectKey, last: Value) {
        self.objects.remove(key);
        self.record(EventType::Deleted, key.clone(), None, last);
        self.collect_garbage();
    }

    /// Background garbage collection until nothing changes: a dependent
    /// whose every owner is gone is deleted; one that keeps a live owner
    /// loses the references to the dead ones.
    fn collect_garbage(&mut self) {
        loop {
            let live: HashSet<String> = self
                .objects
                .values()
                .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
                .collect();
            let orphan = self.objects.iter().find_map(|(key, object)| {
                let owners = object["metadata"]["ownerReferences"].as_array()?;
                let dead = owners
                    .iter()
                    .filter(|o| !o["uid"].as_str().is_some_and(|u| live.contains(u)))
                    .count();
                (dead > 0).then(|| (key.clone(), object.clone(), dead == owners.len()))
            });
            let Some((key, object, all_dead)) = orphan else {
                return;
            };
            if all_dead {
                let _ = self.delete(&key, &Value::Null);
            } else {
                let mut kept = object.clone();
                if let Some(owners) = kept["metadata"]["ownerReferences"].as_array_mut() {
                    owners.retain(|o| o["uid"].as_str().is_some_and(|u| live.contains(u)));
                }
                let version = rv(&object).unwrap_or_default().to_owned();
                let _ = self.commit(&key, &version, kept);
            }
        }
    }
}

/// A 5-character suffix for generateName, unique per counter value.
fn suffix(mut n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    for _ in 0..5 {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
    }
    out
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_default()
        .to_string()
}
