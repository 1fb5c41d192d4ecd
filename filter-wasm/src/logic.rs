//! Host-free pieces of the filter: authentication, OpenAI-style error bodies, the fail-open body
//! rewrite, response usage extraction and the upstream descriptor for gRPC calls.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Prefix reserved for llmsoup; clients may not send these headers.
pub const RESERVED_PREFIX: &str = "x-llmsoup-";

/// An OpenAI-style error body.
pub fn error_body(message: &str, kind: &str, code: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    }))
    .unwrap_or_default()
}

pub use llmsoup_proto::auth::AuthError;

/// The 401 body for a refusal, identical to the sidecar's in ext_proc mode.
pub fn auth_error_body(e: AuthError) -> Vec<u8> {
    let message = match e {
        AuthError::Missing => "You didn't provide an API key. Send it as `Authorization: Bearer <token>`.",
        AuthError::Wrong => "Incorrect API key provided.",
    };
    error_body(message, "authentication_error", "invalid_api_key")
}

#[derive(Deserialize)]
struct ModelOnly<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
}

/// Fail-open rewrite: the body with its top-level `model` replaced by the provider id of the
/// requested model when it is configured, else of the default model. Returns the model name
/// chosen and the new body; `None` when the body has no string `model` to rewrite.
pub fn fail_open_rewrite<'m>(
    body: &[u8],
    models: &'m std::collections::HashMap<String, String>,
    default_model: &'m str,
) -> Option<(&'m str, Vec<u8>)> {
    let text = std::str::from_utf8(body).ok()?;
    // Serde would also read `["auto"]` as a ModelOnly (fields by position): only objects qualify.
    if text.trim_start_matches([' ', '\t', '\n', '\r']).as_bytes().first() != Some(&b'{') {
        return None;
    }
    let raw = serde_json::from_str::<ModelOnly>(text).ok()?.model?;
    let requested: String = serde_json::from_str(raw.get()).ok()?;
    let (name, id) = models
        .get_key_value(&requested)
        .or_else(|| models.get_key_value(default_model))?;
    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
    let end = start + raw.get().len();
    let quoted = serde_json::to_string(id).ok()?;
    let mut out = Vec::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[end..]);
    Some((name.as_str(), out))
}

/// Envoy parses the `upstream` argument of `dispatch_grpc_call` as a serialized `GrpcService`
/// first and only then as a cluster name; passing the proto avoids that ambiguity.
pub fn grpc_service(cluster: &str) -> Vec<u8> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct EnvoyGrpc {
        #[prost(string, tag = "1")]
        cluster_name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct GrpcService {
        #[prost(message, optional, tag = "1")]
        envoy_grpc: Option<EnvoyGrpc>,
    }
    prost::Message::encode_to_vec(&GrpcService {
        envoy_grpc: Some(EnvoyGrpc {
            cluster_name: cluster.to_string(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn fail_open_keeps_known_models_and_defaults_the_rest() {
        let models: HashMap<String, String> = [("small".into(), "small-v1".into()), ("big".into(), "big-v2".into())]
            .into_iter()
            .collect();
        let (m, b) = fail_open_rewrite(br#"{"model":"auto","x":[1,{"model":"inner"}]}"#, &models, "small").unwrap();
        assert_eq!(m, "small");
        assert_eq!(b, br#"{"model":"small-v1","x":[1,{"model":"inner"}]}"#);
        let (m, b) = fail_open_rewrite(br#"{ "model" : "big" }"#, &models, "small").unwrap();
        assert_eq!((m, b.as_slice()), ("big", br#"{ "model" : "big-v2" }"#.as_slice()));
        assert!(fail_open_rewrite(b"{not json", &models, "small").is_none());
        assert!(fail_open_rewrite(br#"{"model":1}"#, &models, "small").is_none());
        // Found by fuzz/ (fail_open target): a top-level array is not rewritten as if it were an object.
        assert!(fail_open_rewrite(br#"["auto"]"#, &models, "small").is_none());
        assert!(fail_open_rewrite(br#" ["big",1]"#, &models, "small").is_none());
    }

    #[test]
    fn grpc_service_encoding() {
        assert_eq!(grpc_service("ab"), vec![0x0a, 4, 0x0a, 2, b'a', b'b']);
    }
}
