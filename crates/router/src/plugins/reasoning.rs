//! Reasoning toggles: a decision's chosen modelRef says `use_reasoning` (and maybe an effort);
//! the model's `reasoning_family` says how its API spells that.

use serde_json::{Map, Value};

use crate::config::{Config, ModelConfig, ModelRef, ReasoningEffort, ReasoningFamily, ReasoningToggle};

/// The reasoning setting for one request to one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Reasoning {
    /// How the family writes it.
    pub family: ReasoningFamily,
    /// On or off.
    pub enabled: bool,
    /// Effort when on.
    pub effort: ReasoningEffort,
}

impl Reasoning {
    /// The setting for `model` chosen through `model_ref`; `None` when the modelRef does not say
    /// or the model has no reasoning family (the body is then left as the client sent it).
    pub fn resolve(config: &Config, model: &ModelConfig, model_ref: Option<&ModelRef>) -> Option<Reasoning> {
        let model_ref = model_ref?;
        let enabled = model_ref.use_reasoning?;
        let family = config
            .routing
            .reasoning_families
            .get(model.reasoning_family.as_deref()?)?;
        let effort = model_ref
            .reasoning_effort
            .or(config.routing.default_reasoning_effort)
            .unwrap_or(ReasoningEffort::Medium);
        Some(Reasoning {
            family: family.clone(),
            enabled,
            effort,
        })
    }

    /// Writes the setting into a request object.
    pub fn apply(&self, obj: &mut Map<String, Value>) {
        let parameter = self.family.parameter.as_str();
        match self.family.kind {
            ReasoningToggle::ChatTemplateKwargs => {
                let kwargs = object_at(obj, "chat_template_kwargs");
                kwargs.insert(parameter.to_string(), Value::Bool(self.enabled));
            }
            // A dotted parameter (`reasoning.effort`) is a nested field.
            ReasoningToggle::ReasoningEffort => {
                let (parents, leaf) = match parameter.rsplit_once('.') {
                    Some((p, l)) => (Some(p), l),
                    None => (None, parameter),
                };
                let mut target = &mut *obj;
                for p in parents.into_iter().flat_map(|p| p.split('.')) {
                    target = object_at(target, p);
                }
                self.set_effort(target, leaf);
            }
            ReasoningToggle::TopLevelReasoningEffort => self.set_effort(obj, parameter),
        }
    }

    /// Off removes the field so the model falls back to its own default.
    fn set_effort(&self, obj: &mut Map<String, Value>, key: &str) {
        if self.enabled {
            obj.insert(key.to_string(), Value::String(self.effort.as_str().to_string()));
        } else {
            obj.shift_remove(key);
        }
    }
}

/// The object under `key`, created (or replacing a non-object) when needed.
fn object_at<'a>(obj: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("just made an object")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str_with_env;
    use serde_json::json;

    fn config() -> Config {
        load_str_with_env(
            "
providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]
models:
  - {name: qwen, provider: p, reasoning_family: qwen3}
  - {name: deepseek, provider: p, reasoning_family: deepseek}
  - {name: oss, provider: p, reasoning_family: gpt-oss}
  - {name: o3, provider: p, reasoning_family: openai}
  - {name: nested, provider: p, reasoning_family: nested}
  - {name: plain, provider: p}
routing:
  default_reasoning_effort: high
  reasoning_families:
    qwen3: {type: chat_template_kwargs, parameter: enable_thinking}
    deepseek: {type: chat_template_kwargs, parameter: thinking}
    gpt-oss: {type: reasoning_effort, parameter: reasoning_effort}
    openai: {type: top_level_reasoning_effort, parameter: reasoning_effort}
    nested: {type: reasoning_effort, parameter: reasoning.effort}
",
            &|_| None,
        )
        .unwrap()
    }

    fn run(model: &str, on: Option<bool>, effort: Option<ReasoningEffort>, body: Value) -> Value {
        let c = config();
        let r = ModelRef {
            use_reasoning: on,
            reasoning_effort: effort,
            ..ModelRef::new(model)
        };
        let mut body = body;
        if let Some(setting) = Reasoning::resolve(&c, c.model(model).unwrap(), Some(&r)) {
            setting.apply(body.as_object_mut().unwrap());
        }
        body
    }

    #[test]
    fn chat_template_kwargs_families() {
        assert_eq!(
            run("qwen", Some(true), None, json!({})),
            json!({"chat_template_kwargs": {"enable_thinking": true}})
        );
        assert_eq!(
            run("deepseek", Some(false), None, json!({"chat_template_kwargs": {"x": 1}})),
            json!({"chat_template_kwargs": {"x": 1, "thinking": false}})
        );
        assert_eq!(
            run("qwen", Some(false), None, json!({"chat_template_kwargs": "junk"})),
            json!({"chat_template_kwargs": {"enable_thinking": false}})
        );
    }

    #[test]
    fn effort_families_use_the_ref_then_the_default() {
        assert_eq!(
            run("oss", Some(true), Some(ReasoningEffort::Low), json!({})),
            json!({"reasoning_effort": "low"})
        );
        assert_eq!(
            run("o3", Some(true), None, json!({})),
            json!({"reasoning_effort": "high"}),
            "routing.default_reasoning_effort"
        );
        assert_eq!(
            run("oss", Some(false), None, json!({"reasoning_effort": "high", "a": 1})),
            json!({"a": 1})
        );
        assert_eq!(
            run(
                "nested",
                Some(true),
                Some(ReasoningEffort::Medium),
                json!({"reasoning": {"summary": "auto"}})
            ),
            json!({"reasoning": {"summary": "auto", "effort": "medium"}})
        );
    }

    #[test]
    fn medium_without_any_configured_effort() {
        let mut c = config();
        c.routing.default_reasoning_effort = None;
        let r = ModelRef {
            use_reasoning: Some(true),
            ..ModelRef::new("o3")
        };
        let s = Reasoning::resolve(&c, c.model("o3").unwrap(), Some(&r)).unwrap();
        assert_eq!(s.effort, ReasoningEffort::Medium);
    }

    #[test]
    fn nothing_without_a_family_or_a_setting() {
        assert_eq!(run("plain", Some(true), None, json!({"a": 1})), json!({"a": 1}));
        assert_eq!(run("qwen", None, None, json!({"a": 1})), json!({"a": 1}));
    }
}
