//! The upstream descriptor of the wasm filter's gRPC calls to the sidecar (cluster and the
//! sidecar's gRPC token), built once when the plugin config is parsed.

/// Envoy parses the `upstream` argument of `dispatch_grpc_call` as a serialized `GrpcService`
/// first and only then as a cluster name; passing the proto avoids that ambiguity, and carries
/// the sidecar's gRPC secret as `initial_metadata` (Envoy's gRPC client adds it to every call).
pub fn grpc_service(cluster: &str, token: Option<&str>) -> Vec<u8> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct EnvoyGrpc {
        #[prost(string, tag = "1")]
        cluster_name: String,
    }
    /// `envoy.config.core.v3.HeaderValue`.
    #[derive(Clone, PartialEq, prost::Message)]
    struct HeaderValue {
        #[prost(string, tag = "1")]
        key: String,
        #[prost(string, tag = "2")]
        value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct GrpcService {
        #[prost(message, optional, tag = "1")]
        envoy_grpc: Option<EnvoyGrpc>,
        #[prost(message, repeated, tag = "5")]
        initial_metadata: Vec<HeaderValue>,
    }
    prost::Message::encode_to_vec(&GrpcService {
        envoy_grpc: Some(EnvoyGrpc {
            cluster_name: cluster.to_string(),
        }),
        initial_metadata: token
            .map(|t| HeaderValue {
                key: crate::auth::GRPC_TOKEN_METADATA.to_string(),
                value: crate::auth::grpc_metadata_value(t),
            })
            .into_iter()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_service_encoding() {
        assert_eq!(grpc_service("ab", None), vec![0x0a, 4, 0x0a, 2, b'a', b'b']);
        let with = grpc_service("ab", Some("t"));
        // Field 5 (initial_metadata): HeaderValue{key: "authorization", value: "Bearer t"}.
        let mut want = vec![0x0a, 4, 0x0a, 2, b'a', b'b', 0x2a, 25, 0x0a, 13];
        want.extend_from_slice(b"authorization");
        want.extend_from_slice(&[0x12, 8]);
        want.extend_from_slice(b"Bearer t");
        assert_eq!(with, want);
    }
}
