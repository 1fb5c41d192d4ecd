//! Choosing among a decision's candidate models. Today: the first reference that is
//! configured and enabled (vLLM Semantic Router's `static`).

use crate::config::{Config, ModelConfig};

/// Picks the model for a decision's references.
pub fn select<'c>(config: &'c Config, model_refs: &[String]) -> Option<&'c ModelConfig> {
    model_refs
        .iter()
        .filter_map(|name| config.model(name))
        .find(|m| m.enabled)
}
