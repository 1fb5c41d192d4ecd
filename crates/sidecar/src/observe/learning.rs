//! What routing learns from its own traffic beyond upstream health: which recent request went to
//! which decision and model (so `POST /v1/feedback` can name a request by its id), the
//! feedback-learned quality those answers earn, and, at start, the state the decision log holds
//! (routed requests, feedback scores and the scores live calibration had seen), so a restart
//! routes as the process before it did.

use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use llmsoup_config::ScoreLeaf;
use llmsoup_router::engine::{Engine, Learned};

/// Routed requests remembered for feedback (the oldest is forgotten first).
pub const RECENT_REQUESTS: usize = 65_536;
/// How much of the decision log's end a restart reads back (bounded start-up work).
pub const RESTORE_BYTES: u64 = 32 << 20;

/// Where one routed request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedTo {
    /// The winning decision (`None`: no decision matched, the default model served it).
    pub decision: Option<String>,
    /// The model that answered.
    pub model: String,
}

#[derive(Debug, Default)]
struct Recent {
    by_id: HashMap<String, RoutedTo>,
    order: VecDeque<String>,
}

/// The last [`RECENT_REQUESTS`] routed requests by `x-request-id`.
#[derive(Debug, Default)]
pub struct RecentRequests {
    inner: Mutex<Recent>,
}

impl RecentRequests {
    /// Remembers a routed request (an empty id is not remembered: nobody can name it).
    pub fn insert(&self, request_id: &str, to: RoutedTo) {
        if request_id.is_empty() {
            return;
        }
        let Ok(mut r) = self.inner.lock() else { return };
        if r.by_id.insert(request_id.to_string(), to).is_none() {
            r.order.push_back(request_id.to_string());
            while r.order.len() > RECENT_REQUESTS {
                if let Some(old) = r.order.pop_front() {
                    r.by_id.remove(&old);
                }
            }
        }
    }

    /// A fallback answered instead of the routed model: feedback is about its answer.
    pub fn answered_by(&self, request_id: &str, model: &str) {
        if let Ok(mut r) = self.inner.lock()
            && let Some(to) = r.by_id.get_mut(request_id)
            && to.model != model
        {
            to.model = model.to_string();
        }
    }

    /// Where `request_id` went, if it is remembered.
    pub fn get(&self, request_id: &str) -> Option<RoutedTo> {
        self.inner.lock().ok()?.by_id.get(request_id).cloned()
    }

    /// Requests remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |r| r.by_id.len())
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a restart read back from the decision log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Routed requests remembered again.
    pub routes: usize,
    /// Feedback scores applied again.
    pub feedback: usize,
    /// Scores put back into live calibration windows.
    pub scores: usize,
}

