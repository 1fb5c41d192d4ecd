//! Live threshold calibration (RouteLLM's calibration, done on the sidecar's own traffic): the
//! threshold of a score rule that a calibrated decision uses (a `difficulty` rule's `threshold`,
//! a complexity rule's `hard_from`) is the (1 − share) quantile of the scores recently seen, so
//! about `share` of routed requests clear it and go to the decision's (strong) models.
//!
//! **Ties.** Real traffic repeats itself (the same prompt, templated requests), and a score that
//! many recent requests share can sit right at the quantile: `score ≥ threshold` would then send
//! all of them, overshooting the share by however many there are. The threshold in force is a
//! [`Cut`]: scores above it clear it, scores below do not, and of the scores equal to it only
//! the fraction that makes up the share does — chosen by the request's tie-break number
//! ([`crate::request::RequestView::tiebreak`], its id's hash), so the choice is deterministic
//! per request and even over requests.
//!
//! One [`Calibration`] value is created at `serve` and handed to every engine it builds, so the
//! windows outlive reloads: a rule keeps its window while its kind, name and definition (a
//! complexity rule's exemplars) stay the same — a changed `target_share` is a new quantile of the
//! same window —; anything else starts a new window. The lock is never held across an await.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{Calibrated, Config, ScoreLeaf};

/// Windows kept at most (keys of configs no longer loaded are dropped at each build; this bounds
/// what in-flight engines of older configs can add back).
const MAX_KEYS: usize = 1024;

/// A bounded sliding window of scores with exact quantiles: the last `capacity` scores in
/// arrival order and the same scores sorted. Adding one is two binary searches and `memmove`s of
/// at most `capacity` floats (well under a µs at the default 2000, tens of µs at the 100000
/// maximum); a quantile is an index.
#[derive(Debug, Clone)]
pub struct QuantileWindow {
    capacity: usize,
    order: VecDeque<f64>,
    sorted: Vec<f64>,
}

impl QuantileWindow {
    /// An empty window of `capacity` (≥ 1) scores.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        QuantileWindow {
            capacity,
            order: VecDeque::with_capacity(capacity),
            sorted: Vec::with_capacity(capacity),
        }
    }

    /// Scores held.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether no score is held.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Adds a score, evicting the oldest when full. Non-finite scores are ignored.
    pub fn push(&mut self, score: f64) {
        if !score.is_finite() {
            return;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            let i = self.sorted.partition_point(|x| x.total_cmp(&old).is_lt());
            self.sorted.remove(i);
        }
        self.order.push_back(score);
        let i = self.sorted.partition_point(|x| x.total_cmp(&score).is_le());
        self.sorted.insert(i, score);
    }

    /// Changes the capacity, keeping the newest scores.
    pub fn resize(&mut self, capacity: usize) {
        let capacity = capacity.max(1);
        while self.order.len() > capacity {
            if let Some(old) = self.order.pop_front() {
                let i = self.sorted.partition_point(|x| x.total_cmp(&old).is_lt());
                self.sorted.remove(i);
            }
        }
        self.capacity = capacity;
    }

    /// The threshold that `share` (0–1) of the held scores reach (`score >= threshold`): the
    /// score ranked `round(share·n)` from the top; above the maximum when that is none.
    pub fn threshold_for_share(&self, share: f64) -> Option<f64> {
        let n = self.sorted.len();
        if n == 0 || !(0.0..=1.0).contains(&share) {
            return None;
        }
        let above = ((share * n as f64).round() as usize).min(n);
        if above == 0 {
            let max = self.sorted[n - 1];
            return Some(max + max.abs().max(1.0) * f64::EPSILON * 4.0);
        }
        Some(self.sorted[n - above])
    }

    /// [`QuantileWindow::threshold_for_share`] with its ties: the cut that sends `share` of the
    /// held scores to the strong side, counting only the needed fraction of the scores equal to
    /// the threshold.
    pub fn cut_for_share(&self, share: f64) -> Option<Cut> {
        let threshold = self.threshold_for_share(share)?;
        let n = self.sorted.len();
        let above = ((share * n as f64).round() as usize).min(n);
        let (lo, hi) = (
            self.sorted.partition_point(|x| *x < threshold),
            self.sorted.partition_point(|x| *x <= threshold),
        );
        let (greater, equal) = (n - hi, hi - lo);
        let tie_share = if equal == 0 {
            1.0
        } else {
            (above.saturating_sub(greater) as f64 / equal as f64).clamp(0.0, 1.0)
        };
        Some(Cut { threshold, tie_share })
    }

    /// Share of the held scores at or above `threshold`.
    pub fn share_at(&self, threshold: f64) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let below = self.sorted.partition_point(|x| *x < threshold);
        (self.sorted.len() - below) as f64 / self.sorted.len() as f64
    }

    /// Share of the held scores a cut sends to the strong side (ties counted at `tie_share`).
    pub fn share_through(&self, cut: Cut) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let (lo, hi) = (
            self.sorted.partition_point(|x| *x < cut.threshold),
            self.sorted.partition_point(|x| *x <= cut.threshold),
        );
        let n = self.sorted.len() as f64;
        ((self.sorted.len() - hi) as f64 + (hi - lo) as f64 * cut.tie_share) / n
    }
}

