//! Header-name rules for configured headers (plugins, `compat.selected_model_header`): what a
//! configuration may not name because llmsoup or Envoy owns it.

use llmsoup_contract::headers::RESERVED_PREFIX;

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
}
