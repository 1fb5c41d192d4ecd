use llmsoup_config::{DEFAULT_CONFIG, load_str_with_env};

use super::*;
use crate::render as render_static;

const CONFIG: &str = "
providers:
  - {name: a, base_url: 'http://127.0.0.1:8001/v1'}
  - {name: b, base_url: 'https://api.example.com/openai/v1', credentials: {env: B_KEY}}
models:
  - {name: m1, provider: a, fallbacks: [m2]}
  - {name: m2, provider: b, model_id: two-v1}
auth:
  tokens:
    - {name: t1, sha256: '1111111111111111111111111111111111111111111111111111111111111111'}
";

/// CONFIG with one more provider (its own credential file), model and token.
fn grown() -> String {
    CONFIG
        .replace(
            "models:\n",
            "  - {name: c, base_url: 'http://127.0.0.1:8003/v1', credentials: {file: /run/c}}\nmodels:\n  - {name: newbie, provider: c, model_id: new-v9}\n",
        )
        .replace(
            "tokens:\n",
            "tokens:\n    - {name: t2, sha256: '2222222222222222222222222222222222222222222222222222222222222222'}\n",
        )
}

fn config(text: &str) -> Config {
    load_str_with_env(text, &|_| None).unwrap()
}

fn bundle(text: &str, mode: AttachMode) -> Bundle {
    let opts = RenderOptions {
        mode: Some(mode),
        wasm_path: Some("/opt/llmsoup_filter.wasm".into()),
    };
    render(&config(text), &opts, "/var/run/llmsoup/xds").unwrap()
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llmsoup-xds-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn the_bootstrap_holds_no_model_provider_or_token() {
    for mode in [AttachMode::ExtProc, AttachMode::Wasm] {
        let small = bundle(CONFIG, mode);
        let big = bundle(&grown(), mode);
        // What a reload may change is all in the files: the bootstrap Envoy started with stays.
        assert_eq!(small.bootstrap_yaml().unwrap(), big.bootstrap_yaml().unwrap());
        let c = changes(&small, &big);
        assert!(c.bootstrap.is_empty(), "{c:?}");
        assert!(c.resources.contains(&"route added: model_newbie".to_string()), "{c:?}");
        assert!(c.resources.contains(&"cluster added: provider_c".to_string()), "{c:?}");
        assert!(
            c.resources.contains(&"secret added: provider_c_credential".to_string()),
            "{c:?}"
        );
        let filter = match mode {
            AttachMode::ExtProc => "filter config changed: llmsoup.client_auth (client tokens)",
            AttachMode::Wasm => "filter config changed: envoy.filters.http.wasm (wasm filter config: tokens, models)",
        };
        assert!(c.resources.iter().any(|l| l == filter), "{c:?}");
        assert!(changes(&big, &big).is_empty());

        let b = yaml(&small.bootstrap_yaml().unwrap());
        assert_eq!(b["node"]["id"].as_str(), Some("llmsoup-gateway"));
        let cds = &b["dynamic_resources"]["cds_config"]["path_config_source"];
        assert_eq!(cds["path"].as_str(), Some("/var/run/llmsoup/xds/clusters.yaml"));
        assert_eq!(cds["watched_directory"]["path"].as_str(), Some("/var/run/llmsoup/xds"));
        let clusters: Vec<&str> = b["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(name_of)
            .collect();
        assert_eq!(clusters, [SIDECAR_CLUSTER]);
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert!(hcm.get("route_config").is_none());
        assert_eq!(hcm["rds"]["route_config_name"].as_str(), Some("llmsoup"));
        assert_eq!(
            hcm["rds"]["config_source"]["path_config_source"]["path"].as_str(),
            Some("/var/run/llmsoup/xds/routes.yaml")
        );
        let discovered: Vec<(&str, &str)> = hcm["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f.get("config_discovery").is_some())
            .map(|f| {
                assert!(f.get("typed_config").is_none());
                (name_of(f), f["config_discovery"]["type_urls"][0].as_str().unwrap())
            })
            .collect();
        let lua = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua";
        match mode {
            AttachMode::ExtProc => {
                assert_eq!(discovered, [(CLIENT_AUTH_FILTER, lua), (FAIL_OPEN_FILTER, lua)])
            }
            AttachMode::Wasm => assert_eq!(
                discovered,
                [(
                    WASM_FILTER,
                    "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
                )]
            ),
        }
    }
}

#[test]
fn the_files_are_the_static_rendering_split() {
    for mode in [AttachMode::ExtProc, AttachMode::Wasm] {
        let opts = RenderOptions {
            mode: Some(mode),
            wasm_path: Some("/opt/llmsoup_filter.wasm".into()),
        };
        let c = config(DEFAULT_CONFIG);
        let whole = yaml(&render_static(&c, &opts).unwrap());
        let split = render(&c, &opts, "xds").unwrap();
        let files: BTreeMap<String, Value> = split
            .files()
            .unwrap()
            .into_iter()
            .map(|(n, text)| (n, yaml(&text)["resources"].clone()))
            .collect();
        let hcm = &whole["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];

        let mut routes = files[ROUTES_FILE][0].clone();
        assert_eq!(routes["@type"].as_str(), Some(ROUTE_CONFIGURATION_TYPE));
        routes.as_object_mut().unwrap().remove("@type");
        assert_eq!(routes, hcm["route_config"]);

        let mut clusters = files[CLUSTERS_FILE].as_array().unwrap().clone();
        for cl in &mut clusters {
            assert_eq!(cl["@type"].as_str(), Some(CLUSTER_TYPE));
            cl.as_object_mut().unwrap().remove("@type");
        }
        let inline: Vec<Value> = whole["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] != SIDECAR_CLUSTER)
            .cloned()
            .collect();
        assert_eq!(clusters, inline);

        for f in hcm["http_filters"].as_array().unwrap() {
            let name = name_of(f);
            let file = filter_file(name);
            if DYNAMIC_FILTERS.iter().any(|(n, _)| *n == name) {
                let r = &files[&file][0];
                assert_eq!(r["@type"].as_str(), Some(EXTENSION_CONFIG_TYPE));
                assert_eq!(r["name"].as_str(), Some(name));
                assert_eq!(r["typed_config"], f["typed_config"], "{name}");
            } else {
                assert!(!files.contains_key(&file));
            }
        }
    }
}

#[test]
fn credentials_come_from_their_own_sds_file() {
    let b = bundle(&grown(), AttachMode::ExtProc);
    let files: BTreeMap<String, String> = b.files().unwrap().into_iter().collect();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "clusters.yaml",
            "filter-envoy.filters.http.lua.yaml",
            "filter-llmsoup.client_auth.yaml",
            "routes.yaml",
            "secret-provider_b_credential.yaml",
            "secret-provider_c_credential.yaml",
        ]
    );
    let secret = &yaml(&files["secret-provider_c_credential.yaml"])["resources"];
    assert_eq!(secret.as_array().unwrap().len(), 1, "one SDS resource per file");
    assert_eq!(secret[0]["@type"].as_str(), Some(SECRET_TYPE));
    assert_eq!(secret[0]["name"].as_str(), Some("provider_c_credential"));
    // Envoy reads the key; the file holds where it is.
    assert_eq!(
        secret[0]["generic_secret"]["secret"]["filename"].as_str(),
        Some("/run/c")
    );
    assert!(!files["clusters.yaml"].contains("__CA_BUNDLE__"));
    let clusters = yaml(&files["clusters.yaml"]);
    let mut sources = Vec::new();
    fn collect(v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(o) => {
                if o.get("@type").and_then(Value::as_str) == Some(GENERIC_CREDENTIAL_TYPE) {
                    let c = &o["credential"];
                    out.push((
                        c["name"].as_str().unwrap().to_string(),
                        c["sds_config"]["path_config_source"]["path"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                    ));
                }
                o.values().for_each(|c| collect(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| collect(c, out)),
            _ => {}
        }
    }
    collect(&clusters, &mut sources);
    sources.sort();
    sources.dedup();
    // The providers' own clusters and the chain's per-provider injector.
    assert_eq!(
        sources,
        [
            (
                "provider_b_credential".to_string(),
                "/var/run/llmsoup/xds/secret-provider_b_credential.yaml".to_string()
            ),
            (
                "provider_c_credential".to_string(),
                "/var/run/llmsoup/xds/secret-provider_c_credential.yaml".to_string()
            ),
        ]
    );
}

#[test]
fn without_tokens_the_auth_step_stays_and_lets_everything_through() {
    let none = CONFIG.split("auth:").next().unwrap().to_string();
    let b = bundle(&none, AttachMode::ExtProc);
    let files: BTreeMap<String, String> = b.files().unwrap().into_iter().collect();
    let lua = yaml(&files["filter-llmsoup.client_auth.yaml"]);
    let code = lua["resources"][0]["typed_config"]["default_source_code"]["inline_string"]
        .as_str()
        .unwrap();
    assert_eq!(code, crate::NO_CLIENT_AUTH_LUA);
    // Tokens turned on later change the filter's config, not the bootstrap.
    let with = bundle(CONFIG, AttachMode::ExtProc);
    assert_eq!(b.bootstrap_yaml().unwrap(), with.bootstrap_yaml().unwrap());
    // The static rendering keeps no auth step without tokens.
    let whole = render_static(&config(&none), &RenderOptions::default()).unwrap();
    assert!(!whole.contains(CLIENT_AUTH_FILTER));
}

#[test]
fn a_recorded_bootstrap_says_when_envoy_needs_a_restart() {
    let running = bundle(CONFIG, AttachMode::ExtProc).bootstrap_yaml().unwrap();
    assert!(
        restart_needed(&running, &bundle(&grown(), AttachMode::ExtProc))
            .unwrap()
            .is_empty()
    );
    let moved = bundle(
        &format!("{CONFIG}gateway: {{listen: '127.0.0.1:9999'}}\n"),
        AttachMode::ExtProc,
    );
    let restart = restart_needed(&running, &moved).unwrap();
    assert_eq!(restart.len(), 1, "{restart:?}");
    assert!(restart[0].starts_with("listener settings changed"), "{restart:?}");
}

#[test]
fn bootstrap_changes_are_named() {
    let b = bundle(CONFIG, AttachMode::ExtProc);
    let moved = bundle(
        &format!("{CONFIG}gateway: {{listen: '127.0.0.1:9999'}}\n"),
        AttachMode::ExtProc,
    );
    let c = changes(&b, &moved);
    assert!(c.resources.is_empty(), "{c:?}");
    assert_eq!(c.bootstrap.len(), 1, "{c:?}");
    assert!(c.bootstrap[0].starts_with("listener settings changed"), "{c:?}");

    let closed = bundle(
        &format!("{CONFIG}gateway: {{failure_mode: closed}}\n"),
        AttachMode::ExtProc,
    );
    let c = changes(&b, &closed);
    assert!(
        c.bootstrap.iter().any(|l| l.starts_with("HTTP filter chain changed")),
        "the fail-open step is gone: {c:?}"
    );

    let token = bundle(
        &format!("{CONFIG}server: {{grpc_token: s3cret-s3cret-s3cret}}\n"),
        AttachMode::ExtProc,
    );
    let c = changes(&b, &token);
    assert!(
        c.bootstrap
            .contains(&"HTTP filter changed: envoy.filters.http.ext_proc".to_string()),
        "{c:?}"
    );
}

#[test]
fn writes_are_atomic_renames_of_changed_files_only() {
    let dir = tempdir("write");
    let small = bundle(CONFIG, AttachMode::ExtProc);
    let big = bundle(&grown(), AttachMode::ExtProc);
    assert!(small.write(&dir, None).unwrap());
    assert!(!small.write(&dir, None).unwrap(), "nothing changed, nothing written");
    let inode = |f: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir.join(f)).unwrap());
    let routes_before = inode(ROUTES_FILE);
    let lua_before = inode("filter-envoy.filters.http.lua.yaml");
    assert!(big.write(&dir, Some(&small)).unwrap());
    assert_ne!(inode(ROUTES_FILE), routes_before, "replaced by a rename");
    // The fail-open table gained newbie; the client-auth step gained a token.
    assert_ne!(inode("filter-envoy.filters.http.lua.yaml"), lua_before);

    // Shrinking: the routes go at once, the dropped clusters only when written without the
    // previous bundle; the dropped provider's secret file goes then too.
    assert!(small.drops_clusters_of(&big) && !big.drops_clusters_of(&small));
    small.write(&dir, Some(&big)).unwrap();
    let clusters = std::fs::read_to_string(dir.join(CLUSTERS_FILE)).unwrap();
    assert!(clusters.contains("provider_c"));
    assert!(
        !std::fs::read_to_string(dir.join(ROUTES_FILE))
            .unwrap()
            .contains("model_newbie")
    );
    assert!(dir.join("secret-provider_c_credential.yaml").exists());
    small.write(&dir, None).unwrap();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut want: Vec<String> = small.files().unwrap().into_iter().map(|(n, _)| n).collect();
    want.sort();
    assert_eq!(on_disk, want, "no temporary files left, no stale secret");
    for (name, text) in small.files().unwrap() {
        assert_eq!(std::fs::read_to_string(dir.join(&name)).unwrap(), text, "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_manifest_round_trips() {
    let dir = tempdir("manifest");
    assert!(read_manifest(&dir).unwrap().is_none());
    for (i, opts) in [
        RenderOptions::default(),
        RenderOptions {
            mode: Some(AttachMode::Wasm),
            wasm_path: Some("/opt/f.wasm".into()),
        },
        RenderOptions {
            mode: Some(AttachMode::ExtProc),
            wasm_path: None,
        },
    ]
    .into_iter()
    .enumerate()
    {
        write_manifest(&dir, &opts, &format!("bootstrap {i}")).unwrap();
        let back = read_manifest(&dir).unwrap().unwrap();
        assert_eq!((back.opts.mode, back.opts.wasm_path), (opts.mode, opts.wasm_path));
        assert_eq!(back.bootstrap, Some(format!("bootstrap {i}")));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resource_names_make_distinct_safe_file_names() {
    assert_eq!(file_safe("provider_a-1.x"), "provider_a-1.x");
    assert_eq!(file_safe("a/b"), "a~2fb");
    assert_ne!(file_safe("a/b"), file_safe("a_b"));
    assert_eq!(file_safe("../x"), "..~2fx");
    assert_eq!(file_safe("é ~"), "~c3~a9~20~7e");
}
