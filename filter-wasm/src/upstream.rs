//! The upstream descriptor of the filter's gRPC calls to the sidecar.

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

    #[test]
    fn grpc_service_encoding() {
        assert_eq!(grpc_service("ab"), vec![0x0a, 4, 0x0a, 2, b'a', b'b']);
    }
}
