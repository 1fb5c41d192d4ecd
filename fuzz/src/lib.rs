//! Fuzz target bodies: each takes the fuzzer's bytes and panics when a property breaks.
//!
//! They are plain functions so two drivers share them: the cargo-fuzz binaries in
//! `fuzz/fuzz_targets/` (libFuzzer, `make fuzz`) and `crates/router/tests/fuzz_smoke.rs`, which
//! replays the committed corpus and a short deterministic mutation loop in `make test` without an
//! instrumented build. This file is compiled by both, so it only uses crates both can see
//! (`llmsoup_router`, `llmsoup_config`, `llmsoup_contract`, `serde`, `serde_json`).
//!
//! Input format, shared by the request and fail-open targets: the first byte selects options
//! (bit 0: the rest is raw body bytes, or a script for [`JsonGen`] that builds a JSON-ish body
//! from a grammar biased towards the keys the parsers look at — duplicate and escaped keys,
//! lone surrogates, huge numbers, deep nesting — so the fuzzer reaches deep paths without first
//! having to invent valid JSON).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use llmsoup_contract::usage::{Usage, UsageScanner};
use llmsoup_router::request::parse_request;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Models the fail-open target rewrites to: name → provider id. The ids need JSON escaping, so a
/// splice that forgot to quote them would produce invalid JSON.
const FAIL_OPEN_MODELS: &[(&str, &str)] = &[
    ("small", "small-v1"),
    ("big", "big \"v2\" \\ \u{2028}"),
    ("auto", "auto-provider"),
    ("é", "e\u{301}"),
];

/// Replacement models for the sidecar's `with_model` splice (quotes, escapes, non-ASCII, empty).
const NEW_MODELS: &[&str] = &["gpt-4o-mini", "", "a\"b\\c\nd", "\u{0}\u{1f}", "ü😀\u{2028}", "model"];

/// Every top-level `(key, raw value)` of a JSON object, keys unescaped, duplicates kept, in
/// order; `None` when the text is not one JSON object. The reference reading the checks use: a
/// provider may take the first or the last duplicate, so "the model" is only well defined when
/// exactly one top-level key reads as `model`.
fn top_level(text: &str) -> Option<Vec<(String, &RawValue)>> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = (&mut de).deserialize_map(Entries).ok()?;
    de.end().ok()?;
    Some(entries)
}

/// The one top-level `model` of a body, as a string; `None` when the body is not an object or
/// has no, several, or a non-string `model`.
fn single_model(text: &str) -> Option<String> {
    let entries = top_level(text)?;
    let mut models = entries.iter().filter(|(k, _)| k == "model");
    let (_, raw) = models.next()?;
    if models.next().is_some() {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// Request parsing (`llmsoup_router::request::parse_request`) and the `with_model` splice.
///
/// Properties: never panics; a body it accepts is a JSON object with exactly one top-level
/// `model`, which is the model it reports; the spliced body parses again, carries the new model
/// (also as `serde_json::Value` reads it), and leaves every other byte and everything signals see
/// unchanged; a rejection is a 400 whose JSON error body is well formed.
pub fn request(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let body = body_from(sel, rest);
    let include_history = sel & 2 != 0;
    let parsed = match parse_request(&body, include_history) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(e.status, 400, "a body is a client error: {e:?}");
            let v: serde_json::Value = serde_json::from_slice(&e.to_json()).expect("error body is JSON");
            assert!(v["error"]["message"].is_string(), "error body shape: {v}");
            return;
        }
    };
    let text = std::str::from_utf8(&body).expect("accepted bodies are UTF-8");
    assert_eq!(
        single_model(text).as_deref(),
        Some(parsed.model.as_str()),
        "an accepted body has exactly one top-level string `model`, the one reported"
    );
    let new = NEW_MODELS[usize::from(sel >> 2) % NEW_MODELS.len()];
    let out = parsed.with_model(&body, new);
    let again = parse_request(&out, include_history).unwrap_or_else(|e| panic!("spliced body rejected: {e:?}"));
    assert_eq!(again.model, new);
    assert_eq!(again.stream, parsed.stream);
    let (a, b) = (&again.view, &parsed.view);
    assert_eq!(
        (
            &a.text,
            &a.history,
            a.prompt_tokens,
            a.messages,
            a.system_chars,
            a.json_mode,
            a.tools
        ),
        (
            &b.text,
            &b.history,
            b.prompt_tokens,
            b.messages,
            b.system_chars,
            b.json_mode,
            b.tools
        ),
        "the splice changed what signals see"
    );
    let out_text = std::str::from_utf8(&out).expect("spliced body is UTF-8");
    assert_eq!(single_model(out_text).as_deref(), Some(new));
    // serde_json::Value cannot hold every valid JSON text (numbers beyond f64, like 1e400), so
    // this second reading applies when it could read the original.
    if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
        let value: serde_json::Value = serde_json::from_str(out_text).expect("spliced body is JSON");
        assert_eq!(value["model"], new);
    }
    // Only the model's bytes changed.
    let quoted = serde_json::to_string(new).unwrap();
    let prefix = out.iter().zip(&body).take_while(|(x, y)| x == y).count();
    let suffix = out
        .iter()
        .rev()
        .zip(body.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    assert!(
        prefix + suffix + quoted.len() >= out.len(),
        "bytes other than the model changed"
    );
}

