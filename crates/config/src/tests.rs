use super::*;

const MINIMAL: &str = "
providers:
  - name: local
    base_url: http://127.0.0.1:8000/v1
models:
  - name: small
    provider: local
";

fn err(text: &str) -> String {
    load_str_with_env(text, &|_| None).unwrap_err().to_string()
}

#[test]
fn embedded_default_config_is_valid() {
    let c = load_str_with_env(DEFAULT_CONFIG, &|_| None).unwrap();
    assert_eq!(c.default_model().name, "fast");
    assert!(!c.decisions.is_empty());
}

#[test]
fn minimal_config_gets_defaults() {
    let c = load_str_with_env(MINIMAL, &|_| None).unwrap();
    assert_eq!(c.routing.auto_models, ["auto", "MoM"]);
    assert_eq!(c.server.grpc_listen, "127.0.0.1:50051");
    assert_eq!(c.default_model().name, "small");
    assert_eq!(c.models[0].provider_model_id(), "small");
    let ep = c.providers[0].endpoint().unwrap();
    assert_eq!(
        (ep.tls, ep.host.as_str(), ep.port, ep.path_prefix.as_str()),
        (false, "127.0.0.1", 8000, "/v1")
    );
}

#[test]
fn env_substitution_and_missing_variable() {
    let text = MINIMAL.replace("8000", "${PORT}");
    let c = load_str_with_env(&text, &|n| (n == "PORT").then(|| "9999".into())).unwrap();
    assert_eq!(c.providers[0].endpoint().unwrap().port, 9999);
    let e = err(&text);
    assert!(
        e.contains("providers[0].base_url") && e.contains("PORT") && e.contains("line 4"),
        "{e}"
    );
}

#[test]
fn unknown_keys_name_the_path_and_line() {
    let e = err(&MINIMAL.replace("provider: local", "provider: local\n    pricee: 3"));
    assert!(
        e.contains("models[0]") && e.contains("pricee") && e.contains("line 8"),
        "{e}"
    );
}

#[test]
fn type_errors_name_the_path() {
    let e = err(&format!("{MINIMAL}routing:\n  strategy: fastest\n"));
    assert!(e.contains("routing.strategy") && e.contains("line 9"), "{e}");
}

#[test]
fn cross_references_are_checked() {
    let e = err(&format!(
        "{MINIMAL}decisions:\n  - name: d\n    modelRefs: [{{model: nope}}]\n"
    ));
    assert!(
        e.contains("decisions[0].modelRefs[0].model") && e.contains("nope"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}decisions:\n  - name: d\n    rules: {{operator: AND, conditions: [{{type: keyword, name: missing}}]}}\n    modelRefs: [{{model: small}}]\n"
    ));
    assert!(
        e.contains("decisions[0].rules.conditions[0].name") && e.contains("missing"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}routing:\n  default_model: ghost\n"));
    assert!(e.contains("routing.default_model"), "{e}");
    let e = err(&MINIMAL.replace("provider: local", "provider: other"));
    assert!(e.contains("models[0].provider"), "{e}");
}

#[test]
fn not_takes_one_child_and_languages_are_iso() {
    let e = err(&format!(
        "{MINIMAL}signals:\n  language: [{{name: fr}}]\ndecisions:\n  - name: d\n    rules: {{operator: NOT, conditions: []}}\n    modelRefs: [{{model: small}}]\n"
    ));
    assert!(e.contains("NOT takes exactly one"), "{e}");
    let e = err(&format!("{MINIMAL}signals:\n  language: [{{name: french}}]\n"));
    assert!(e.contains("signals.language[0].name") && e.contains("ISO-639-1"), "{e}");
}

#[test]
fn token_counts_accept_suffixes() {
    let c = load_str_with_env(
        &format!("{MINIMAL}signals:\n  context:\n    - {{name: long, min_tokens: 8K, max_tokens: \"1.5M\"}}\n"),
        &|_| None,
    )
    .unwrap();
    assert_eq!(c.signals.context[0].min_tokens.unwrap().0, 8_000);
    assert_eq!(c.signals.context[0].max_tokens.unwrap().0, 1_500_000);
}

#[test]
fn bad_token_hash_and_base_url() {
    let e = err(&format!("{MINIMAL}auth:\n  tokens: [{{name: a, sha256: xyz}}]\n"));
    assert!(e.contains("auth.tokens[0].sha256"), "{e}");
    let e = err(&MINIMAL.replace("http://127.0.0.1:8000/v1", "ftp://x"));
    assert!(e.contains("providers[0].base_url") && e.contains("ftp"), "{e}");
}

#[test]
fn syntax_errors_report_the_line() {
    let e = err("providers:\n  - name: [unclosed\n");
    assert!(e.contains("invalid YAML") && e.contains("line"), "{e}");
}

#[test]
fn schema_is_published() {
    let s = json_schema();
    assert!(s["properties"]["providers"].is_object());
    assert!(s.to_string().contains("modelRefs"));
}

