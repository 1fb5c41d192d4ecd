//! vLLM Semantic Router (vSR) configuration files, normalised into llmsoup's native [`Config`].
//!
//! vSR users bring one of four shapes; [`detect`] tells them apart from the parsed YAML and the
//! converters map each onto the native schema:
//!
//! | shape | module | markers |
//! |---|---|---|
//! | G0 categories (2025) | [`categories`] | `categories[].model_scores`, no `decisions` |
//! | G1 flat router YAML (v0.1/v0.2) | [`flat`] | `keyword_rules`, `vllm_endpoints`, `model_config`, ... |
//! | G1' CLI user format (`version: v0.1`) | [`user`] | `version: v0.1`, `signals:`, `providers.models[].endpoints` |
//! | G2 canonical (`version: v0.3`) | [`canonical`] | `version: v0.3`, `providers`, `routing`, `global` |
//!
//! What llmsoup cannot do is never dropped silently: every unknown or unsupported key becomes a
//! [`Warning`] naming its key path (and line). Wrong types are errors with key path and line, as
//! for native files. A decision condition on a signal family llmsoup does not have is treated as
//! a signal that never fires (see [`decisions::RuleTree`]), which is what vSR itself does when such
//! a signal does not match.

mod canonical;
mod categories;
mod common;
mod decisions;
mod endpoints;
mod flat;
mod prelude;
mod signals;
mod user;

use std::collections::HashMap;
use std::fmt;

use serde_yaml::Value;

use super::{Config, ConfigError};

/// Which configuration format a file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// llmsoup's own schema.
    Native,
    /// vSR G0: routing by `categories[].model_scores` (2025).
    VsrCategories,
    /// vSR G1: the flat router YAML of v0.1.0/v0.2.0 (`keyword_rules`, `model_config`, ...).
    VsrFlat,
    /// vSR G1': the CLI user format `version: v0.1` with `signals:` and `providers:`.
    VsrUser,
    /// vSR G2: the canonical `version: v0.3` format (`providers`, `routing`, `global`).
    VsrCanonical,
}