fn fail_open_models() -> &'static BTreeMap<String, String> {
    static MODELS: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    MODELS.get_or_init(|| {
        FAIL_OPEN_MODELS
            .iter()
            .map(|(n, id)| (n.to_string(), id.to_string()))
            .collect()
    })
}

/// The wasm filter's fail-open rewrite (`llmsoup_contract::fail_open::fail_open_rewrite`), compared
/// with the sidecar's parser.
///
/// Properties: a body it rewrites had exactly one top-level string `model` (so no provider can
/// read a different one), and the result is a JSON object whose only top-level `model` is the
/// provider id of the requested model when configured, else of the default; when the sidecar
/// accepts the body too, both read the same model; a body the sidecar rejects for its model
/// (missing, not a string, duplicated) is never rewritten; a body the sidecar would route is
/// never refused by fail-open (so tightening one side alone shows up here).
pub fn fail_open(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let body = body_from(sel, rest);
    let models = fail_open_models();
    // A default that is configured, and one that is not (only known models are rewritten then).
    let default = if sel & 2 == 0 { "small" } else { "unconfigured" };
    let rewritten = llmsoup_contract::fail_open::fail_open_rewrite(&body, models, default);
    let sidecar = parse_request(&body, false);
    let Ok((name, out)) = rewritten else {
        if let Ok(p) = &sidecar {
            // Fail-open is deliberately stricter in one way: it refuses any top-level key written
            // twice, where the sidecar only refuses repeats of the fields it reads.
            let repeated_key = top_level(std::str::from_utf8(&body).unwrap_or_default()).is_some_and(|entries| {
                entries
                    .iter()
                    .enumerate()
                    .any(|(i, (k, _))| entries[..i].iter().any(|(earlier, _)| earlier == k))
            });
            assert!(
                repeated_key || (!models.contains_key(&p.model) && !models.contains_key(default)),
                "the sidecar routes this body (model {:?}) but fail-open refuses to rewrite it",
                p.model
            );
        }
        return;
    };
    let text = std::str::from_utf8(&body).expect("rewritten bodies are UTF-8");
    let requested = single_model(text)
        .expect("fail-open rewrote a body without exactly one top-level string `model` (not an object, or ambiguous)");
    let expected = if models.contains_key(&requested) {
        requested.as_str()
    } else {
        default
    };
    assert_eq!(name, expected, "fail-open chose the wrong model");
    let id = &models[name];
    let out_text = std::str::from_utf8(&out).expect("fail-open output is UTF-8");
    assert_eq!(
        single_model(out_text).as_ref(),
        Some(id),
        "fail-open output's top-level model"
    );
    if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
        let value: serde_json::Value = serde_json::from_str(out_text).expect("fail-open output is JSON");
        assert_eq!(&value["model"], id.as_str());
    }
    match &sidecar {
        Ok(p) => assert_eq!(p.model, requested, "sidecar and fail-open read different models"),
        Err(e) => assert!(
            !matches!(e.code, Some("missing_model" | "invalid_model")),
            "fail-open rewrote a body the sidecar rejects for its model: {e:?}"
        ),
    }
}

