//! `header_mutation`: request headers added, updated or deleted on the way upstream, and the
//! checks that keep configured header names away from what llmsoup and Envoy own.

use crate::config::{HeaderMutationPlugin, HeaderValue};
use crate::engine::RESERVED_PREFIX;

/// Headers a plugin may not touch: the router and Envoy compute them.
const MANAGED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "host",
    "te",
    "connection",
    "upgrade",
];

/// Why a configured header name is refused (`None` = acceptable).
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("header names cannot be empty");
    }
    if name.starts_with(':') {
        return Some("pseudo-headers (`:path`, `:authority`, ...) cannot be changed");
    }
    // RFC 9110 token characters.
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.bytes().all(token) {
        return Some("not a valid HTTP header name");
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with(RESERVED_PREFIX) {
        return Some("`x-llmsoup-*` headers are reserved for llmsoup");
    }
    if MANAGED.contains(&lower.as_str()) {
        return Some("this header is managed by the router and cannot be changed");
    }
    None
}

/// Why a configured header value is refused (`None` = acceptable).
pub fn value_problem(value: &str) -> Option<&'static str> {
    value
        .bytes()
        .any(|b| b == b'\r' || b == b'\n' || b == 0)
        .then_some("header values cannot contain CR, LF or NUL")
}

/// The plugin with names lower-cased, as HTTP/2 and Envoy's header maps want them.
pub fn normalise(p: &HeaderMutationPlugin) -> HeaderMutationPlugin {
    let lower = |v: &[HeaderValue]| -> Vec<HeaderValue> {
        v.iter()
            .map(|h| HeaderValue {
                name: h.name.to_ascii_lowercase(),
                value: h.value.clone(),
            })
            .collect()
    };
    HeaderMutationPlugin {
        add: lower(&p.add),
        update: lower(&p.update),
        delete: p.delete.iter().map(|d| d.to_ascii_lowercase()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name_problem("x-team"), None);
        assert_eq!(name_problem("Authorization"), None);
        assert!(name_problem("").is_some());
        assert!(name_problem(":path").unwrap().contains("pseudo"));
        assert!(name_problem("x-llmsoup-model").unwrap().contains("reserved"));
        assert!(name_problem("X-LLMSOUP-decision").unwrap().contains("reserved"));
        assert!(name_problem("content-length").unwrap().contains("managed"));
        assert!(name_problem("bad name").unwrap().contains("valid"));
        assert!(name_problem("x-ü").is_some());
        assert!(value_problem("a\r\nx-evil: 1").is_some());
        assert_eq!(value_problem("plain value"), None);
    }

    #[test]
    fn normalise_lowercases_names_only() {
        let p = normalise(&HeaderMutationPlugin {
            add: vec![HeaderValue {
                name: "X-Team".into(),
                value: "Blue".into(),
            }],
            update: vec![],
            delete: vec!["X-Debug".into()],
        });
        assert_eq!((p.add[0].name.as_str(), p.add[0].value.as_str()), ("x-team", "Blue"));
        assert_eq!(p.delete, ["x-debug"]);
    }
}
