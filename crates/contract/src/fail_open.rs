//! The fail-open body rewrite: when the sidecar cannot answer, the request still says
//! `"model": "auto"` and must be sent to a model a real provider accepts. The wasm filter applies
//! it itself; in ext_proc mode Envoy's Lua step does the same (`fail_open.lua`, rendered by the
//! envoy crate from the same model table).

use serde::Deserialize;
use serde_json::value::RawValue;

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
    models: &'m std::collections::BTreeMap<String, String>,
    default_model: &'m str,
) -> Option<(&'m str, Vec<u8>)> {
    let text = std::str::from_utf8(body).ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn fail_open_keeps_known_models_and_defaults_the_rest() {
        let models: BTreeMap<String, String> = [("small".into(), "small-v1".into()), ("big".into(), "big-v2".into())]
            .into_iter()
            .collect();
        let (m, b) = fail_open_rewrite(br#"{"model":"auto","x":[1,{"model":"inner"}]}"#, &models, "small").unwrap();
        assert_eq!(m, "small");
        assert_eq!(b, br#"{"model":"small-v1","x":[1,{"model":"inner"}]}"#);
        let (m, b) = fail_open_rewrite(br#"{ "model" : "big" }"#, &models, "small").unwrap();
        assert_eq!((m, b.as_slice()), ("big", br#"{ "model" : "big-v2" }"#.as_slice()));
        assert!(fail_open_rewrite(b"{not json", &models, "small").is_none());
        assert!(fail_open_rewrite(br#"{"model":1}"#, &models, "small").is_none());
    }
}
