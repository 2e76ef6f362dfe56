//! Watch events: a bounded history of every change (so a watch can resume
//! from a resourceVersion, or learn it is too old: 410 Expired), and the
//! live subscribers each change is sent to.
//!
//! Guarantee: a subscriber registered with [`Hub::subscribe`] receives every
//! event newer than its starting version exactly once and in order (while
//! its resource is held, see [`Hub::hold`], once released): the replay and
//! the registration happen under the store's lock, as do the publications.

use futures::channel::mpsc;
use serde_json::{Value, json};
use std::collections::{BTreeSet, VecDeque};

use crate::path::{Collection, ObjectKey, Selector};

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change: the object before (absent for ADDED) and after (for DELETED,
/// the last state), at resourceVersion `version`.
#[derive(Clone, Debug)]
pub struct Change {
    /// The resourceVersion the change produced.
    pub version: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: ObjectKey,
    /// The object before the change.
    pub before: Option<Value>,
    /// The object after the change (the last state for a delete).
    pub after: Value,
}

/// A watch's filter: collection and label selector, and the events held
/// back from it (see [`Hub::hold`]).
struct Subscriber {
    collection: Collection,
    selector: Selector,
    sender: mpsc::UnboundedSender<bytes::Bytes>,
    held: Vec<bytes::Bytes>,
}

impl Subscriber {
    fn new(
        collection: Collection,
        selector: Selector,
        sender: mpsc::UnboundedSender<bytes::Bytes>,
    ) -> Subscriber {
        Subscriber {
            collection,
            selector,
            sender,
            held: Vec::new(),
        }
    }

    /// Sends `event`, or keeps it while `held`; false when its watch ended.
    fn send(&mut self, event: bytes::Bytes, held: bool) -> bool {
        if held {
            self.held.push(event);
            !self.sender.is_closed()
        } else {
            self.sender.unbounded_send(event).is_ok()
        }
    }

    /// Sends what it held back, in order; false when its watch ended.
    fn flush(&mut self) -> bool {
        std::mem::take(&mut self.held)
            .into_iter()
            .all(|event| self.sender.unbounded_send(event).is_ok())
    }
}

/// History and subscribers.
pub struct Hub {
    history: VecDeque<Change>,
    limit: usize,
    /// Versions at or below this are no longer in the history.
    compacted: u64,
    subscribers: Vec<Subscriber>,
    /// Resources (plural names) whose events are held back from the watches
    /// open now (see [`Hub::hold`]).
    held: BTreeSet<String>,
}

/// The line a watch sends for an event.
fn line(kind: &str, object: &Value) -> bytes::Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    text.into()
}

/// How a change looks through a selector: an object moving into it is
/// ADDED, moving out of it is DELETED, as on the real API server.
fn seen_as(change: &Change, collection: &Collection, selector: &Selector) -> Option<&'static str> {
    if !change.key.in_collection(collection) {
        return None;
    }
    let before = change
        .before
        .as_ref()
        .is_some_and(|b| selector.matches_object(b));
    let after = selector.matches_object(&change.after);
    match (change.kind, before, after) {
        (EventType::Deleted, _, true) => Some("DELETED"),
        (EventType::Added, _, true) => Some("ADDED"),
        (EventType::Modified, true, true) => Some("MODIFIED"),
        (EventType::Modified, false, true) => Some("ADDED"),
        (EventType::Modified, true, false) => Some("DELETED"),
        _ => None,
    }
}

impl Hub {
    /// A hub keeping the last `limit` changes.
    pub fn new(limit: usize) -> Hub {
        Hub {
            history: VecDeque::new(),
            limit: limit.max(1),
            compacted: 0,
            subscribers: Vec::new(),
            held: BTreeSet::new(),
        }
    }