impl Shape {
    /// A short human description, as `llmsoup config check` prints it.
    pub fn describe(self) -> &'static str {
        match self {
            Shape::Native => "llmsoup native",
            Shape::VsrCategories => "vLLM Semantic Router G0 (categories with model_scores)",
            Shape::VsrFlat => "vLLM Semantic Router G1 (flat router YAML, v0.1/v0.2)",
            Shape::VsrUser => "vLLM Semantic Router G1' (CLI user format, version: v0.1)",
            Shape::VsrCanonical => "vLLM Semantic Router G2 (canonical, version: v0.3)",
        }
    }

    /// Whether this is one of vSR's formats.
    pub fn is_vsr(self) -> bool {
        self != Shape::Native
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Something in a vSR file llmsoup does not apply (or applies differently), tied to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Key path in the source file (`global.integrations.looper`).
    pub path: String,
    /// 1-based line of that key, when it can be found.
    pub line: Option<usize>,
    /// What llmsoup does instead.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{} (line {l}): {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Tells the configuration format of a parsed YAML document.
///
/// Native files keep their exact old behaviour: only documents that carry a vSR marker (and are
/// not shaped like a native file, whose `providers` and `models` are lists) are treated as vSR.
pub fn detect(doc: &Value) -> Shape {
    let Some(map) = doc.as_mapping() else {
        return Shape::Native;
    };
    let has = |k: &str| map.contains_key(k);
    let get = |k: &str| map.get(k);
    match get("version").and_then(Value::as_str).map(str::trim) {
        Some(v) if v.starts_with("v0.3") || v.starts_with("v0.4") => return Shape::VsrCanonical,
        Some(v) if v.starts_with("v0.1") || v.starts_with("v0.2") => return Shape::VsrUser,
        _ => {}
    }
    if get("providers").is_some_and(Value::is_mapping) {
        return if has("routing") || has("global") {
            Shape::VsrCanonical
        } else {
            Shape::VsrUser
        };
    }
    if get("providers").is_some_and(Value::is_sequence) || get("models").is_some_and(Value::is_sequence) {
        return Shape::Native;
    }
    // Native `routing` holds only gate settings; vSR v0.3 puts its catalog and rules there.
    let canonical_routing = get("routing").and_then(Value::as_mapping).is_some_and(|r| {
        ["modelCards", "signals", "decisions", "projections"]
            .iter()
            .any(|k| r.contains_key(*k))
    });
    if canonical_routing || has("global") {
        return Shape::VsrCanonical;
    }
    const FLAT: &[&str] = &[
        "vllm_endpoints",
        "model_config",
        "keyword_rules",
        "embedding_rules",
        "categories",
        "default_model",
        "provider_profiles",
        "auto_model_name",
        "bert_model",
        "semantic_cache",
    ];
    if !FLAT.iter().any(|k| has(k)) {
        return Shape::Native;
    }
    let scored = get("categories")
        .and_then(Value::as_sequence)
        .is_some_and(|cats| cats.iter().any(|c| c.get("model_scores").is_some()));
    if scored && !has("decisions") {
        Shape::VsrCategories
    } else {
        Shape::VsrFlat
    }
}

/// Takes out credential fields written as a whole `${VAR}` reference, before substitution, so
/// they become `credentials.env: VAR` (read by Envoy) instead of an inline secret, and the
/// sidecar does not need the secret in its own environment. Returns their paths and variables.
pub(super) fn take_credential_env_refs(doc: &mut Value) -> HashMap<String, String> {
    fn walk(v: &mut Value, path: &str, out: &mut HashMap<String, String>) {
        match v {
            Value::Mapping(m) => {
                for (k, child) in m.iter_mut() {
                    let Some(key) = k.as_str() else { continue };
                    let at = if path.is_empty() {
                        key.to_string()
                    } else {
                        format!("{path}.{key}")
                    };
                    if matches!(key, "api_key" | "access_key")
                        && let Some(var) = child.as_str().and_then(whole_env_reference)
                    {
                        out.insert(at, var.to_string());
                        *child = Value::String(String::new());
                        continue;
                    }
                    walk(child, &at, out);
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = HashMap::new();
    walk(doc, "", &mut out);
    out
}

/// vSR leaves its own placeholders in some strings (`${user_content}` in RAG plugin templates),
/// and sections llmsoup ignores may name secrets it does not need: in a vSR file an unset
/// variable is kept literally with a warning instead of failing the load. Returns the warnings;
/// `lookup` is then wrapped by [`keep_unset`].
pub(super) fn unset_variables(doc: &Value, text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<Warning> {
    fn walk(v: &Value, path: &str, found: &mut Vec<(String, String)>, lookup: &dyn Fn(&str) -> Option<String>) {
        match v {
            Value::String(s) => {
                let mut rest = s.as_str();
                while let Some(pos) = rest.find('$') {
                    let after = &rest[pos + 1..];
                    if let Some(tail) = after.strip_prefix('$') {
                        rest = tail;
                    } else if let Some(body) = after.strip_prefix('{')
                        && let Some(end) = body.find('}')
                    {
                        let expr = &body[..end];
                        if !expr.contains(":-") && lookup(expr).is_none_or(|v| v.is_empty()) {
                            found.push((path.to_string(), expr.to_string()));
                        }
                        rest = &body[end + 1..];
                    } else {
                        rest = after;
                    }
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{i}]"), found, lookup);
                }
            }
            Value::Mapping(m) => {
                for (k, child) in m {
                    let key = k.as_str().map(str::to_owned).unwrap_or_else(|| format!("{k:?}"));
                    let at = if path.is_empty() { key } else { format!("{path}.{key}") };
                    walk(child, &at, found, lookup);
                }
            }
            Value::Tagged(t) => walk(&t.value, path, found, lookup),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(doc, "", &mut found, lookup);
    found
        .into_iter()
        .map(|(path, var)| Warning {
            line: super::locate::line_of(text, &path),
            path,
            message: format!("environment variable `{var}` is not set; `${{{var}}}` is kept as written"),
        })
        .collect()
}

/// A lookup that answers an unset variable with its own reference, so it survives substitution.
pub(super) fn keep_unset(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name)
        .filter(|v| !v.is_empty())
        .or_else(|| Some(format!("${{{name}}}")))
}

/// `${NAME}` or `${NAME:-default}` → `NAME`.
fn whole_env_reference(s: &str) -> Option<String> {
    let body = s.trim().strip_prefix("${")?.strip_suffix('}')?;
    let name = body.split_once(":-").map_or(body, |(n, _)| n);
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then(|| name.to_string())
}

/// Converts an env-substituted vSR document into a native config (not yet validated).
pub(super) fn convert(
    shape: Shape,
    doc: Value,
    text: &str,
    env_refs: HashMap<String, String>,
    env_warnings: Vec<Warning>,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    let mut cx = common::Cx::new(text, env_refs);
    cx.warnings = env_warnings;
    let config = match shape {
        Shape::Native => unreachable!("native documents are not converted"),
        Shape::VsrCategories => flat::convert(&mut cx, doc, true)?,
        Shape::VsrFlat => flat::convert(&mut cx, doc, false)?,
        Shape::VsrUser => user::convert(&mut cx, doc)?,
        Shape::VsrCanonical => canonical::convert(&mut cx, doc)?,
    };
    let mut warnings = cx.warnings;
    // Source order reads best; warnings without a line keep their place at the end.
    warnings.sort_by_key(|w| w.line.unwrap_or(usize::MAX));
    Ok((config, warnings))
}

#[cfg(test)]
mod tests;