/// A threshold in force: scores above it clear it, scores equal to it clear it for the requests
/// whose tie-break number is below `tie_share`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cut {
    /// The score.
    pub threshold: f64,
    /// The share (0–1] of requests scoring exactly `threshold` that clear it.
    pub tie_share: f64,
}

impl Cut {
    /// A plain `score ≥ threshold` cut.
    pub fn at(threshold: f64) -> Self {
        Cut {
            threshold,
            tie_share: 1.0,
        }
    }

    /// Whether a request with `score` and tie-break number `tiebreak` (in [0, 1)) clears it.
    pub fn clears(&self, score: f64, tiebreak: f64) -> bool {
        score > self.threshold || (score == self.threshold && tiebreak < self.tie_share)
    }
}

/// What a calibrated rule looks like now, for `/v1/backends`.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationSnapshot {
    /// The decisions that asked for the calibration.
    pub decisions: Vec<String>,
    /// Scores in the window.
    pub samples: usize,
    /// The threshold in force (the configured one during warm-up).
    pub threshold: f64,
    /// The share of requests scoring exactly `threshold` that clear it (1 unless many recent
    /// scores equal it).
    pub tie_share: f64,
    /// The target share.
    pub target_share: f64,
    /// Share of the window's scores the cut sends to the strong side (ties counted at
    /// `tie_share`).
    pub window_share: f64,
    /// Whether the live quantile is in force (past warm-up).
    pub live: bool,
}

#[derive(Debug)]
struct Entry {
    window: QuantileWindow,
    /// What the last engine that used it said, for the snapshot.
    decisions: Vec<String>,
    share: f64,
    configured: f64,
    warmup: usize,
}

/// Every calibrated rule's window, shared by the engines a server builds.
#[derive(Debug, Default)]
pub struct Calibration {
    windows: Mutex<HashMap<Arc<str>, Entry>>,
}

/// One calibrated rule as an engine uses it: built at engine build, read per request.
#[derive(Debug, Clone)]
pub struct Calibrator {
    /// The window's key: the condition and a fingerprint of the rule's definition.
    key: Arc<str>,
    /// The decisions that asked for it.
    pub decisions: Vec<String>,
    /// The score rule.
    pub leaf: ScoreLeaf,
    /// Target share.
    pub share: f64,
    /// The configured threshold (used during warm-up).
    pub configured: f64,
    window: usize,
    warmup: usize,
}

impl Calibrator {
    /// Every calibrated rule of `config`.
    pub fn all(config: &Config) -> Vec<Calibrator> {
        config
            .calibrated_rules()
            .into_iter()
            .filter_map(|c| Calibrator::of(config, c))
            .collect()
    }

    fn of(config: &Config, c: Calibrated) -> Option<Calibrator> {
        let s = &config.signals;
        let (configured, definition) = match &c.leaf {
            ScoreLeaf::Difficulty(r) => {
                let rule = s.difficulty.iter().find(|x| &x.name == r)?;
                // The threshold is what calibration replaces: not part of the fingerprint.
                (rule.threshold, String::new())
            }
            ScoreLeaf::ComplexityHard(r) => {
                let rule = s.complexity.iter().find(|x| &x.name == r)?;
                let def = serde_json::to_string(&(&rule.hard, &rule.easy)).unwrap_or_default();
                (rule.hard_from, def)
            }
        };
        let mut h = DefaultHasher::new();
        definition.hash(&mut h);
        let key = format!("{}\0{:016x}", c.leaf.label(), h.finish());
        Some(Calibrator {
            key: key.into(),
            decisions: c.decisions,
            leaf: c.leaf,
            share: c.share,
            configured,
            window: config.routing.calibration.window,
            warmup: config.routing.calibration.warmup,
        })
    }
}

