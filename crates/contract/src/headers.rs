//! Header names both attach modes use, the reserved prefix clients may not send, and the
//! dynamic-metadata namespace the two ext_proc streams share.

/// Header Envoy routes on: the chosen model's name.
pub const MODEL_HEADER: &str = "x-llmsoup-model";
/// Response header: the decision that picked the model.
pub const DECISION_HEADER: &str = "x-llmsoup-decision";
/// Response header: matched signals, `kind:name` comma-separated.
pub const SIGNALS_HEADER: &str = "x-llmsoup-signals";
/// Response header: the decision's confidence.
pub const CONFIDENCE_HEADER: &str = "x-llmsoup-confidence";
/// Response header: the request's complexity score (when a complexity signal ran).
pub const COMPLEXITY_HEADER: &str = "x-llmsoup-complexity";
/// Response header: `hit` when the response cache answered, `miss` when a decision with a
/// `cache` plugin sent the request to the provider.
pub const CACHE_HEADER: &str = "x-llmsoup-cache";
/// Prefix reserved for llmsoup; clients may not send these headers.
pub const RESERVED_PREFIX: &str = "x-llmsoup-";
/// The decision reported for requests that took the fail-open path.
pub const FAIL_OPEN_DECISION: &str = "fail-open";
/// Dynamic-metadata namespace the routing stream hands the accounting stream its facts in.
pub const METADATA_NAMESPACE: &str = "llmsoup";
/// Request headers that carry the client's gateway token.
pub const TOKEN_HEADERS: [&str; 2] = ["authorization", "x-api-key"];
/// Envoy keeps `content-length` when a filter replaces the body: it must be set to the new size
/// (a mismatch is a 500 in ext_proc BUFFERED mode, a truncated body with wasm).
pub const CONTENT_LENGTH: &str = "content-length";

/// Whether a request header is llmsoup's to set: the reserved prefix, or the configured extra
/// route header (`compat.selected_model_header`), compared case-insensitively.
pub fn is_reserved(name: &str, route_header: Option<&str>) -> bool {
    let n = RESERVED_PREFIX.len();
    (name.len() >= n && name.as_bytes()[..n].eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes()))
        || route_header.is_some_and(|r| name.eq_ignore_ascii_case(r))
}

/// The client request headers to remove before anything else sees the request: clients may not
/// choose routes or fake llmsoup's verdicts, and with auth on the gateway token is ours and never
/// goes upstream.
pub fn to_strip<'a>(names: impl IntoIterator<Item = &'a str>, route_header: Option<&str>, auth: bool) -> Vec<String> {
    let mut remove: Vec<String> = names
        .into_iter()
        .filter(|k| is_reserved(k, route_header))
        .map(str::to_string)
        .collect();
    if auth {
        remove.extend(TOKEN_HEADERS.iter().map(|h| h.to_string()));
    }
    remove
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_headers_and_the_token_are_stripped() {
        let names = ["X-LLMSOUP-Model", "x-llmsoup", "content-type", "X-Route", "x-llmsoup-"];
        assert_eq!(to_strip(names, None, false), ["X-LLMSOUP-Model", "x-llmsoup-"]);
        assert_eq!(
            to_strip(names, Some("x-route"), true),
            ["X-LLMSOUP-Model", "X-Route", "x-llmsoup-", "authorization", "x-api-key"]
        );
    }
}
