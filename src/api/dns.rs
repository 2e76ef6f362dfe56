//! Kubernetes' name rules (`k8s.io/apimachinery/pkg/util/validation`), in
//! one place: the webhook, the policy file and the command line check
//! names with the same functions, and as strictly as the API server.

/// A part of a DNS-1123 name: lowercase letters, digits and '-', starting
/// and ending with a letter or digit.
pub(crate) fn is_dns1123_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
        && bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
}

/// A DNS-1123 label (Kubernetes' `IsDNS1123Label`, the rule for namespace
/// names): one part of at most 63 characters.
pub fn is_dns1123_label(name: &str) -> bool {
    name.len() <= 63 && is_dns1123_part(name)
}

/// A DNS-1123 subdomain (Kubernetes' `IsDNS1123Subdomain`, the rule for
/// most object names: Lease, Secret, webhook configurations): at most 253
/// characters, parts as in [`is_dns1123_label`] joined by '.'. Empty parts
/// (`bad..domain`) and parts ending in '-' (`a-.b`) are refused.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_part)
}

/// A DNS-1035 label (Kubernetes' `IsDNS1035Label`, the rule for Service
/// names): a DNS-1123 label that starts with a letter.
pub fn is_dns1035_label(name: &str) -> bool {
    is_dns1123_label(name) && name.as_bytes()[0].is_ascii_lowercase()
}

/// A host name a certificate can name: dot-separated parts of 1 to 63
/// letters (either case), digits and '-', neither starting nor ending with
/// '-', at most 253 characters, optionally after a `*.` wildcard.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    name.len() <= 253
        && name
            .split('.')
            .all(|part| part.len() <= 63 && is_dns1123_part(&part.to_ascii_lowercase()))
}
