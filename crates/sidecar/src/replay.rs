//! `llmsoup replay`: what a new config would route differently, from a decision log, before it is
//! deployed. Every `route` line that kept its prompt (`decision_log.include_prompt: true`) is
//! routed again with the new config (signals, decisions, selection; live calibration, when the
//! config asks for it, warms up on the replayed traffic as it would on real traffic) and
//! compared with what the log says happened: requests per model and decision before and after,
//! the moves between decisions, the prompt-cost delta at the new config's prices, and examples.
//! Lines whose prompt was redacted (the default) cannot be routed again and are counted apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use llmsoup_config::Config;
use llmsoup_router::engine::Engine;
use llmsoup_router::request::RequestView;
use serde::Serialize;

/// One routed request from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Its `x-request-id`.
    pub request_id: String,
    /// The model it went to.
    pub model: String,
    /// The decision that won (`None`: the default model).
    pub decision: Option<String>,
    /// The prompt, when the log kept it.
    pub prompt: Option<String>,
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
}

/// The `route` lines of a decision log (other lines and lines that are not JSON are skipped).
pub fn parse_log(text: &str) -> Vec<Logged> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "route")
        .filter_map(|v| {
            Some(Logged {
                request_id: v["request_id"].as_str().unwrap_or_default().to_string(),
                model: v["model"].as_str()?.to_string(),
                decision: v["decision"].as_str().map(str::to_string),
                prompt: v["prompt"].as_str().map(str::to_string),
                prompt_tokens: v["prompt_tokens"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

/// A request that would go elsewhere.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// Its `x-request-id`.
    pub request_id: String,
    /// The prompt (cut to 120 characters).
    pub prompt: String,
    /// Where it went: decision (`-` for none) and model.
    pub before: (String, String),
    /// Where it would go.
    pub after: (String, String),
}

/// What the new config would change.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Route lines in the log.
    pub total: usize,
    /// Lines routed again.
    pub replayed: usize,
    /// Lines without a prompt (redacted), not routed again.
    pub redacted: usize,
    /// Replayed requests whose model or decision would change.
    pub changed: usize,
    /// Replayed requests per model: (before, after).
    pub per_model: BTreeMap<String, (usize, usize)>,
    /// Replayed requests per decision (`-` for none): (before, after).
    pub per_decision: BTreeMap<String, (usize, usize)>,
    /// Moves `decision/model → decision/model` with their counts.
    pub moves: BTreeMap<String, usize>,
    /// Prompt cost of the replayed requests as logged, at the new config's prices (USD; models
    /// the new config lacks cost nothing).
    pub cost_before: f64,
    /// The same under the new config.
    pub cost_after: f64,
    /// Up to the asked number of changed requests.
    pub examples: Vec<Example>,
}

fn prompt_cost(config: &Config, model: &str, tokens: u64) -> f64 {
    config
        .model(model)
        .and_then(|m| m.pricing.as_ref())
        .map_or(0.0, |p| p.prompt_per_1m * tokens as f64 / 1e6)
}

fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Routes every logged prompt again with `engine` (built from the new config).
pub async fn run(engine: &Engine, lines: &[Logged], examples: usize) -> anyhow::Result<Report> {
    let config = engine.config();
    let mut r = Report {
        total: lines.len(),
        ..Report::default()
    };
    for l in lines {
        let Some(prompt) = &l.prompt else {
            r.redacted += 1;
            continue;
        };
        let view = RequestView::from_text(prompt);
        let routed = engine
            .route(&view)
            .await
            .map_err(|e| anyhow::anyhow!("routing {:?}: {}", l.request_id, e.message))?;
        r.replayed += 1;
        let before = (l.decision.clone().unwrap_or_else(|| "-".into()), l.model.clone());
        let after = (
            routed.decision.clone().unwrap_or_else(|| "-".into()),
            routed.model.clone(),
        );
        r.per_model.entry(before.1.clone()).or_default().0 += 1;
        r.per_model.entry(after.1.clone()).or_default().1 += 1;
        r.per_decision.entry(before.0.clone()).or_default().0 += 1;
        r.per_decision.entry(after.0.clone()).or_default().1 += 1;
        let tokens = if l.prompt_tokens > 0 {
            l.prompt_tokens
        } else {
            view.prompt_tokens
        };
        r.cost_before += prompt_cost(config, &before.1, tokens);
        r.cost_after += prompt_cost(config, &after.1, tokens);
        if before != after {
            r.changed += 1;
            *r.moves
                .entry(format!("{}/{} → {}/{}", before.0, before.1, after.0, after.1))
                .or_default() += 1;
            if r.examples.len() < examples {
                r.examples.push(Example {
                    request_id: l.request_id.clone(),
                    prompt: cut(prompt, 120),
                    before,
                    after,
                });
            }
        }
    }
    Ok(r)
}

impl Report {
    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} routed requests in the log: {} replayed, {} without a prompt (set decision_log.include_prompt: true to replay them)",
            self.total, self.replayed, self.redacted
        );
        if self.replayed == 0 {
            return out;
        }
        let pct = |n: usize| 100.0 * n as f64 / self.replayed as f64;
        let _ = writeln!(
            out,
            "would route differently: {} ({:.1}%)",
            self.changed,
            pct(self.changed)
        );
        let _ = writeln!(out, "\nper model           before    after");
        for (m, (b, a)) in &self.per_model {
            let _ = writeln!(out, "  {m:<16} {b:>7}  {a:>7}");
        }
        let _ = writeln!(out, "\nper decision        before    after");
        for (d, (b, a)) in &self.per_decision {
            let _ = writeln!(out, "  {d:<16} {b:>7}  {a:>7}");
        }
        if !self.moves.is_empty() {
            let _ = writeln!(out, "\nmoves (decision/model):");
            let mut moves: Vec<_> = self.moves.iter().collect();
            moves.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (m, n) in moves {
                let _ = writeln!(out, "  {n:>6}  {m}");
            }
        }
        let delta = self.cost_after - self.cost_before;
        let rel = if self.cost_before > 0.0 {
            format!(" ({:+.1}%)", 100.0 * delta / self.cost_before)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "\nprompt cost at the new config's prices: before ${:.6}, after ${:.6}, delta ${delta:+.6}{rel}",
            self.cost_before, self.cost_after
        );
        if !self.examples.is_empty() {
            let _ = writeln!(out, "\nexamples:");
            for e in &self.examples {
                let _ = writeln!(
                    out,
                    "  [{}] {}/{} → {}/{}: {}",
                    e.request_id, e.before.0, e.before.1, e.after.0, e.after.1, e.prompt
                );
            }
        }
        out
    }

    /// The report as one JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "
providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]
models:
  - {name: small, provider: p, pricing: {prompt_per_1m: 1, completion_per_1m: 1}}
  - {name: coder, provider: p, pricing: {prompt_per_1m: 10, completion_per_1m: 10}}