impl Calibration {
    /// Adds a request's score to the rule's window and returns the cut in force for it: the
    /// live quantile once `warmup` scores are in, else the configured threshold.
    pub fn observe(&self, c: &Calibrator, score: f64) -> Cut {
        let Ok(mut windows) = self.windows.lock() else {
            return Cut::at(c.configured);
        };
        if !windows.contains_key(&c.key) && windows.len() >= MAX_KEYS {
            return Cut::at(c.configured);
        }
        let e = windows.entry(c.key.clone()).or_insert_with(|| Entry {
            window: QuantileWindow::new(c.window),
            decisions: c.decisions.clone(),
            share: c.share,
            configured: c.configured,
            warmup: c.warmup,
        });
        if e.window.capacity != c.window {
            e.window.resize(c.window);
        }
        (e.share, e.configured, e.warmup) = (c.share, c.configured, c.warmup);
        if e.decisions != c.decisions {
            e.decisions.clone_from(&c.decisions);
        }
        e.window.push(score);
        cut(e)
    }

    /// Seeds a rule's window with scores seen before (a restart reading its decision log).
    pub fn seed(&self, c: &Calibrator, scores: impl IntoIterator<Item = f64>) {
        for s in scores {
            self.observe(c, s);
        }
    }

    /// Drops the windows no calibrator of the current config uses.
    pub fn retain(&self, keep: &[Calibrator]) {
        if let Ok(mut windows) = self.windows.lock() {
            windows.retain(|k, _| keep.iter().any(|c| &c.key == k));
        }
    }

    /// Puts a config in service: drops the windows it no longer uses and applies its share,
    /// configured threshold, warm-up and window size to the ones it keeps (so what `/v1/backends`
    /// shows is the new config's from the reload on, not from the next request).
    pub fn configure(&self, calibrators: &[Calibrator]) {
        self.retain(calibrators);
        let Ok(mut windows) = self.windows.lock() else { return };
        for c in calibrators {
            if let Some(e) = windows.get_mut(&c.key) {
                e.window.resize(c.window);
                (e.share, e.configured, e.warmup) = (c.share, c.configured, c.warmup);
                e.decisions.clone_from(&c.decisions);
            }
        }
    }

    /// Every calibrated rule's state, by condition (`difficulty:hard`, `complexity:task:hard`).
    pub fn snapshot(&self) -> HashMap<String, CalibrationSnapshot> {
        let Ok(windows) = self.windows.lock() else {
            return HashMap::new();
        };
        windows
            .iter()
            .map(|(k, e)| {
                let cut = cut(e);
                let name = k.split('\0').next().unwrap_or_default().to_string();
                let snap = CalibrationSnapshot {
                    decisions: e.decisions.clone(),
                    samples: e.window.len(),
                    threshold: cut.threshold,
                    tie_share: cut.tie_share,
                    target_share: e.share,
                    window_share: e.window.share_through(cut),
                    live: e.window.len() >= e.warmup,
                };
                (name, snap)
            })
            .collect()
    }
}

/// A score rule's threshold as its signal uses it: fixed, or calibrated live.
#[derive(Debug, Clone)]
pub enum Threshold {
    /// The configured value.
    Fixed(f64),
    /// Follows the rule's window in the shared calibration state.
    Live(Arc<Calibration>, Calibrator),
}

impl Threshold {
    /// The threshold of `leaf` (configured `fixed`): live when a calibrator of the config is
    /// for it.
    pub fn of(fixed: f64, leaf: &ScoreLeaf, live: &LiveThresholds) -> Threshold {
        match live.calibrators.iter().find(|c| &c.leaf == leaf) {
            Some(c) => Threshold::Live(live.calibration.clone(), c.clone()),
            None => Threshold::Fixed(fixed),
        }
    }

    /// The cut in force for a request scoring `score` (a live one observes the score first).
    pub fn observe(&self, score: f64) -> Cut {
        match self {
            Threshold::Fixed(t) => Cut::at(*t),
            Threshold::Live(cal, c) => cal.observe(c, score),
        }
    }

    /// Whether a request scoring `score` with tie-break number `tiebreak` clears the threshold
    /// (a live one observes the score first).
    pub fn clears(&self, score: f64, tiebreak: f64) -> bool {
        self.observe(score).clears(score, tiebreak)
    }
}

