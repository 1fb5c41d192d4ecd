//! The error bodies every client sees, in one place for both attach modes and the rendered Envoy
//! routes: OpenAI-style `{"error": {"message", "type", "param", "code"}}`, or Anthropic's
//! `{"type": "error", "error": {"type", "message"}}` for `/v1/messages` clients.

use serde::Serialize;

/// An error to return to the client, with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// Human-readable message.
    pub message: String,
    /// OpenAI error type (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// Offending request parameter, if any.
    pub param: Option<&'static str>,
    /// Machine-readable code.
    pub code: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// 400 invalid_request_error.
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>, code: &'static str) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: Some(code),
        }
    }

    /// 401 authentication_error.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            status: 401,
            message: message.into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 400 for a model that is not configured (the name echoed, truncated).
    pub fn model_not_found(model: &str) -> Self {
        ApiError {
            status: 400,
            message: format!(
                "The model `{}` does not exist or you do not have access to it.",
                truncate_echo(model)
            ),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        }
    }

    /// 400 for a body that is not JSON (serde's message, bounded).
    pub fn invalid_json(error: &dyn std::fmt::Display) -> Self {
        ApiError::bad_request(
            // serde's messages quote offending values: never echo more than a bounded prefix.
            format!(
                "We could not parse the JSON body of your request: {}.",
                truncate_echo(&error.to_string())
            ),
            None,
            "invalid_json",
        )
    }

    /// 400 for a POST without a body.
    pub fn empty_body() -> Self {
        ApiError::bad_request(
            "The request body is empty: send a JSON object with a `model`.",
            None,
            "invalid_json",
        )
    }

    /// 405 for a routed endpoint asked with another method (`allow` names the one it takes).
    pub fn method_not_allowed(allow: &str) -> Self {
        ApiError {
            status: 405,
            message: format!("This endpoint only accepts {allow} requests."),
            kind: "invalid_request_error",
            param: None,
            code: Some("method_not_allowed"),
        }
    }

    /// 404 for `POST /v1/feedback` naming a request the sidecar did not route (or no longer
    /// remembers): feedback must be about a known routed answer.
    pub fn unknown_request(request_id: &str) -> Self {
        ApiError {
            status: 404,
            message: format!(
                "No routed request with id `{}` is known: feedback needs the `x-request-id` of a request llmsoup routed.",
                truncate_echo(request_id)
            ),
            kind: "invalid_request_error",
            param: Some("request_id"),
            code: Some("request_not_found"),
        }
    }

    /// 404 for anything llmsoup does not serve (the same body as Envoy's `not_found` route).
    pub fn not_found() -> Self {
        ApiError {
            status: 404,
            message: NOT_FOUND_MESSAGE.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("not_found"),
        }
    }

    /// 503 when no model can serve the request.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: 503,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("no_model_available"),
        }
    }

    /// 500 when the wasm filter's fail-open rewrite could not be applied to the request.
    pub fn fail_open_error() -> Self {
        ApiError {
            status: 500,
            message: "llmsoup could not apply the fail-open route.".into(),
            kind: "server_error",
            param: None,
            code: Some("router_error"),
        }
    }

    /// 413 for a request body over the configured limit.
    pub fn too_large() -> Self {
        ApiError {
            status: 413,
            message: "Request body is too large.".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// 503 when the sidecar cannot answer and the gateway fails closed.
    pub fn router_unavailable() -> Self {
        ApiError {
            status: 503,
            message: "The llmsoup router is unavailable.".into(),
            kind: "server_error",
            param: None,
            code: Some("router_unavailable"),
        }
    }

    /// 500 when the routing decision could not be applied to the request.
    pub fn router_error() -> Self {
        ApiError {
            status: 500,
            message: "llmsoup could not apply the routing decision.".into(),
            kind: "server_error",
            param: None,
            code: Some("router_error"),
        }
    }

    /// 429 for a request over a rate limit (requests or tokens per minute).
    pub fn rate_limited(message: impl Into<String>) -> Self {
        ApiError {
            status: 429,
            message: message.into(),
            kind: "rate_limit_error",
            param: None,
            code: Some("rate_limit_exceeded"),
        }
    }

    /// 429 for a request over a spend cap (OpenAI's `insufficient_quota`).
    pub fn budget_exhausted(message: impl Into<String>) -> Self {
        ApiError {
            status: 429,
            message: message.into(),
            kind: "insufficient_quota",
            param: None,
            code: Some("insufficient_quota"),
        }
    }

    /// 429 or 503 (`budgets.unavailable_status`) when the budget store cannot be reached and a
    /// limit that applies fails closed.
    pub fn budget_unavailable(status: u16) -> Self {
        ApiError {
            status,
            message: "Budgets cannot be checked right now; retry shortly.".into(),
            kind: if status >= 500 {
                "server_error"
            } else {
                "rate_limit_error"
            },
            param: None,
            code: Some("budget_unavailable"),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&Body {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        })
        .expect("error body serialises")
    }
}

impl ApiError {
    /// The body in Anthropic's shape (`/v1/messages` clients).
    pub fn to_anthropic_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "type": "error",
            "error": {"type": anthropic_error_type(self.status), "message": self.message},
        }))
        .expect("error body serialises")
    }
}

/// Anthropic's error `type` for an HTTP status.
fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        ApiError::unauthorized(e.message())
    }
}

/// The message of every 404, from the sidecar and from Envoy's route table alike.
pub const NOT_FOUND_MESSAGE: &str =
    "llmsoup serves POST requests to OpenAI-compatible endpoints under /v1/ and GET /v1/models.";

/// Longest client value echoed in an error message, in bytes; longer ones are cut (at a char
/// boundary) and marked, so an error never mirrors a huge input back.
pub const MAX_ECHO_BYTES: usize = 128;

/// `s` cut to [`MAX_ECHO_BYTES`], with `…` when something was cut.
pub fn truncate_echo(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_ECHO_BYTES {
        return s.into();
    }
    let mut end = MAX_ECHO_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let e = ApiError::bad_request("bad", Some("model"), "invalid_model");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["message"], "bad");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "invalid_model");
    }

    #[test]
    fn echoed_values_are_truncated() {
        let huge = "m".repeat(100_000);
        let e = ApiError::model_not_found(&huge);
        assert!(e.message.len() < 300, "{}", e.message.len());
        assert!(e.message.contains(&format!("`{}…`", "m".repeat(MAX_ECHO_BYTES))));
        assert_eq!(truncate_echo("short"), "short");
        // Never cut inside a character.
        let wide = "é".repeat(100);
        assert!(truncate_echo(&wide).ends_with("é…"));
        assert_eq!(
            ApiError::model_not_found("gpt-17").message,
            "The model `gpt-17` does not exist or you do not have access to it."
        );
    }
}