fn scan(sse: bool, chunks: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Option<Usage> {
    let mut s = UsageScanner::new(sse);
    for c in chunks {
        s.feed(c.as_ref());
    }
    s.finish()
}

/// The response usage scanner (`llmsoup_contract::usage::UsageScanner`).
///
/// Input: byte 0 (bit 0: SSE, bit 1: raw body or grammar script, bits 2–4: number of split
/// points), then that many split-point bytes, then the body. Property: the same bytes fed in one
/// chunk, one byte at a time, and split at the chosen points give the same usage, and nothing
/// panics.
pub fn usage(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let sse = sel & 1 != 0;
    let splits = usize::from((sel >> 2) & 7).min(rest.len());
    let (points, rest) = rest.split_at(splits);
    let body = if sel & 2 == 0 {
        rest.to_vec()
    } else {
        JsonGen::new(rest).usage_body(sse)
    };
    let whole = scan(sse, [&body[..]]);
    let bytewise = scan(sse, body.chunks(1));
    assert_eq!(whole, bytewise, "byte-at-a-time feed differs from one feed");
    let mut cuts: Vec<usize> = points.iter().map(|&p| usize::from(p) * body.len() / 255).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut at = 0;
    for c in cuts {
        chunks.push(&body[at..c]);
        at = c;
    }
    chunks.push(&body[at..]);
    assert_eq!(whole, scan(sse, chunks), "split feed differs from one feed");
}

/// Config loading as `llmsoup config check` does it (`llmsoup_config::load_detailed`, native
/// and vSR shapes), then `config migrate`'s rendering and a reload of it. Property: never panics;
/// errors are fine.
pub fn config(data: &[u8]) {
    // `config check` reads the file with `read_to_string`: non-UTF-8 never reaches the loader.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lookup = |name: &str| match name {
        "OPENAI_API_KEY" | "API_KEY" => Some("sk-fuzz".to_string()),
        "EMPTY" => Some(String::new()),
        "DOLLAR" => Some("${OPENAI_API_KEY}".to_string()),
        "PORT" => Some("8080".to_string()),
        _ => None,
    };
    if let Ok(loaded) = llmsoup_config::load_detailed(text, &lookup)
        && let Ok(native) = llmsoup_config::to_native_yaml(&loaded)
    {
        let _ = llmsoup_config::load_detailed(&native, &lookup);
    }
}

/// The body of a request/fail-open input: raw bytes, or a [`JsonGen`] script.
fn body_from(sel: u8, rest: &[u8]) -> Vec<u8> {
    if sel & 1 == 0 {
        rest.to_vec()
    } else {
        JsonGen::new(rest).request_body()
    }
}

/// Keys the parsers give meaning to (plus escaped spellings of `model` and near misses).
const KEYS: &[&str] = &[
    "model",
    "model",
    "mod\\u0065l",
    "\\u006dodel",
    "Model",
    "model ",
    "messages",
    "role",
    "content",
    "text",
    "type",
    "prompt",
    "input",
    "system",
    "stream",
    "response_format",
    "tools",
    "functions",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "cache_read_input_tokens",
    "choices",
    "delta",
];

/// String values worth trying (already JSON-escaped where needed).
const STRINGS: &[&str] = &[
    "auto",
    "small",
    "big",
    "unconfigured",
    "é",
    "user",
    "system",
    "assistant",
    "developer",
    "text",
    "json_object",
    "",
    "\\ud800",
    "\\udc00\\ud800",
    "\\u0000",
    "\\\"model\\\": \\\"big\\\"",
    "a\\nb",
    "\u{2028}😀",
    "data: {\\\"usage\\\":{}}",
];

/// Numbers around the edges of u64 and f64 (usage counters are u64).
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "7",
    "1.5",
    "1e3",
    "1e400",
    "-0",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "4294967296",
];

/// Builds JSON-ish text from a byte script: each byte picks the next production, so mutating the
/// script mutates the document structurally. Mostly valid JSON, with rare deliberate glitches
/// (a raw script byte, a missing separator, very deep nesting) so error paths are reached too.
/// Runs out of script → the smallest production, so every script terminates.
pub struct JsonGen<'a> {
    script: &'a [u8],
    pos: usize,
    out: Vec<u8>,
}

impl<'a> JsonGen<'a> {
    pub fn new(script: &'a [u8]) -> Self {
        JsonGen {
            script,
            pos: 0,
            out: Vec::new(),
        }
    }