/// What signals need to calibrate their rules: the shared state and the config's calibrators.
#[derive(Debug, Clone)]
pub struct LiveThresholds {
    /// The shared windows.
    pub calibration: Arc<Calibration>,
    /// The config's calibrated rules.
    pub calibrators: Vec<Calibrator>,
}

impl LiveThresholds {
    /// The calibrated rules of `config` on `calibration` (the server applies them to the kept
    /// windows once the engine is in service: [`Calibration::configure`]).
    pub fn new(config: &Config, calibration: Arc<Calibration>) -> Self {
        let calibrators = Calibrator::all(config);
        LiveThresholds {
            calibration,
            calibrators,
        }
    }
}

fn cut(e: &Entry) -> Cut {
    if e.window.len() < e.warmup {
        return Cut::at(e.configured);
    }
    e.window.cut_for_share(e.share).unwrap_or(Cut::at(e.configured))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str_with_env;

    /// A deterministic pseudo-random stream (xorshift) in 0..1.
    fn stream(seed: u64) -> impl Iterator<Item = f64> {
        let mut x = seed.max(1);
        std::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some((x >> 11) as f64 / (1u64 << 53) as f64)
        })
    }

    #[test]
    fn quantiles_are_exact_over_the_window() {
        let mut w = QuantileWindow::new(100);
        for i in 0..100 {
            w.push(f64::from(i) / 100.0);
        }
        let t = w.threshold_for_share(0.3).unwrap();
        assert_eq!(t, 0.7);
        assert!((w.share_at(t) - 0.3).abs() < 1e-12);
        assert_eq!(w.threshold_for_share(1.0), Some(0.0));
        let none = w.threshold_for_share(0.0).unwrap();
        assert!(none > 0.99 && w.share_at(none) == 0.0);
        assert_eq!(w.threshold_for_share(1.5), None);
        assert_eq!(QuantileWindow::new(5).threshold_for_share(0.5), None);
    }

    #[test]
    fn the_window_slides_and_stays_sorted() {
        let mut w = QuantileWindow::new(50);
        for s in stream(7).take(10_000) {
            w.push(s);
        }
        w.push(f64::NAN);
        assert_eq!(w.len(), 50);
        assert!(w.sorted.windows(2).all(|p| p[0] <= p[1]));
        let mut recent: Vec<f64> = w.order.iter().copied().collect();
        recent.sort_by(f64::total_cmp);
        assert_eq!(recent, w.sorted);
        // Duplicates are evicted one at a time.
        let mut d = QuantileWindow::new(3);
        for s in [0.5, 0.5, 0.5, 0.2] {
            d.push(s);
        }
        assert_eq!(d.sorted, vec![0.2, 0.5, 0.5]);
        d.resize(1);
        assert_eq!(d.sorted, vec![0.2]);
    }

    #[test]
    fn a_shifting_distribution_is_followed() {
        // Scores drift upwards: a threshold fixed after the first window sends ever more to the
        // strong model; the sliding quantile stays near the target (lagging the drift by half a
        // window, which this steep drift makes a few points).
        let mut w = QuantileWindow::new(500);
        let (mut live, mut fixed, mut frozen) = (0usize, 0usize, None);
        let total = 5000;
        for (i, s) in stream(42).take(total).enumerate() {
            let drifted = (s * 0.5 + i as f64 / total as f64 * 0.5).min(1.0);
            w.push(drifted);
            let t = w.threshold_for_share(0.25).unwrap();
            if i == 499 {
                frozen = Some(t);
            }
            live += usize::from(drifted >= t);
            fixed += usize::from(frozen.is_some_and(|f| drifted >= f));
        }
        let share = live as f64 / total as f64;
        assert!((share - 0.25).abs() < 0.07, "{share}");
        assert!(fixed as f64 / total as f64 > 0.5, "{fixed}");
    }

    #[test]
    fn ties_at_the_quantile_send_only_the_share_that_is_due() {
        // Half the traffic is one repeated prompt whose score sits at the 70th percentile.
        let mut w = QuantileWindow::new(1000);
        for (i, s) in stream(5).take(1000).enumerate() {
            w.push(if i % 2 == 0 { 0.5 } else { s });
        }
        let cut = w.cut_for_share(0.3).unwrap();
        assert_eq!(cut.threshold, 0.5);
        // ~250 above 0.5 among the distinct half, 500 ties: 50 of them make up 300.
        assert!(cut.tie_share > 0.0 && cut.tie_share < 0.3, "{cut:?}");
        assert!((w.share_through(cut) - 0.3).abs() < 1e-9);
        assert!(w.share_at(cut.threshold) > 0.7, "a plain ≥ would send the whole block");
        // Requests spread their tie-break numbers evenly: the realised share is the target.
        let mut strong = 0;
        for (i, (s, u)) in stream(11).zip(stream(12)).take(20_000).enumerate() {
            let score = if i % 2 == 0 { 0.5 } else { s };
            w.push(score);
            strong += usize::from(w.cut_for_share(0.3).unwrap().clears(score, u));
        }
        let share = strong as f64 / 20_000.0;
        assert!((share - 0.3).abs() < 0.01, "{share}");
        // No ties: the plain cut.
        let mut d = QuantileWindow::new(10);
        (0..10).for_each(|i| d.push(f64::from(i)));
        assert_eq!(d.cut_for_share(0.3), Some(Cut::at(7.0)));
        assert!(Cut::at(7.0).clears(7.0, 0.999) && !Cut::at(7.0).clears(6.9, 0.0));
    }

    fn config(extra: &str) -> Config {
        load_str_with_env(
            &format!(
                "
providers: [{{name: p, base_url: 'http://127.0.0.1:1/v1'}}]
models: [{{name: cheap, provider: p}}, {{name: strong, provider: p}}]
signals:
  difficulty: [{{name: hard, threshold: 0.9}}]
  complexity: [{{name: task, hard_from: 0.6}}]
decisions:
  - {{name: d, rules: {{type: difficulty, name: hard}}, modelRefs: [{{model: strong}}]}}
  - name: c
    rules: {{operator: AND, conditions: [{{type: complexity, name: 'task:hard'}}, {{type: difficulty, name: hard}}]}}
    modelRefs: [{{model: strong}}]
routing:
  default_model: cheap
  calibration: {{window: 100, warmup: 10}}
{extra}"
            ),
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn warmup_uses_the_configured_threshold_then_the_quantile() {
        let cfg = config("  target_strong_share: 0.2\n");
        let all = Calibrator::all(&cfg);
        // Decision `c` has two score conditions: not calibrated.
        assert_eq!(all.len(), 1);
        let c = &all[0];
        assert_eq!(c.decisions, ["d"]);
        assert_eq!((c.share, c.configured), (0.2, 0.9));
        let cal = Calibration::default();
        for i in 0..9 {
            assert_eq!(cal.observe(c, f64::from(i) / 100.0), Cut::at(0.9), "warm-up");
        }
        let mut strong = 0;
        for s in stream(3).take(1000) {
            strong += usize::from(cal.observe(c, s).clears(s, 0.5));
        }
        assert!((150..=250).contains(&strong), "{strong}");
        let snap = &cal.snapshot()["difficulty:hard"];
        assert!(snap.live && snap.samples == 100 && (snap.window_share - 0.2).abs() < 0.011);
    }

    #[test]
    fn windows_survive_reloads_unless_the_rule_changes() {
        let cal = Calibration::default();
        let a = Calibrator::all(&config("  target_strong_share: 0.5\n")).remove(0);
        for s in stream(9).take(100) {
            cal.observe(&a, s);
        }
        // A new share (and a new configured threshold) on the same rule: same window.
        let b = Calibrator::all(&config("  target_strong_share: 0.1\n")).remove(0);
        assert_eq!(a.key, b.key);
        let t = cal.observe(&b, 0.5).threshold;
        assert!(t > 0.8, "{t}: the 90th percentile of the same window");
        // A complexity rule whose exemplars change starts over.
        let mut c1 = config("  target_strong_share: 0.5\n");
        c1.decisions[1].rules = Some(crate::config::RuleNode {
            kind: Some(crate::config::SignalKind::Complexity),
            name: Some("task:hard".into()),
            ..Default::default()
        });
        let k1 = Calibrator::all(&c1).remove(1);
        let mut c2 = c1.clone();
        c2.signals.complexity[0].hard.candidates.push("prove it".into());
        let k2 = Calibrator::all(&c2).remove(1);
        assert_eq!(k1.leaf, crate::config::ScoreLeaf::ComplexityHard("task".into()));
        assert_ne!(k1.key, k2.key);
        cal.retain(std::slice::from_ref(&b));
        assert_eq!(cal.snapshot().len(), 1);
    }
}
