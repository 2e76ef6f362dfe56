//! Container rules beyond Pod Security: an image is required (and pinned,
//! as a warning), added capabilities stay within the policy's allow-list
//! (which can only narrow the Pod Security set), and escalation left on
//! under baseline is warned about. Resources are in [`super::resources`].

use serde_json::{Map, Value};

use super::super::field::{FieldPath, List, optional, optional_object, present};
use super::super::pss;
use super::Validator;

impl Validator<'_> {
    pub(super) fn container(&mut self, container: &Map<String, Value>, path: &FieldPath) {
        self.image(container, path);
        let (context_path, context) = self.object_field(container, "securityContext", path);
        if let Some(context) = context {
            self.allowed_capabilities(context, &context_path);
        }
        let escalation = context.and_then(|c| present(c, "allowPrivilegeEscalation"));
        if !self.restricted() && escalation == Some(&Value::Bool(true)) {
            self.warn(
                &context_path.key("allowPrivilegeEscalation"),
                "is true, so setuid binaries in the sandbox can gain privileges",
            );
        }
        self.resources(container, path);
    }

    fn image(&mut self, container: &Map<String, Value>, path: &FieldPath) {
        let image_path = path.key("image");
        match self.ok(optional::<&str>(container, "image", path)) {
            Some(None | Some("")) => self.deny(&image_path, "is required"),
            Some(Some(image)) => {
                if let Some(problem) = image_tag_problem(image) {
                    self.warn(&image_path, format_args!("{image:?} {problem}"));
                }
            }
            None => {}
        }
    }

    /// Added capabilities must also be in the policy's `allowedCapabilities`
    /// (compared without `CAP_` and case-insensitively), which can only
    /// narrow what Pod Security allows; names Pod Security already refuses
    /// are reported once, by its check.
    fn allowed_capabilities(&mut self, context: &Map<String, Value>, context_path: &FieldPath) {
        let capabilities_path = context_path.key("capabilities");
        let Some(Some(capabilities)) =
            self.ok(optional_object(context, "capabilities", context_path))
        else {
            return;
        };
        let add_path = capabilities_path.key("add");
        let added = self
            .ok(optional::<List>(capabilities, "add", &capabilities_path))
            .flatten();
        for (index, name) in added.into_iter().flatten().enumerate() {
            match name.as_str() {
                Some(name) if !pss::allows_added_capability(self.policy.profile, name) => {}
                Some(name) if self.policy.allows_capability(name) => {}
                Some(name) => self.deny(
                    &add_path.index(index),
                    format!("{name} is not in allowedCapabilities"),
                ),
                None => self.deny(&add_path.index(index), "must be a string"),
            }
        }
    }
}

/// Why an image reference is not pinned, if it is not: no tag (meaning
/// `latest`) or the `latest` tag. Digests are pinned.
pub(crate) fn image_tag_problem(image: &str) -> Option<&'static str> {
    // The tag follows the last `:` of the last path component; a `:` before
    // the last `/` belongs to a registry port.
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains('@') {
        return None;
    }
    match last.rsplit_once(':') {
        Some((_, "latest")) => Some(
            "uses the tag latest, which can change under running sandboxes; pin a version or digest",
        ),
        Some(_) => None,
        None => Some("has no tag, so it means latest; pin a version or digest"),
    }
}
