//! vLLM Semantic Router configs route like their native equivalents: each vSR shape is loaded by
//! the config crate and run through the engine next to `native.yaml`. (Moved from the config
//! crate's `vsr/tests.rs`, which cannot use the engine; a unit test module rather than an
//! integration test so the suite links one binary fewer.)

use llmsoup_config::{Loaded, load_detailed};
use llmsoup_contract::outcome::Outcome;

use super::{Engine, Request};

const NATIVE: &str = include_str!("../../../../config/examples/vsr/native.yaml");
const FLAT: &str = include_str!("../../../../config/examples/vsr/flat.yaml");
const USER: &str = include_str!("../../../../config/examples/vsr/user.yaml");
const CANONICAL: &str = include_str!("../../../../config/examples/vsr/canonical.yaml");
const CATEGORIES: &str = include_str!("../../../../config/examples/vsr/categories.yaml");

/// The fixtures need no environment: `${OPENAI_API_KEY}` credentials become env references.
fn load(text: &str) -> Loaded {
    load_detailed(text, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// Routes `prompt` and returns everything a client or upstream would see.
async fn route(e: &Engine, model: &str, prompt: &str) -> String {
    let body =
        serde_json::to_vec(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": prompt}]}))
            .unwrap();
    let request = Request {
        body: &body,
        ..Request::default()
    };
    match e.handle(request).await.0 {
        Outcome::Forward(f) => format!(
            "{} via {:?}; headers {:?}; body {}",
            f.summary.model,
            f.summary.decision,
            f.set_headers,
            f.body.map(|b| String::from_utf8(b).unwrap()).unwrap_or_default()
        ),
        Outcome::Reply(r) => format!("reply {}: {}", r.status, String::from_utf8_lossy(&r.body)),
    }
}

/// Model signals are pointed at a missing model so they never match: the parity prompts rely on
/// keyword, context and language signals, which need no model and run fast.
fn engine(text: &str) -> Engine {
    let mut config = load(text).config;
    config.embedding.model = "/nonexistent/llmsoup-test-model".into();
    // These tests compare how the shapes route on the non-model signals; with the model absent,
    // blocking decisions would (rightly) refuse everything under their default
    // `on_signal_error: block`.
    for d in &mut config.decisions {
        d.on_signal_error = Some(llmsoup_config::OnSignalError::Skip);
    }
    Engine::new(config).unwrap()
}

fn long_prompt() -> String {
    "please summarise this quarterly report paragraph for the board meeting. ".repeat(600)
}

#[tokio::test]
async fn every_shape_routes_like_its_native_equivalent() {
    let long = long_prompt();
    let prompts: Vec<(&str, &str, &str)> = vec![
        ("auto", "my python script crashes with a stack trace", "qwen-coder"),
        ("auto", "urgent: the rust build is broken, fix it asap", "gpt-4o-mini"),
        ("MoM", "Can you prove this theorem about prime numbers?", "deepseek-r1"),
        (
            "auto",
            "Pouvez-vous m'aider à écrire une lettre de motivation pour un nouvel emploi ?",
            "qwen3-8b",
        ),
        (
            "auto",
            "Können Sie mir bitte helfen, einen Brief an meinen Vermieter zu schreiben?",
            "qwen3-8b",
        ),
        ("auto", "here is my api key, store it somewhere safe", "qwen3-8b"),
        ("auto", &long, "gpt-4.1"),
        ("auto", "what is the best price and discount today", "gpt-4o-mini"),
        ("auto", "what is the price of a python course", "qwen-coder"),
        ("auto", "hello there, how are you", "qwen3-8b"),
        ("gpt-4.1", "my python script crashes", "gpt-4.1"),
    ];
    let native = engine(NATIVE);
    let shapes = [
        ("flat", engine(FLAT)),
        ("user", engine(USER)),
        ("canonical", engine(CANONICAL)),
    ];
    for (model, prompt, expected) in &prompts {
        let want = route(&native, model, prompt).await;
        assert!(
            want.starts_with(&format!("{expected} ")),
            "native: {prompt:.60} → {want:.200}"
        );
        for (name, e) in &shapes {
            let got = route(e, model, prompt).await;
            assert_eq!(got, want, "{name} differs from native for {prompt:.60}");
        }
    }
}

#[tokio::test]
async fn categories_route_like_the_native_equivalent() {
    let native = engine(NATIVE);
    let g0 = engine(CATEGORIES);
    for (prompt, model) in [
        ("my python script crashes with a stack trace", "qwen-coder"),
        ("Can you prove this theorem about prime numbers?", "deepseek-r1"),
        ("hello there, how are you", "qwen3-8b"),
        ("what is the best price and discount today", "qwen3-8b"),
    ] {
        let want = route(&native, "auto", prompt).await;
        let got = route(&g0, "auto", prompt).await;
        let picked = |s: &str| s.split(' ').next().unwrap().to_string();
        assert_eq!(picked(&got), model, "G0: {got:.200}");
        if !prompt.contains("price") {
            assert_eq!(picked(&got), picked(&want), "{prompt}");
        }
    }
}
