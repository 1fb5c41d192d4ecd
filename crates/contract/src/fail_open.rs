//! The fail-open body rewrite: when the sidecar cannot answer, the request still says
//! `"model": "auto"` and must be sent to a model a real provider accepts. The wasm filter applies
//! it itself; in ext_proc mode Envoy's Lua step does the same (`fail_open.lua`, rendered by the
//! envoy crate from the same model table). It parses as strictly as the sidecar.

use serde_json::value::RawValue;

use crate::ApiError;

/// Why the fail-open step refuses a body: the same client errors the sidecar gives, as a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOpenError {
    /// Empty, not JSON, not an object, or a top-level key given twice.
    InvalidJson,
    /// No top-level `model`.
    MissingModel,
    /// `model` is not a string (number, array, object).
    InvalidModel,
}

impl FailOpenError {
    /// Every refusal, for renderers that spell the bodies out (the ext_proc fail-open Lua step).
    pub const ALL: [FailOpenError; 3] = [
        FailOpenError::InvalidJson,
        FailOpenError::MissingModel,
        FailOpenError::InvalidModel,
    ];

    /// The error code of the 400 (`invalid_json`, `missing_model`, `invalid_model`).
    pub fn code(self) -> &'static str {
        self.parts().1
    }

    /// The 400 body (OpenAI-style, as the sidecar's).
    pub fn body(self) -> Vec<u8> {
        let (message, code) = self.parts();
        ApiError::bad_request(message, None, code).to_json()
    }

    fn parts(self) -> (&'static str, &'static str) {
        match self {
            FailOpenError::InvalidJson => (
                "The request body must be one valid JSON object with each top-level key once.",
                "invalid_json",
            ),
            FailOpenError::MissingModel => ("You must provide a model parameter.", "missing_model"),
            FailOpenError::InvalidModel => ("`model` must be a string.", "invalid_model"),
        }
    }
}

/// The top-level members of a JSON object, keys decoded (escapes resolved, as a provider reads
/// them), values raw; a key given twice is an error rather than "first" or "last wins".
struct TopLevel<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for TopLevel<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = TopLevel<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members: Vec<(String, &'de RawValue)> = Vec::new();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if members.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key.into_owned(), value));
                }
                Ok(TopLevel(members))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Fail-open rewrite: the body with its top-level `model` replaced by the provider id of the
/// requested model when it is configured, else of the default model. Returns the model name
/// chosen and the new body. The body is parsed as strictly as the sidecar parses it (the whole
/// body one JSON object, keys unescaped, no key twice, `model` a string): anything else is a
/// client error, never forwarded as it came.
pub fn fail_open_rewrite<'m>(
    body: &[u8],
    models: &'m std::collections::BTreeMap<String, String>,
    default_model: &'m str,
) -> Result<(&'m str, Vec<u8>), FailOpenError> {
    let text = std::str::from_utf8(body).map_err(|_| FailOpenError::InvalidJson)?;
    let top: TopLevel<'_> = serde_json::from_str(text).map_err(|_| FailOpenError::InvalidJson)?;
    let raw = top
        .0
        .iter()
        .find(|(k, _)| k == "model")
        .map(|(_, v)| *v)
        // `"model": null` is no model, as the sidecar reads it.
        .filter(|v| v.get() != "null")
        .ok_or(FailOpenError::MissingModel)?;
    let requested: String = serde_json::from_str(raw.get()).map_err(|_| FailOpenError::InvalidModel)?;
    let (name, id) = models
        .get_key_value(&requested)
        .or_else(|| models.get_key_value(default_model))
        // The plugin config is checked at load: the default model is always in `models`.
        .ok_or(FailOpenError::InvalidModel)?;
    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
    let end = start + raw.get().len();
    let quoted = serde_json::to_string(id).map_err(|_| FailOpenError::InvalidModel)?;
    let mut out = Vec::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[end..]);
    Ok((name.as_str(), out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn models() -> BTreeMap<String, String> {
        [("small".into(), "small-v1".into()), ("big".into(), "big-v2".into())]
            .into_iter()
            .collect()
    }

    #[test]
    fn fail_open_keeps_known_models_and_defaults_the_rest() {
        let models = models();
        let (m, b) = fail_open_rewrite(br#"{"model":"auto","x":[1,{"model":"inner"}]}"#, &models, "small").unwrap();
        assert_eq!(m, "small");
        assert_eq!(b, br#"{"model":"small-v1","x":[1,{"model":"inner"}]}"#);
        let (m, b) = fail_open_rewrite(br#"{ "model" : "big" }"#, &models, "small").unwrap();
        assert_eq!((m, b.as_slice()), ("big", br#"{ "model" : "big-v2" }"#.as_slice()));
        // Nested duplicates are the provider's business; only the top level decides the model.
        let (m, _) = fail_open_rewrite(br#"{"x":{"a":1,"a":2},"model":"big"}"#, &models, "small").unwrap();
        assert_eq!(m, "big");
    }

    /// Whatever the sidecar refuses, fail-open refuses too: a provider reading the body with its
    /// own JSON parser must never see a model other than the one written here.
    #[test]
    fn fail_open_parses_as_strictly_as_the_sidecar() {
        let models = models();
        let err = |b: &[u8]| fail_open_rewrite(b, &models, "small").unwrap_err();
        use FailOpenError::*;
        for (body, want) in [
            (&br#"{"model":"auto","model":"big"}"#[..], InvalidJson),
            (br#"{"model":"auto","mod\u0065l":"big"}"#, InvalidJson),
            (br#"{"model":null,"model":"big"}"#, InvalidJson),
            (br#"{"stream":true,"stream":false,"model":"auto"}"#, InvalidJson),
            (b"", InvalidJson),
            (b"{not json", InvalidJson),
            (b"[1,2]", InvalidJson),
            (br#"{"model":"auto"} trailing"#, InvalidJson),
            (br#"{"model":"auto"}{"model":"big"}"#, InvalidJson),
            (b"{\"model\":\"a\xff\"}", InvalidJson),
            (br#"{"messages":[]}"#, MissingModel),
            (br#"{"model":1}"#, InvalidModel),
            (br#"{"model":null}"#, MissingModel),
            (br#"{"model":["big"]}"#, InvalidModel),
            (br#"{"model":{"id":"big"}}"#, InvalidModel),
        ] {
            assert_eq!(err(body), want, "{}", String::from_utf8_lossy(body));
            let v: serde_json::Value = serde_json::from_slice(&want.body()).unwrap();
            assert_eq!(v["error"]["type"], "invalid_request_error");
        }
        // An escaped key is the key it decodes to: rewritten, not passed through.
        let (m, b) = fail_open_rewrite(br#"{"mod\u0065l":"big"}"#, &models, "small").unwrap();
        assert_eq!((m, b.as_slice()), ("big", br#"{"mod\u0065l":"big-v2"}"#.as_slice()));
        let (m, b) = fail_open_rewrite(br#"{"model":"\u0061uto"}"#, &models, "small").unwrap();
        assert_eq!((m, b.as_slice()), ("small", br#"{"model":"small-v1"}"#.as_slice()));
        // Found by fuzz/ (fail_open target): a top-level array is not rewritten as if it were an object.
        assert_eq!(
            fail_open_rewrite(br#"["auto"]"#, &models, "small").unwrap_err(),
            InvalidJson
        );
        assert_eq!(
            fail_open_rewrite(br#" ["big",1]"#, &models, "small").unwrap_err(),
            InvalidJson
        );
    }
}