    /// Records a change and sends it to every matching subscriber (dropping
    /// those whose watch ended); a held resource's event waits in its
    /// subscriber until [`Hub::release`].
    pub fn publish(&mut self, change: Change) {
        let held = &self.held;
        self.subscribers
            .retain_mut(|s| match seen_as(&change, &s.collection, &s.selector) {
                Some(kind) => {
                    let hold = held.contains(&s.collection.resource);
                    s.send(line(kind, &change.after), hold)
                }
                None => !s.sender.is_closed(),
            });
        self.history.push_back(change);
        while self.history.len() > self.limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.version;
            }
        }
    }

    /// Holds back the events of `resource` (a plural name) from every watch
    /// open now, as a slow watch delivery would: the store and every read
    /// move on, the watches see nothing more until [`Hub::release`], then
    /// everything, in order. A watch started meanwhile (a re-watch after
    /// [`Hub::close_watches`], a re-list after a 410) is held too, its
    /// replay included.
    pub fn hold(&mut self, resource: &str) {
        self.held.insert(resource.to_owned());
    }

    /// Ends [`Hub::hold`] on `resource`: its watches get what they missed.
    pub fn release(&mut self, resource: &str) {
        self.held.remove(resource);
        self.subscribers
            .retain_mut(|s| s.collection.resource != resource || s.flush());
    }

    /// Forgets every change so far (as etcd compaction does): a watch from
    /// an older version gets 410.
    pub fn compact(&mut self) {
        if let Some(last) = self.history.back() {
            self.compacted = last.version;
        }
        self.history.clear();
    }

    /// Starts a watch after `since`: replays the newer changes and registers
    /// for the next ones. `Err` carries the 410 Expired Status when `since`
    /// is older than the history.
    pub fn subscribe(
        &mut self,
        collection: Collection,
        selector: Selector,
        since: u64,
    ) -> Result<mpsc::UnboundedReceiver<bytes::Bytes>, Value> {
        if since < self.compacted {
            return Err(crate::http::status(
                410,
                "Expired",
                &format!("too old resource version: {since} ({})", self.compacted + 1),
            ));
        }
        let (sender, receiver) = mpsc::unbounded();
        let hold = self.held.contains(&collection.resource);
        let mut subscriber = Subscriber::new(collection, selector, sender);
        for change in self.history.iter().filter(|c| c.version > since) {
            if let Some(kind) = seen_as(change, &subscriber.collection, &subscriber.selector) {
                subscriber.send(line(kind, &change.after), hold);
            }
        }
        self.subscribers.push(subscriber);
        Ok(receiver)
    }

    /// A watch that starts with synthetic ADDED events for `objects` (a
    /// watch without a resourceVersion, or from "0").
    pub fn subscribe_from_state(
        &mut self,
        collection: Collection,
        selector: Selector,
        objects: Vec<&Value>,
    ) -> mpsc::UnboundedReceiver<bytes::Bytes> {
        let (sender, receiver) = mpsc::unbounded();
        let hold = self.held.contains(&collection.resource);
        let events: Vec<bytes::Bytes> = objects
            .into_iter()
            .filter(|o| selector.matches_object(o))
            .map(|o| line("ADDED", o))
            .collect();
        let mut subscriber = Subscriber::new(collection, selector, sender);
        for event in events {
            subscriber.send(event, hold);
        }
        self.subscribers.push(subscriber);
        receiver
    }

    /// Ends every open watch (the client re-watches from its last version).
    pub fn close_watches(&mut self) {
        self.subscribers.clear();
    }

    /// The changes still in the history.
    pub fn history(&self) -> impl Iterator<Item = &Change> {
        self.history.iter()
    }
}

/// A one-line stream carrying an ERROR event (e.g. the 410 Expired Status).
pub fn error_stream(status: &Value) -> mpsc::UnboundedReceiver<bytes::Bytes> {
    let (sender, receiver) = mpsc::unbounded();
    let _ = sender.unbounded_send(line("ERROR", status));
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> Collection {
        Collection {
            prefix: "api/v1".into(),
            resource: "pods".into(),
            namespace: Some("ns".into()),
        }
    }

    fn added(version: u64, name: &str) -> Change {
        let key = ObjectKey {
            prefix: "api/v1".into(),
            resource: "pods".into(),
            namespace: Some("ns".into()),
            name: name.into(),
        };
        let after = json!({"metadata": {"name": name, "resourceVersion": version.to_string()}});
        Change {
            version,
            kind: EventType::Added,
            key,
            before: None,
            after,
        }
    }

    /// The names of the events received so far, in order.
    fn received(receiver: &mut mpsc::UnboundedReceiver<bytes::Bytes>) -> Vec<String> {
        let mut names = Vec::new();
        while let Ok(event) = receiver.try_recv() {
            let event: Value = serde_json::from_slice(&event).expect("an event line");
            let name = event["object"]["metadata"]["name"].as_str();
            names.push(name.expect("a name").to_owned());
        }
        names
    }

    fn everything() -> Selector {
        Selector::parse("").expect("the empty selector")
    }

    #[test]
    fn a_held_resource_s_events_come_after_the_release_in_order() {
        let mut hub = Hub::new(100);
        let mut open = hub.subscribe(pods(), everything(), 0).unwrap();
        hub.publish(added(1, "a"));
        hub.hold("pods");
        hub.publish(added(2, "b"));
        hub.publish(added(3, "c"));
        assert_eq!(received(&mut open), ["a"], "nothing after the hold");
        // Started during the hold: its replay waits as well.
        let mut late = hub.subscribe(pods(), everything(), 1).unwrap();
        let state = json!({"metadata": {"name": "listed"}});
        let mut listed = hub.subscribe_from_state(pods(), everything(), vec![&state]);
        assert!(received(&mut late).is_empty() && received(&mut listed).is_empty());
        hub.hold("services");
        hub.release("services");
        assert!(received(&mut open).is_empty(), "another resource's release");
        hub.release("pods");
        assert_eq!(received(&mut open), ["b", "c"]);
        assert_eq!(received(&mut late), ["b", "c"]);
        assert_eq!(received(&mut listed), ["listed"]);
        hub.publish(added(4, "d"));
        assert_eq!(received(&mut open), ["d"], "not held any more");
    }

    #[test]
    fn a_watch_closed_during_a_hold_is_dropped() {
        let mut hub = Hub::new(100);
        let closed = hub.subscribe(pods(), everything(), 0).unwrap();
        let mut open = hub.subscribe(pods(), everything(), 0).unwrap();
        hub.hold("pods");
        hub.publish(added(1, "a"));
        drop(closed);
        hub.publish(added(2, "b"));
        assert_eq!(hub.subscribers.len(), 1, "the closed watch is dropped");
        hub.release("pods");
        assert_eq!(received(&mut open), ["a", "b"]);
    }
}