/// The end of a decision log: its last `RESTORE_BYTES`, from the first whole line.
pub fn read_tail(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(RESTORE_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if start == 0 {
        return Ok(text);
    }
    Ok(text
        .split_once('\n')
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default())
}

/// Replays a decision log's lines into `recent` and `learned`: `route` lines are remembered for
/// feedback (and their scores refill the windows of the rules `engine` calibrates), `feedback`
/// lines update the quality estimates at their own time, so decay comes out as it would have.
pub fn restore(text: &str, engine: &Engine, learned: &Learned, recent: &RecentRequests) -> Restored {
    let mut out = Restored::default();
    let calibrators = &engine.live_thresholds().calibrators;
    // A complexity score in the log is the first complexity rule's: only unambiguous with one.
    let one_complexity_rule = engine.config().signals.complexity.len() == 1;
    let feedback_cfg = &engine.config().routing.feedback;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v["event"].as_str() {
            Some("route") => {
                let (Some(id), Some(model)) = (v["request_id"].as_str(), v["model"].as_str()) else {
                    continue;
                };
                recent.insert(
                    id,
                    RoutedTo {
                        decision: v["decision"].as_str().map(str::to_string),
                        model: model.to_string(),
                    },
                );
                out.routes += 1;
                for c in calibrators {
                    let score = match &c.leaf {
                        ScoreLeaf::Difficulty(_) => v["difficulty"].as_f64(),
                        ScoreLeaf::ComplexityHard(_) if one_complexity_rule => v["complexity"].as_f64(),
                        ScoreLeaf::ComplexityHard(_) => None,
                    };
                    if let Some(s) = score {
                        learned.calibration.observe(c, s);
                        out.scores += 1;
                    }
                }
            }
            Some("feedback") => {
                let (Some(decision), Some(model), Some(score), Some(ts)) = (
                    v["decision"].as_str(),
                    v["model"].as_str(),
                    v["score"].as_f64(),
                    v["ts"].as_f64(),
                ) else {
                    continue;
                };
                if (0.0..=1.0).contains(&score) {
                    learned.quality.record(decision, model, score, ts, feedback_cfg);
                    out.feedback += 1;
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_requests_are_bounded_and_follow_fallbacks() {
        let r = RecentRequests::default();
        let to = |m: &str| RoutedTo {
            decision: Some("d".into()),
            model: m.into(),
        };
        r.insert("", to("a"));
        assert!(r.is_empty());
        for i in 0..RECENT_REQUESTS + 5 {
            r.insert(&format!("id{i}"), to("a"));
        }
        assert_eq!(r.len(), RECENT_REQUESTS);
        assert!(r.get("id0").is_none() && r.get("id5").is_some());
        r.answered_by("id5", "b");
        assert_eq!(r.get("id5").unwrap().model, "b");
    }

    #[test]
    fn a_log_restores_routes_feedback_and_calibration() {
        let cfg = llmsoup_config::load_str(
            "
providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]
models: [{name: cheap, provider: p, quality: 0.8}, {name: strong, provider: p}]
signals:
  difficulty: [{name: hard, threshold: 0.9}]
decisions:
  - {name: d, rules: {type: difficulty, name: hard}, modelRefs: [{model: strong}]}
routing: {default_model: cheap, target_strong_share: 0.5, calibration: {window: 10, warmup: 2}}
",
        )
        .unwrap();
        let learned = Learned::default();
        let engine = Engine::with_learned(cfg, learned.clone()).unwrap();
        let recent = RecentRequests::default();
        let text = [
            r#"{"event":"route","request_id":"r1","model":"cheap","decision":null,"difficulty":0.2}"#,
            r#"{"event":"route","request_id":"r2","model":"strong","decision":"d","difficulty":0.8}"#,
            "not json",
            r#"{"event":"feedback","request_id":"r1","decision":"g","model":"cheap","score":0.0,"ts":1.0}"#,
            r#"{"event":"feedback","request_id":"r1","score":1.0,"ts":2.0}"#,
        ]
        .join("\n");
        let got = restore(&text, &engine, &learned, &recent);
        assert_eq!(
            got,
            Restored {
                routes: 2,
                feedback: 1,
                scores: 2
            }
        );
        assert_eq!(recent.get("r2").unwrap().decision.as_deref(), Some("d"));
        let snap = learned.calibration.snapshot();
        assert_eq!(snap["difficulty:hard"].samples, 2);
        assert!(learned.quality.has_feedback("g"));
    }

    async fn route(engine: &Engine, id: &str) -> (llmsoup_contract::outcome::Outcome, llmsoup_router::engine::Trace) {
        let body = br#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#;
        engine
            .handle(llmsoup_router::engine::Request {
                path: "/v1/chat/completions",
                body,
                request_id: id,
                client: "",
            })
            .await
    }

    /// Feedback names a routed request by id: known ids move the decision's quality of the model
    /// that answered (and `cost` selection with it), unknown ids are a 404, and a new observer
    /// reading the same decision log (a restart) knows both again.
    #[tokio::test]
    async fn feedback_counts_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("llmsoup-fb-{}", std::process::id()));
        let path = dir.join("decisions.jsonl");
        let text = format!(
            "
providers: [{{name: p, base_url: 'http://127.0.0.1:1/v1'}}]
models:
  - {{name: cheap, provider: p, quality: 0.8, pricing: {{prompt_per_1m: 0.1, completion_per_1m: 0.1}}}}
  - {{name: strong, provider: p, quality: 0.95, pricing: {{prompt_per_1m: 5, completion_per_1m: 5}}}}
decisions:
  - {{name: all, modelRefs: [{{model: cheap}}, {{model: strong}}], algorithm: {{type: cost, quality_floor: 0.7}}}}
routing: {{default_model: cheap}}
decision_log: {{path: '{}'}}
",
            path.display()
        );
        let observer = crate::observe::Observer::default();
        let engine = observer.engine(llmsoup_config::load_str(&text).unwrap()).unwrap();
        let (outcome, trace) = route(&engine, "r1").await;
        observer.on_route("r1", &outcome, &trace);
        let unknown = observer.feedback(&engine, "nope", 0.0).unwrap_err();
        assert_eq!((unknown.status, unknown.code), (404, Some("request_not_found")));
        let got = observer.feedback(&engine, "r1", 0.0).unwrap();
        assert_eq!(
            (got.to.decision.as_deref(), got.to.model.as_str()),
            (Some("all"), "cheap")
        );
        assert!((got.quality.unwrap() - 4.0 / 6.0).abs() < 1e-9);
        let (outcome, _) = route(&engine, "r2").await;
        let llmsoup_contract::outcome::Outcome::Forward(f) = outcome else {
            panic!("forwarded")
        };
        assert_eq!(f.summary.model, "strong");

        // The log's writer thread is asynchronous: wait for both lines, then "restart".
        for _ in 0..200 {
            let t = std::fs::read_to_string(&path).unwrap_or_default();
            if t.contains("\"feedback\"") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let restarted = crate::observe::Observer::default();
        let engine2 = restarted.engine(llmsoup_config::load_str(&text).unwrap()).unwrap();
        let r = restarted.restore(&engine2);
        assert_eq!((r.routes, r.feedback), (1, 1));
        assert!(restarted.feedback(&engine2, "r1", 1.0).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_tail_starts_at_a_whole_line() {
        let dir = std::env::temp_dir().join(format!("llmsoup-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.jsonl");
        std::fs::write(&path, "a\nb\n").unwrap();
        assert_eq!(read_tail(&path).unwrap(), "a\nb\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