signals:
  keywords: [{name: code, keywords: [python, rust]}]
decisions:
  - {name: coding, rules: {type: keyword, name: code}, modelRefs: [{model: coder}]}
routing: {default_model: small}
";

    #[tokio::test]
    async fn reports_what_moves() {
        let log = [
            r#"{"event":"route","request_id":"a","model":"coder","decision":"coding","prompt":"fix my python","prompt_tokens":1000000}"#,
            r#"{"event":"route","request_id":"b","model":"small","decision":null,"prompt":"a rust question","prompt_tokens":1000000}"#,
            r#"{"event":"route","request_id":"c","model":"small","decision":null,"prompt_sha256":"ab","prompt_tokens":3}"#,
            r#"{"event":"feedback","request_id":"a","score":1}"#,
        ]
        .join("\n");
        let lines = parse_log(&log);
        assert_eq!(lines.len(), 3);
        let engine = Engine::new(llmsoup_config::load_str(CONFIG).unwrap()).unwrap();
        let r = run(&engine, &lines, 5).await.unwrap();
        assert_eq!((r.total, r.replayed, r.redacted, r.changed), (3, 2, 1, 1));
        assert_eq!(r.per_model["coder"], (1, 2));
        assert_eq!(r.per_model["small"], (1, 0));
        assert_eq!(r.moves["-/small → coding/coder"], 1);
        assert!((r.cost_before - 11.0).abs() < 1e-9 && (r.cost_after - 20.0).abs() < 1e-9);
        assert_eq!(r.examples[0].request_id, "b");
        let text = r.text();
        assert!(text.contains("would route differently: 1 (50.0%)"), "{text}");
        assert!(text.contains("delta $+9.000000"), "{text}");
        assert!(r.json().contains("\"changed\":1"));
    }
}
