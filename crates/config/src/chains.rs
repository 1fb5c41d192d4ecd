//! Fallback chains: which models a request may fail over to (`models[].fallbacks`, decisions with
//! `fallback: true`), shared by the router (which picks a request's chain) and the Envoy renderer
//! (which renders a route for every chain the router may pick).

use std::collections::BTreeSet;

use crate::{Config, ConfigError, DecisionConfig, MAX_CHAIN, ModelConfig};

impl Config {
    /// The configured chain that starts at `primary`: for a decision with `fallback: true`, its
    /// other `modelRefs` in listed order, else `primary`'s `models[].fallbacks`. Enabled models
    /// only, each once, at most [`MAX_CHAIN`] with the primary.
    pub fn fallback_chain<'c>(
        &'c self,
        primary: &'c ModelConfig,
        decision: Option<&'c DecisionConfig>,
    ) -> Vec<&'c ModelConfig> {
        let names: Box<dyn Iterator<Item = &str>> = match decision {
            Some(d) if d.fallback => Box::new(d.model_refs.iter().map(|r| r.model.as_str())),
            _ => Box::new(primary.fallbacks.iter().map(String::as_str)),
        };
        let mut chain = vec![primary];
        for m in names.filter_map(|n| self.model(n)) {
            if chain.len() == MAX_CHAIN {
                break;
            }
            if m.enabled && !chain.iter().any(|c| c.name == m.name) {
                chain.push(m);
            }
        }
        chain
    }

    /// Every chain of two or more models the router may hand Envoy: each configured chain's
    /// subsequences of two or more models, sorted. Fallbacks that cannot take a request are
    /// dropped from its chain, and so is a primary in a `retry-after` skip window (the chain
    /// then starts at its first usable fallback).
    pub fn chains(&self) -> Vec<Vec<&str>> {
        let mut full: Vec<Vec<&str>> = Vec::new();
        for m in self.models.iter().filter(|m| m.enabled) {
            full.push(self.fallback_chain(m, None).iter().map(|m| m.name.as_str()).collect());
        }
        for d in self.decisions.iter().filter(|d| d.fallback) {
            for r in &d.model_refs {
                if let Some(m) = self.model(&r.model).filter(|m| m.enabled) {
                    full.push(
                        self.fallback_chain(m, Some(d))
                            .iter()
                            .map(|m| m.name.as_str())
                            .collect(),
                    );
                }
            }
        }
        let mut out = BTreeSet::new();
        for chain in full {
            for mask in 1u32..(1 << chain.len()) {
                if mask.count_ones() < 2 {
                    continue;
                }
                let c: Vec<&str> = chain
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, m)| *m)
                    .collect();
                out.insert(c);
            }
        }
        out.into_iter().collect()
    }

    /// Cross-field checks of `models[].fallbacks`, `models[].capabilities`, decisions'
    /// `fallback` and `routing.fallback`.
    pub(crate) fn validate_fallbacks(&self) -> Result<(), ConfigError> {
        let f = &self.routing.fallback;
        if !(2..=MAX_CHAIN as u32).contains(&f.max_attempts) {
            return Err(ConfigError::invalid(
                "routing.fallback.max_attempts",
                format!("must be between 2 and {MAX_CHAIN}"),
            ));
        }
        if let Some(q) = f.quality_floor
            && !(0.0..=1.0).contains(&q)
        {
            return Err(ConfigError::invalid(
                "routing.fallback.quality_floor",
                "must be between 0 and 1",
            ));
        }
        let in_chain = |name: &str, at: String| {
            if name.contains(llmsoup_contract::fallback::SEPARATOR) {
                Err(ConfigError::invalid(
                    at,
                    format!("`{name}`: models in fallback chains may not contain `,`"),
                ))
            } else {
                Ok(())
            }
        };
        for (i, m) in self.models.iter().enumerate() {
            let at = format!("models[{i}].fallbacks");
            if m.fallbacks.is_empty() {
                continue;
            }
            in_chain(&m.name, format!("models[{i}].name"))?;
            if m.fallbacks.len() >= MAX_CHAIN {
                return Err(ConfigError::invalid(
                    at,
                    format!("at most {} fallbacks per model", MAX_CHAIN - 1),
                ));
            }
            let mut seen = BTreeSet::new();
            for (j, name) in m.fallbacks.iter().enumerate() {
                let at = format!("{at}[{j}]");
                if self.model(name).is_none() {
                    return Err(ConfigError::invalid(at, format!("unknown model `{name}`")));
                }
                if name == &m.name || !seen.insert(name) {
                    return Err(ConfigError::invalid(at, format!("`{name}` is already in this chain")));
                }
                in_chain(name, at)?;
            }
        }
        for (i, d) in self.decisions.iter().enumerate().filter(|(_, d)| d.fallback) {
            if d.model_refs.len() > MAX_CHAIN {
                return Err(ConfigError::invalid(
                    format!("decisions[{i}].modelRefs"),
                    format!("a decision with `fallback: true` may list at most {MAX_CHAIN} models"),
                ));
            }
            for (j, r) in d.model_refs.iter().enumerate() {
                in_chain(&r.model, format!("decisions[{i}].modelRefs[{j}].model"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str_with_env;

    const CHAINS: &str = "
providers:
  - {name: p, base_url: 'http://127.0.0.1:1/v1'}
models:
  - {name: a, provider: p, fallbacks: [b, c]}
  - {name: b, provider: p}
  - {name: c, provider: p}
  - {name: off, provider: p, enabled: false}
signals:
  keywords: [{name: k, keywords: [zebra]}]
decisions:
  - {name: d, rules: {type: keyword, name: k}, modelRefs: [{model: c}, {model: a}], fallback: true}
";

    fn err(text: &str) -> String {
        load_str_with_env(text, &|_| None).unwrap_err().to_string()
    }

    #[test]
    fn chains_are_every_subsequence_of_two_or_more() {
        let c = load_str_with_env(CHAINS, &|_| None).unwrap();
        let a = c.model("a").unwrap();
        let names = |v: Vec<&crate::ModelConfig>| v.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(c.fallback_chain(a, None)), ["a", "b", "c"]);
        // A fallback decision's modelRefs replace the model's own fallbacks.
        assert_eq!(names(c.fallback_chain(a, Some(&c.decisions[0]))), ["a", "c"]);
        assert_eq!(
            c.chains(),
            // `b, c`: `a`'s chain while `a` is in a retry-after skip window.
            [
                vec!["a", "b"],
                vec!["a", "b", "c"],
                vec!["a", "c"],
                vec!["b", "c"],
                vec!["c", "a"],
            ]
        );
        // Disabled models never join a chain.
        let c = load_str_with_env(&CHAINS.replace("[b, c]", "[off, b]"), &|_| None).unwrap();
        assert_eq!(names(c.fallback_chain(c.model("a").unwrap(), None)), ["a", "b"]);
    }

    #[test]
    fn bad_fallbacks_name_the_key() {
        let e = err(&CHAINS.replace("[b, c]", "[b, ghost]"));
        assert!(e.contains("models[0].fallbacks[1]") && e.contains("ghost"), "{e}");
        let e = err(&CHAINS.replace("[b, c]", "[b, a]"));
        assert!(e.contains("models[0].fallbacks[1]") && e.contains("already"), "{e}");
        let e = err(&CHAINS.replace("[b, c]", "[b, b]"));
        assert!(e.contains("models[0].fallbacks[1]"), "{e}");
        let e = err(&CHAINS.replace("[b, c]", "[b, c, off, b, c]"));
        assert!(e.contains("models[0].fallbacks") && e.contains("at most 4"), "{e}");
        let e = err(&CHAINS
            .replace("{name: b, provider: p}", "{name: 'b,x', provider: p}")
            .replace("[b, c]", "['b,x']"));
        assert!(e.contains("models[0].fallbacks[0]") && e.contains("`,`"), "{e}");
        let e = err(&format!("{CHAINS}routing:\n  fallback: {{max_attempts: 1}}\n"));
        assert!(e.contains("routing.fallback.max_attempts"), "{e}");
        let e = err(&format!("{CHAINS}routing:\n  fallback: {{quality_floor: 2}}\n"));
        assert!(e.contains("routing.fallback.quality_floor"), "{e}");
        let e = err(&CHAINS.replace(
            "{name: b, provider: p}",
            "{name: b, provider: p, capabilities: {vison: false}}",
        ));
        assert!(e.contains("models[1].capabilities") && e.contains("vison"), "{e}");
    }
}
