//! The one declaration every kind of the operator shares: [`agents_kind!`]
//! writes the `CustomResource` derive of a spec struct with what all four
//! kinds have in common (version `v1alpha1`, namespaced, category `agents`,
//! the `PartialEq`/`Default` derives, an `Age` column last), so each kind
//! module states only what is its own: group, kind, status, short name,
//! description, its columns and its scale subresource.
//!
//! [`api_object!`] gives every struct of the API (the kinds' specs through
//! `agents_kind!`, their parts and their statuses) the same derives,
//! `camelCase` field names, and absent optional fields left out of the
//! JSON, stated once.
//!
//! Guarantee: the generated CRDs are the same as when each kind spelled the
//! attributes out (`make crds` is byte-identical, checked in CI).

/// Declares a kind's spec struct: `agents_kind! { kube(<own kube args>)
/// <attributes and doc> pub struct Spec { .. } }`. The own args end with a
/// comma; columns listed there come before `Age`.
macro_rules! agents_kind {
    (
        kube($($own:tt)*)
        $(#[$($attr:tt)*])*
        pub struct $name:ident $body:tt
    ) => {
        api_object! {
            @derive(kube::CustomResource)
            // kube-derive takes one `printcolumn(...)` per column; clippy
            // reads the repeated `type_` keys as duplicates.
            #[allow(clippy::duplicated_attributes)]
            #[kube(
                version = "v1alpha1",
                namespaced,
                category = "agents",
                derive = "PartialEq",
                derive = "Default",
                $($own)*
                printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
            )]
            $(#[$($attr)*])*
            pub struct $name $body
        }
    };
}

/// Declares a struct of the API: `api_object! { <doc and attributes> pub
/// struct Name { .. } }` (with `@derive(..)` first, more derives).
macro_rules! api_object {
    (
        $(@derive($($derive:path),*))?
        $(#[$($attr:tt)*])*
        pub struct $name:ident $body:tt
    ) => {
        #[serde_with::skip_serializing_none]
        #[derive(
            $($($derive,)*)?
            serde::Serialize,
            serde::Deserialize,
            Clone,
            Debug,
            Default,
            PartialEq,
            schemars::JsonSchema
        )]
        #[serde(rename_all = "camelCase")]
        $(#[$($attr)*])*
        pub struct $name $body
    };
}
