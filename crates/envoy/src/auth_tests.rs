//! The rendered bootstrap's auth pieces: the client-auth Lua step, credential stripping on
//! provider routes and the gRPC secret on every call to the sidecar.

use super::*;
use llmsoup_config::load_str_with_env;

const BASE: &str = "
server:
  grpc_token: grpc-secret-0123456789
providers:
  - {name: a, base_url: 'http://127.0.0.1:9/v1'}
  - {name: b, base_url: 'http://127.0.0.1:10/v1', credentials: {env: B_KEY}}
models:
  - {name: small, provider: a}
  - {name: big, provider: b}
";

fn hcm(text: &str, mode: AttachMode) -> serde_yaml::Value {
    let c = load_str_with_env(text, &|_| None).unwrap();
    let opts = RenderOptions {
        mode: Some(mode),
        wasm_path: Some("/f.wasm".into()),
    };
    let y: serde_yaml::Value = serde_yaml::from_str(&render(&c, &opts).unwrap()).unwrap();
    y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"].clone()
}

fn with_tokens(extra: &str) -> String {
    format!(
        "{BASE}{extra}auth:\n  tokens:\n    - {{name: t, sha256: {}}}\n",
        llmsoup_contract::auth::hash_token("client-token")
    )
}

fn filter_names(hcm: &serde_yaml::Value) -> Vec<String> {
    hcm["http_filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn client_auth_runs_before_ext_proc_with_hashes_only() {
    let text = with_tokens("gateway: {failure_mode: open}\n");
    let h = hcm(&text, AttachMode::ExtProc);
    let names = filter_names(&h);
    let auth = names.iter().position(|n| n == CLIENT_AUTH_FILTER).expect("auth filter");
    let ext = names.iter().position(|n| n == "envoy.filters.http.ext_proc").unwrap();
    assert!(auth < ext, "{names:?}");
    let lua = h["http_filters"][auth]["typed_config"]["default_source_code"]["inline_string"]
        .as_str()
        .unwrap();
    assert!(lua.contains(&llmsoup_contract::auth::hash_token("client-token")));
    assert!(!lua.contains("client-token\""), "the token itself never appears");
    assert!(!lua.contains("__"), "every placeholder filled");
    // Refusals are answered by routes (first in the table) with the sidecar's bytes, and with
    // every filter that could reach the sidecar or rewrite the request off.
    let routes = h["route_config"]["virtual_hosts"][0]["routes"].as_sequence().unwrap();
    for (i, e) in [AuthError::Missing, AuthError::Wrong].into_iter().enumerate() {
        let body = Reply::from(ApiError::unauthorized(e.message())).body;
        let r = &routes[i];
        assert_eq!(r["direct_response"]["status"].as_u64(), Some(401));
        assert_eq!(
            r["direct_response"]["body"]["inline_string"].as_str(),
            Some(std::str::from_utf8(&body).unwrap())
        );
        assert_eq!(r["match"]["headers"][0]["name"].as_str(), Some(AUTH_VERDICT_HEADER));
        let off = &r["typed_per_filter_config"];
        assert_eq!(off["envoy.filters.http.ext_proc"]["disabled"].as_bool(), Some(true));
        assert_eq!(off["envoy.filters.http.lua"]["disabled"].as_bool(), Some(true));
    }
    // The verdict header is one clients cannot send.
    assert!(AUTH_VERDICT_HEADER.starts_with("x-llmsoup-"));

    // No tokens: no auth step.
    let h = hcm(BASE, AttachMode::ExtProc);
    assert!(!filter_names(&h).iter().any(|n| n == CLIENT_AUTH_FILTER));
    // Wasm mode authenticates in the filter.
    let h = hcm(&text, AttachMode::Wasm);
    assert!(!filter_names(&h).iter().any(|n| n == CLIENT_AUTH_FILTER));
    let routes = h["route_config"]["virtual_hosts"][0]["routes"].as_sequence().unwrap();
    assert!(routes.iter().all(|r| {
        r.get("direct_response")
            .is_none_or(|d| d["status"].as_u64() != Some(401))
    }));
}

#[test]
fn provider_routes_strip_client_credentials_when_tokens_are_set() {
    for mode in [AttachMode::ExtProc, AttachMode::Wasm] {
        let h = hcm(&with_tokens(""), mode);
        let routes = h["route_config"]["virtual_hosts"][0]["routes"].as_sequence().unwrap();
        let provider_routes: Vec<_> = routes.iter().filter(|r| r.get("route").is_some()).collect();
        assert_eq!(
            provider_routes.len(),
            2,
            "one per model: fail-open routes through them too"
        );
        for r in provider_routes {
            let removed: Vec<&str> = r["request_headers_to_remove"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert!(
                removed.contains(&"authorization") && removed.contains(&"x-api-key"),
                "{mode:?} {r:?}"
            );
        }
        // Without tokens the client's own provider key may be meant for the provider.
        let h = hcm(BASE, mode);
        let routes = h["route_config"]["virtual_hosts"][0]["routes"].as_sequence().unwrap();
        assert!(
            routes
                .iter()
                .all(|r| !format!("{:?}", r["request_headers_to_remove"]).contains("authorization"))
        );
    }
}

#[test]
fn every_sidecar_call_carries_the_grpc_token() {
    let text = format!("{BASE}gateway: {{async_response_accounting: true}}\n");
    let h = hcm(&text, AttachMode::ExtProc);
    let ext_procs: Vec<_> = h["http_filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|f| {
            f["typed_config"]["@type"]
                .as_str()
                .unwrap()
                .ends_with("ExternalProcessor")
        })
        .collect();
    assert_eq!(ext_procs.len(), 2, "routing and accounting");
    for f in ext_procs {
        let md = &f["typed_config"]["grpc_service"]["initial_metadata"][0];
        assert_eq!(md["key"].as_str(), Some("authorization"));
        assert_eq!(md["value"].as_str(), Some("Bearer grpc-secret-0123456789"));
    }

    let h = hcm(&text, AttachMode::Wasm);
    let wasm = h["http_filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|f| f["name"].as_str() == Some("envoy.filters.http.wasm"))
        .unwrap();
    let plugin: Value = serde_json::from_str(
        wasm["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(plugin["grpc_token"].as_str(), Some("grpc-secret-0123456789"));

    // Without a token nothing is sent.
    let h = hcm(
        BASE.replace("  grpc_token: grpc-secret-0123456789\n", "").as_str(),
        AttachMode::ExtProc,
    );
    assert!(
        h["http_filters"][1]["typed_config"]["grpc_service"]
            .get("initial_metadata")
            .is_none()
    );
}

#[test]
fn grpc_token_must_be_a_real_secret() {
    for bad in [
        "short",
        "has spaces in the middle",
        "percent%REQ(x)%-0123456",
        &"x".repeat(65),
    ] {
        let text = BASE.replace("grpc-secret-0123456789", &format!("'{bad}'"));
        let e = load_str_with_env(&text, &|_| None).unwrap_err().to_string();
        assert!(e.contains("server.grpc_token"), "{e}");
    }
    // Empty (an unset `${VAR:-}`) means no token.
    let text = BASE.replace("grpc-secret-0123456789", "''");
    assert!(load_str_with_env(&text, &|_| None).unwrap().server.grpc_token.is_none());
}
