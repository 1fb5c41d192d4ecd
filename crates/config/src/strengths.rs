//! Model strengths: every model's ability on the learned router's scale, the unit of
//! `models[].strength`. The built-in table is fitted from data by `make fit-strengths`
//! (`tools/examples/fit_strengths.rs`): a Rasch model over the per-question outcomes of 30 LLMs on
//! MMLU-Pro questions, `P(model answers question) = σ(strength − b_question)`, so one unit more
//! multiplies a model's odds of answering by e, and 0 answers an average question of that set
//! half the time (Mixtral-8x7B-Instruct −0.77, GPT-4o 1.45; Llama-2-7B −2.23). It gives a model its default
//! strength when the config names one of those 30 models, and gives the learned router the
//! strengths of its reference models.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::ModelConfig;

static TABLE: &str = include_str!("../assets/model_strengths.json");

/// One model of the built-in table.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Learned {
    /// Ability on the Rasch logit scale.
    pub strength: f64,
    /// Share of the questions it answered correctly.
    pub accuracy: f64,
    /// Questions it has an outcome for.
    pub answered: usize,
}

#[derive(Deserialize)]
struct Table {
    models: HashMap<String, Learned>,
}

/// The built-in table, keyed by lower-cased model name.
fn table() -> &'static HashMap<String, (String, Learned)> {
    static PARSED: OnceLock<HashMap<String, (String, Learned)>> = OnceLock::new();
    PARSED.get_or_init(|| {
        // The asset is checked by this module's tests; a broken one would fail them, not serving.
        let t: Table = serde_json::from_str(TABLE).unwrap_or(Table { models: HashMap::new() });
        t.models
            .into_iter()
            .map(|(name, l)| (name.to_ascii_lowercase(), (name, l)))
            .collect()
    })
}

/// The learned strength of a model named like one of the table's (case-insensitive, after the
/// last `/`, so `mistralai/Mixtral-8x7B-Instruct-v0.1` is found).
pub fn learned(name: &str) -> Option<Learned> {
    let key = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    table().get(&key).map(|(_, l)| *l)
}

/// Every model of the built-in table, weakest first.
pub fn all() -> Vec<(&'static str, Learned)> {
    let mut out: Vec<(&str, Learned)> = table().values().map(|(n, l)| (n.as_str(), *l)).collect();
    out.sort_by(|a, b| a.1.strength.total_cmp(&b.1.strength).then(a.0.cmp(b.0)));
    out
}

/// A configured model's strength: `models[].strength`, else the learned one of its provider
/// model id, else of its name; `None` when neither is known.
pub fn of(model: &ModelConfig) -> Option<f64> {
    model
        .strength
        .or_else(|| learned(model.provider_model_id()).map(|l| l.strength))
        .or_else(|| learned(&model.name).map(|l| l.strength))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_orders_models_as_their_accuracy_does() {
        let all = all();
        assert_eq!(all.len(), 30);
        // The Rasch strength is a monotone function of accuracy when every model answered the
        // same questions; with a few missing answers it still sorts the same way here.
        for pair in all.windows(2) {
            assert!(pair[0].1.accuracy <= pair[1].1.accuracy + 0.01, "{pair:?}");
        }
        let gpt = learned("gpt-4o-2024-05-13").unwrap();
        let mixtral = learned("mistralai/Mixtral-8x7B-Instruct-v0.1").unwrap();
        assert!(gpt.strength > mixtral.strength + 1.0, "{gpt:?} {mixtral:?}");
        assert!((gpt.accuracy - 0.717).abs() < 0.001, "{gpt:?}");
        assert!(learned("no-such-model").is_none());
    }

    fn load(models: &str, algorithm: &str) -> Result<crate::Config, String> {
        crate::load_str_with_env(
            &format!(
                "
providers: [{{name: p, base_url: 'http://127.0.0.1:1/v1'}}]
models:
{models}
decisions:
  - {{name: d, modelRefs: [{{model: a}}, {{model: b}}], algorithm: {algorithm}}}
"
            ),
            &|_| None,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn success_target_needs_a_target_and_every_models_strength() {
        let known =
            "  - {name: a, provider: p, strength: -1}\n  - {name: b, provider: p, model_id: openai/gpt-4o-2024-05-13}";
        let c = load(known, "{type: success_target, target: 0.8}").unwrap();
        assert_eq!(of(&c.models[0]), Some(-1.0));
        assert_eq!(of(&c.models[1]), learned("gpt-4o-2024-05-13").map(|l| l.strength));
        let e = load(known, "{type: success_target}").unwrap_err();
        assert!(e.contains("decisions[0].algorithm.target"), "{e}");
        let e = load(known, "{type: success_target, target: 1.5}").unwrap_err();
        assert!(e.contains("decisions[0].algorithm.target"), "{e}");
        let e = load(known, "{type: cost, target: 0.5}").unwrap_err();
        assert!(e.contains("only the success_target"), "{e}");
        let unknown = "  - {name: a, provider: p, strength: 0}\n  - {name: b, provider: p, model_id: my-own-model}";
        let e = load(unknown, "{type: success_target, target: 0.8}").unwrap_err();
        assert!(
            e.contains("decisions[0].modelRefs[1].model") && e.contains("strength"),
            "{e}"
        );
        let e = load(
            "  - {name: a, provider: p, strength: 99}\n  - {name: b, provider: p}",
            "{type: static}",
        )
        .unwrap_err();
        assert!(e.contains("models[0].strength"), "{e}");
    }
}
