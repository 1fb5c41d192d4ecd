//! The decision log: one JSON line per routed request (and per feedback score), appended to a
//! file by a background thread through a bounded queue — a full queue drops lines rather than
//! slowing requests. Prompts are redacted by default (a SHA-256 stands in for the text).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use anyhow::Context as _;

const QUEUE: usize = 4096;

/// An open decision log.
pub struct DecisionLog {
    tx: SyncSender<Vec<u8>>,
    /// Whether prompts are written in clear.
    pub include_prompt: bool,
}

impl DecisionLog {
    /// Opens (appends to) `path` and starts the writer thread.
    pub fn open(path: PathBuf, include_prompt: bool) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening decision log {}", path.display()))?;
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        std::thread::Builder::new()
            .name("llmsoup-decision-log".into())
            .spawn(move || {
                // Ends when the engine (and its sender) is dropped.
                while let Ok(line) = rx.recv() {
                    if let Err(e) = file.write_all(&line) {
                        tracing::warn!(error = %e, "writing the decision log failed");
                    }
                }
            })
            .context("starting the decision log writer")?;
        Ok(DecisionLog { tx, include_prompt })
    }

    /// Queues one JSON line.
    pub fn write(&self, entry: &serde_json::Value) {
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            tracing::warn!("decision log queue full; line dropped");
        }
    }
}

/// The threshold that sends `strong_share` of these scores' requests to the strong tier (score ≥
/// threshold): the score at the (1 − share) quantile (`llmsoup calibrate`).
pub fn calibrate(scores: &[f64], strong_share: f64) -> Option<f64> {
    if scores.is_empty() || !(0.0..=1.0).contains(&strong_share) {
        return None;
    }
    let mut s = scores.to_vec();
    s.sort_by(f64::total_cmp);
    let above = (strong_share * s.len() as f64).round() as usize;
    if above == 0 {
        return Some(s[s.len() - 1] + f64::EPSILON);
    }
    Some(s[s.len() - above.min(s.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_hits_the_share() {
        let scores: Vec<f64> = (0..100).map(|i| f64::from(i) / 100.0).collect();
        let t = calibrate(&scores, 0.3).unwrap();
        let share = scores.iter().filter(|s| **s >= t).count() as f64 / 100.0;
        assert_eq!(share, 0.3);
        assert!(calibrate(&scores, 0.0).unwrap() > 0.99);
        assert_eq!(calibrate(&scores, 1.0), Some(0.0));
        assert_eq!(calibrate(&[], 0.3), None);
    }

    #[test]
    fn writes_lines_and_reads_scores_back() {
        let dir = std::env::temp_dir().join(format!("llmsoup-dlog-{}", std::process::id()));
        let path = dir.join("d.jsonl");
        let log = DecisionLog::open(path.clone(), false).unwrap();
        log.write(&serde_json::json!({"event": "route", "complexity": 0.25}));
        log.write(&serde_json::json!({"event": "feedback", "score": 1.0}));
        log.write(&serde_json::json!({"event": "route", "complexity": 0.75}));
        drop(log);
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(crate::calibrate::scores(&text, "complexity"), vec![0.25, 0.75]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
