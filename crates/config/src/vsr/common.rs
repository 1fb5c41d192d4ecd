//! What every vSR shape shares: typed decoding with warnings, key paths and reasons. The mapping
//! helpers live in [`super::signals`], [`super::decisions`] and [`super::endpoints`]; shapes
//! import all of it from [`super::prelude`].

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::Warning;
use crate::{ConfigError, locate};

/// Conversion context: the source text (for line numbers), credential env references and the
/// warnings collected so far.
pub(super) struct Cx<'a> {
    text: &'a str,
    env_refs: HashMap<String, String>,
    pub(super) warnings: Vec<Warning>,
}

impl<'a> Cx<'a> {
    pub(super) fn new(text: &'a str, env_refs: HashMap<String, String>) -> Self {
        Cx {
            text,
            env_refs,
            warnings: Vec::new(),
        }
    }

    /// Records a warning about the key at `path`.
    pub(super) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let line = line_near(self.text, &path);
        let message = message.into();
        if self.warnings.iter().any(|w| w.path == path && w.message == message) {
            return;
        }
        self.warnings.push(Warning { path, line, message });
    }

    /// An error about the key at `path`, with its line.
    pub(super) fn error(&self, path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let path = path.into();
        ConfigError::Invalid {
            line: line_near(self.text, &path),
            path,
            message: message.into(),
        }
    }

    /// The environment variable a credential at `path` was written as (`api_key: ${VAR}`).
    pub(super) fn env_ref(&self, path: &str) -> Option<String> {
        self.env_refs.get(path).cloned()
    }

    /// Decodes `value` (found at `path`) into `T`: type errors name the full key path and line,
    /// keys `T` does not know become warnings (with a reason when llmsoup knows the vSR feature).
    pub(super) fn typed<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Result<T, ConfigError> {
        let mut ignored = Vec::new();
        let result: Result<T, _> = {
            let mut record = |p: serde_ignored::Path| ignored.push(render(&p));
            let de = serde_ignored::Deserializer::new(value, &mut record);
            serde_path_to_error::deserialize(de)
        };
        for inner in ignored {
            let at = join(path, &inner);
            let reason = reason(&at);
            self.warn(at, reason);
        }
        result.map_err(|e| {
            let inner = e.path().to_string();
            let inner = if inner == "." { String::new() } else { inner };
            self.error(join(path, &inner), e.into_inner().to_string())
        })
    }

    /// Removes the keys of `map` that name features llmsoup does not have, with one warning each.
    pub(super) fn strip_unsupported(&mut self, map: &mut Mapping, path: &str, keys: &[&str]) {
        for key in keys {
            if map.remove(*key).is_some() {
                let at = join(path, key);
                let reason = reason(&at);
                self.warn(at, reason);
            }
        }
    }

    /// Warns once per child key of an unsupported section (`global.integrations.looper`).
    pub(super) fn warn_children(&mut self, path: &str, value: &Value) {
        match value.as_mapping() {
            Some(m) if !m.is_empty() => {
                for k in m.keys() {
                    let at = join(path, &key_text(k));
                    let reason = reason(&at);
                    self.warn(at, reason);
                }
            }
            _ => {
                let reason = reason(path);
                self.warn(path, reason);
            }
        }
    }
}

/// The line of `path`, or of its nearest ancestor that [`locate`] can find (flow-style YAML such
/// as `{type: fact_check, name: x}` only resolves to the line it sits on).
fn line_near(text: &str, path: &str) -> Option<usize> {
    let mut p = path;
    loop {
        if let Some(l) = locate::line_of(text, p) {
            return Some(l);
        }
        let cut = p.rfind(['.', '['])?;
        p = &p[..cut];
    }
}

pub(super) fn key_text(k: &Value) -> String {
    k.as_str().map(str::to_owned).unwrap_or_else(|| format!("{k:?}"))
}

/// Joins a parent key path and a child path (`a` + `b[0]` = `a.b[0]`, `a` + `[0]` = `a[0]`).
pub(super) fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_string(),
        (_, true) => parent.to_string(),
        _ if child.starts_with('[') => format!("{parent}{child}"),
        _ => format!("{parent}.{child}"),
    }
}

/// serde_ignored's path, written the way serde_path_to_error and [`locate`] write paths.
fn render(p: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render(parent)),
        Path::Map { parent, key } => join(&render(parent), key),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => render(parent),
    }
}

/// Why a vSR key is ignored; specific where llmsoup has its own way of doing the same thing.
pub(super) fn reason(path: &str) -> String {
    let bare: String = {
        // Drop list indices so prefixes match (`routing.signals.fact_check[0]` → `...fact_check`).
        let mut out = String::with_capacity(path.len());
        let mut depth = 0;
        for c in path.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out
    };
    let last = bare.rsplit('.').next().unwrap_or(&bare);
    let under = |prefix: &str| {
        bare == prefix || bare.starts_with(&format!("{prefix}.")) || bare.contains(&format!(".{prefix}"))
    };
    let text = if under("bert_model")
        || under("embedding_models")
        || under("model_catalog.embeddings")
        || last.ends_with("_model_path")
    {
        "llmsoup embeds with its own MiniLM sentence encoder (`embedding.model`); vSR embedding model settings are ignored"
    } else if under("classifier")
        || under("prompt_guard")
        || under("model_catalog.system")
        || under("model_catalog.modules")
    {
        "llmsoup uses its built-in classifiers (domain, PII, jailbreak); vSR classifier model settings are ignored"
    } else if under("semantic_cache") || under("stores.response_cache") {
        "llmsoup has no global response cache: decisions cache with their `cache` (`semantic-cache`) plugin, stored as the `response_cache` section says"
    } else if under("listeners") {
        "llmsoup renders its own Envoy listener (`gateway.listen`); ignored"
    } else if under("reliability") {
        "retries, health checks and outlier detection are set by `llmsoup envoy-config`; ignored"
    } else if last == "weight" {
        "llmsoup sends each model to one provider; weights are ignored"
    } else if under("streamed_body") || last.starts_with("streamed_body") || last == "max_streamed_body_bytes" {
        "llmsoup buffers request bodies in Envoy (`gateway.max_body_bytes`); ignored"
    } else if under("observability") {
        "llmsoup exports Prometheus metrics on `server.admin_listen`; vSR observability settings are ignored"
    } else {
        "not supported by llmsoup, ignored"
    };
    text.to_string()
}

/// Normalises a name to what native signal, decision and provider names allow.
pub(super) fn sanitize(name: &str) -> String {
    let out: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() { "unnamed".into() } else { out }
}