#[test]
fn published_schema_file_is_current() {
    if std::env::var_os("LLMSOUP_MODEL_DIR").is_some() {
        // The embedding model default follows that variable; the published file is generated without it.
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/llmsoup.schema.json");
    let expected = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    if actual != expected {
        if std::env::var_os("LLMSOUP_BLESS").is_some() {
            std::fs::write(path, expected).unwrap();
        } else {
            panic!(
                "config/llmsoup.schema.json is stale; run `LLMSOUP_BLESS=1 cargo test -p llmsoup-config published_schema`"
            );
        }
    }
}

#[test]
fn sidecar_health_check_defaults_and_bounds() {
    let c = load_str_with_env(MINIMAL, &|_| None).unwrap();
    let hc = &c.gateway.sidecar_health_check;
    assert!(hc.enabled);
    assert_eq!(
        (
            hc.interval_ms,
            hc.timeout_ms,
            hc.unhealthy_threshold,
            hc.healthy_threshold
        ),
        (1000, 500, 3, 1)
    );
    let e = err(&format!(
        "{MINIMAL}gateway:\n  sidecar_health_check: {{interval_ms: 0}}\n"
    ));
    assert!(e.contains("gateway.sidecar_health_check.interval_ms"), "{e}");
    let e = err(&format!(
        "{MINIMAL}gateway:\n  sidecar_health_check: {{unhealthy_threshold: 0}}\n"
    ));
    assert!(e.contains("unhealthy_threshold"), "{e}");
    let s = json_schema().to_string();
    assert!(s.contains("sidecar_health_check") && s.contains("on_signal_error"));
}

#[test]
fn on_signal_error_parses_and_defaults_by_plugin() {
    let text = format!(
        "{MINIMAL}signals:
  keywords: [{{name: k, keywords: [x]}}]
decisions:
  - {{name: refuse, rules: {{type: keyword, name: k}}, modelRefs: [{{model: small}}],
     plugins: [{{type: fast_response, configuration: {{message: no, status: 403}}}}]}}
  - {{name: route, rules: {{type: keyword, name: k}}, modelRefs: [{{model: small}}]}}
  - {{name: lenient, rules: {{type: keyword, name: k}}, modelRefs: [{{model: small}}], on_signal_error: skip,
     plugins: [{{type: fast_response, configuration: {{message: no, status: 403}}}}]}}
"
    );
    let c = load_str_with_env(&text, &|_| None).unwrap();
    let got: Vec<OnSignalError> = c.decisions.iter().map(|d| d.on_signal_error()).collect();
    assert_eq!(got, [OnSignalError::Block, OnSignalError::Skip, OnSignalError::Skip]);
    let e = err(&text.replace("on_signal_error: skip", "on_signal_error: maybe"));
    assert!(e.contains("on_signal_error") || e.contains("maybe"), "{e}");
}

#[test]
fn bad_keyword_patterns_are_refused_at_load() {
    let text =
        format!("{MINIMAL}signals:\n  keywords:\n    - {{name: k, method: regex, keywords: ['ok', '(unclosed']}}\n");
    let e = err(&text);
    assert!(
        e.contains("signals.keywords[0].keywords[1]") && e.contains("bad pattern `(unclosed`"),
        "{e}"
    );
    // Literal keywords are escaped, so the same text is fine there.
    let literal = text.replace("method: regex, ", "");
    assert!(load_str_with_env(&literal, &|_| None).is_ok());
}

#[test]
fn budgets_name_configured_tokens_groups_and_models_and_need_a_store() {
    let h = "0000000000000000000000000000000000000000000000000000000000000001";
    let auth = format!("auth:\n  tokens:\n    - {{name: alice, group: team, sha256: '{h}'}}\n");
    let store = "  store: {redis_url: 'redis://127.0.0.1:6379'}\n";
    let ok = load_str_with_env(
        &format!(
            "{MINIMAL}{auth}budgets:\n{store}  tokens: {{alice: {{requests_per_minute: 5, tokens_per_minute: 1000}}}}\n  groups: {{team: {{usd_per_day: 2.5}}}}\n"
        ),
        &|_| None,
    )
    .unwrap();
    assert!(ok.budgets.enabled());
    assert!(ok.budgets.deny_when_unreachable(), "spend caps fail closed by default");
    assert_eq!(ok.auth.tokens[0].group.as_deref(), Some("team"));

    for (budgets, key) in [
        (
            format!("{store}  tokens: {{bob: {{requests_per_minute: 1}}}}\n"),
            "budgets.tokens.bob",
        ),
        (
            format!("{store}  groups: {{other: {{requests_per_minute: 1}}}}\n"),
            "budgets.groups.other",
        ),
        (format!("{store}  tokens: {{alice: {{}}}}\n"), "budgets.tokens.alice"),
        (
            "  tokens: {alice: {requests_per_minute: 1}}\n".to_string(),
            "budgets.store",
        ),
        (
            format!("{store}  tokens: {{alice: {{usd_per_day: -1}}}}\n"),
            "budgets.tokens.alice.usd_per_day",
        ),
        (
            format!("{store}  unavailable_status: 500\n"),
            "budgets.unavailable_status",
        ),
        (
            "  store: {redis_url: 'http://x'}\n  tokens: {alice: {requests_per_minute: 1}}\n".to_string(),
            "budgets.store.redis_url",
        ),
    ] {
        let e = err(&format!("{MINIMAL}{auth}budgets:\n{budgets}"));
        assert!(e.contains(key), "{key}: {e}");
    }
    // Token names are the tenant (a header, a label, a key): printable and unique.
    let e = err(&format!(
        "{MINIMAL}auth:\n  tokens:\n    - {{name: a, sha256: '{h}'}}\n    - {{name: a, sha256: '{h}'}}\n"
    ));
    assert!(e.contains("auth.tokens[1].name") && e.contains("duplicate"), "{e}");
}

#[test]
fn difficulty_rules_parse_and_check_their_threshold() {
    let rules = "signals:\n  difficulty:\n    - {name: hard}\n    - {name: very_hard, threshold: 0.8}\n\
                 decisions:\n  - {name: d, rules: {type: difficulty, name: very_hard}, modelRefs: [{model: small}]}\n";
    let c = load_str_with_env(&format!("{MINIMAL}{rules}"), &|_| None).unwrap();
    let d = &c.signals.difficulty;
    assert_eq!((d[0].threshold, d[1].threshold), (0.5, 0.8));
    assert_eq!(SignalKind::Difficulty.as_str(), "difficulty");
    let e = err(&format!(
        "{MINIMAL}signals:\n  difficulty: [{{name: x, threshold: 1.5}}]\n"
    ));
    assert!(e.contains("signals.difficulty[0].threshold"), "{e}");
    let e = err(&format!(
        "{MINIMAL}decisions:\n  - {{name: d, rules: {{type: difficulty, name: nope}}, modelRefs: [{{model: small}}]}}\n"
    ));
    assert!(e.contains("no difficulty signal named `nope`"), "{e}");
}

#[test]
fn the_sidecar_listens_on_tcp_or_a_unix_socket() {
    let with = |extra: &str| load_str_with_env(&format!("{MINIMAL}{extra}"), &|_| None);
    let c = with("").unwrap();
    assert_eq!(
        c.server.grpc_address().unwrap(),
        GrpcAddress::Tcp("127.0.0.1:50051".into())
    );
    assert_eq!(
        c.gateway.sidecar(&c.server).unwrap(),
        GrpcAddress::Tcp("127.0.0.1:50051".into())
    );
    for spelling in ["unix:/run/llmsoup/grpc.sock", "unix:///run/llmsoup/grpc.sock"] {
        let c = with(&format!("server: {{grpc_listen: '{spelling}'}}\n")).unwrap();
        let unix = GrpcAddress::Unix("/run/llmsoup/grpc.sock".into());
        assert_eq!(c.server.grpc_address().unwrap(), unix);
        // Envoy dials what the sidecar binds unless told otherwise.
        assert_eq!(c.gateway.sidecar(&c.server).unwrap(), unix);
        assert_eq!(unix.to_string(), "unix:/run/llmsoup/grpc.sock");
    }
    let c = with("gateway: {sidecar_address: 'unix:/shared/grpc.sock'}\n").unwrap();
    assert_eq!(
        c.gateway.sidecar(&c.server).unwrap(),
        GrpcAddress::Unix("/shared/grpc.sock".into())
    );

    // Relative paths would resolve against two working directories; the error names key and line.
    let e = err(&format!("{MINIMAL}server:\n  grpc_listen: 'unix:grpc.sock'\n"));
    assert!(
        e.contains("server.grpc_listen") && e.contains("absolute") && e.contains("line 9"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}gateway:\n  sidecar_address: 'unix:/run/'\n"));
    assert!(e.contains("gateway.sidecar_address") && e.contains("absolute"), "{e}");
    let long = format!("unix:/{}", "s".repeat(107));
    let e = err(&format!("{MINIMAL}server: {{grpc_listen: '{long}'}}\n"));
    assert!(
        e.contains("server.grpc_listen") && e.contains("at most 107 bytes"),
        "{e}"
    );
}

#[test]
fn the_async_runtime_gets_a_quarter_of_the_cpus_unless_told() {
    let with = |extra: &str| load_str_with_env(&format!("{MINIMAL}{extra}"), &|_| None);
    let c = with("").unwrap();
    assert_eq!(c.server.worker_threads, None);
    // A 2-core pod runs one thread (model inference has its own), a 16-core node four.
    assert_eq!(c.server.worker_threads_for(1), 1);
    assert_eq!(c.server.worker_threads_for(2), 1);
    assert_eq!(c.server.worker_threads_for(16), 4);
    let c = with("server: {worker_threads: 3}\n").unwrap();
    assert_eq!(c.server.worker_threads_for(2), 3);
    let e = err(&format!("{MINIMAL}server:\n  worker_threads: 0\n"));
    assert!(
        e.contains("server.worker_threads") && e.contains("at least 1") && e.contains("line 9"),
        "{e}"
    );
}