    fn byte(&mut self) -> u8 {
        let b = self.script.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn exhausted(&self) -> bool {
        self.pos >= self.script.len()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.byte()) % items.len()]
    }

    fn push(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    fn ws(&mut self) {
        let b = self.byte();
        if b >= 0xf0 {
            const WS: [&str; 6] = [" ", "\n", "\t", "\r\n ", "\u{a0}", "\u{c}"];
            self.push(WS[usize::from(b - 0xf0) % 6]);
        }
    }

    fn string(&mut self) {
        let b = self.byte();
        self.push("\"");
        if b < 0xe0 {
            let s = self.pick(STRINGS);
            self.push(s);
        } else {
            // Script bytes as string content: raw control characters, invalid UTF-8, quotes.
            let n = usize::from(b - 0xe0);
            for _ in 0..n {
                let c = self.byte();
                self.out.push(c);
            }
        }
        self.push("\"");
    }

    fn key(&mut self) {
        let k = self.pick(KEYS);
        self.push("\"");
        self.push(k);
        self.push("\"");
    }

    fn value(&mut self, depth: usize) {
        self.ws();
        let choice = if self.exhausted() || depth > 10 {
            0
        } else {
            self.byte() % 16
        };
        match choice {
            0 => {
                let s = self.pick(&["null", "true", "false"]);
                self.push(s);
            }
            1..=3 => self.string(),
            4 | 5 => {
                let n = self.pick(NUMBERS);
                self.push(n);
            }
            6..=9 => self.object(depth + 1),
            10..=12 => self.array(depth + 1),
            13 => {
                // Nesting past serde_json's recursion limit (128).
                let n = usize::from(self.byte());
                self.push(&"[".repeat(n));
                self.value(depth + 1);
                self.push(&"]".repeat(n));
            }
            14 => {
                let b = self.byte();
                self.out.push(b);
            }
            _ => self.string(),
        }
        self.ws();
    }

    fn object(&mut self, depth: usize) {
        self.push("{");
        let n = if self.exhausted() { 0 } else { self.byte() % 6 };
        for i in 0..n {
            if i > 0 {
                self.separator(b",");
            }
            self.ws();
            self.key();
            self.separator(b":");
            self.value(depth);
        }
        self.push("}");
    }

    fn array(&mut self, depth: usize) {
        self.push("[");
        let n = if self.exhausted() { 0 } else { self.byte() % 5 };
        for i in 0..n {
            if i > 0 {
                self.separator(b",");
            }
            self.value(depth);
        }
        self.push("]");
    }

    /// `sep`, except rarely dropped or doubled.
    fn separator(&mut self, sep: &[u8]) {
        match self.byte() {
            0xfe => {}
            0xff => {
                self.out.extend_from_slice(sep);
                self.out.extend_from_slice(sep);
            }
            _ => self.out.extend_from_slice(sep),
        }
    }

    /// A request body: usually an object with a `model` first, then whatever the script builds.
    pub fn request_body(mut self) -> Vec<u8> {
        let top = self.byte();
        if top < 0xe0 {
            self.push("{");
            self.ws();
            let model_first = !top.is_multiple_of(4);
            if model_first {
                self.push("\"model\":");
                if top % 4 == 1 {
                    self.value(1);
                } else {
                    self.string();
                }
            }
            let n = self.byte() % 6;
            for i in 0..n {
                if model_first || i > 0 {
                    self.separator(b",");
                }
                self.ws();
                self.key();
                self.separator(b":");
                self.value(1);
            }
            self.push("}");
        } else {
            self.value(0);
        }
        self.out
    }

    /// A response body: SSE lines (`data:` events with usage objects, comments, `[DONE]`, CR LF
    /// or LF endings) or one JSON value.
    pub fn usage_body(mut self, sse: bool) -> Vec<u8> {
        if !sse {
            self.value(0);
            return self.out;
        }
        while !self.exhausted() {
            match self.byte() % 8 {
                0 => self.push(": keep-alive"),
                1 => self.push("event: message_delta"),
                2 => self.push("data: [DONE]"),
                3 => {}
                _ => {
                    let s = self.pick(&["data: ", "data:", "data:  \t"]);
                    self.push(s);
                    if self.byte().is_multiple_of(2) {
                        self.push("{\"usage\":");
                        self.value(1);
                        self.push("}");
                    } else {
                        self.value(0);
                    }
                }
            }
            let s = self.pick(&["\n", "\r\n", "\n\n", "\r\n\r\n", "\r"]);
            self.push(s);
        }
        self.out
    }
}
