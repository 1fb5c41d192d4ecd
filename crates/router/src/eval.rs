//! Routing quality metrics for a weak/strong pair, as RouteLLM defines them (Ong et al., 2024,
//! "RouteLLM: Learning to Route LLMs with Preference Data", §5.1).
//!
//! Each prompt has a router score (higher = send to the strong model) and the quality of each
//! model's answer: 1 or 0 for correct or not (MMLU, GSM8K), or a graded score such as a judge's
//! 1–10 (MT-Bench). Sending the top-scored share `c` of the prompts to the strong model and the
//! rest to the weak one gives a quality `q(c)` (the mean), from the weak model's alone, `q(0)`, to
//! the strong model's alone, `q(1)`.
//!
//! - **PGR(c)**, performance gap recovered: `(q(c) − q(0)) / (q(1) − q(0))`.
//! - **APGR**: the area under PGR(c) for `c` from 0 to 1. A random router scores 0.5 (its curve
//!   is the straight line between the two models); a perfect one approaches the area of the
//!   curve that sends only the prompts the weak model fails and the strong one solves.
//! - **CPT(x)**, call-performance threshold: the smallest share of strong calls `c` with
//!   PGR(c) ≥ x (CPT(50%) = the strong calls needed to recover half the gap; lower is better).
//!
//! Ties in the score cannot be ordered by the router, so a tied block is taken as a whole: the
//! curve is linear across it (the expectation over orders within the block). The curve is
//! therefore exact, with no sampling of thresholds, and a constant score gives exactly APGR 0.5.

/// One prompt: the router's score and the quality of each model's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Router score: higher sends the prompt to the strong model first.
    pub score: f64,
    /// The weak model's answer: 1.0 correct, 0.0 wrong, or a graded score.
    pub weak: f64,
    /// The strong model's answer, on the same scale.
    pub strong: f64,
}

impl Outcome {
    /// A prompt with right/wrong answers.
    pub fn binary(score: f64, weak: bool, strong: bool) -> Outcome {
        Outcome {
            score,
            weak: f64::from(u8::from(weak)),
            strong: f64::from(u8::from(strong)),
        }
    }
}

/// The quality–cost curve of one router on one weak/strong pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// `(strong share, quality)` at every score boundary, from `(0, q_weak)` to `(1, q_strong)`.
    pub points: Vec<(f64, f64)>,
    /// Quality with the weak model alone.
    pub weak: f64,
    /// Quality with the strong model alone.
    pub strong: f64,
    /// The score threshold at each point: prompts scoring at least this go strong (`+∞` at 0).
    pub thresholds: Vec<f64>,
}

impl Curve {
    /// The curve of routing `items` by score, strong first for the highest scores. `None` for
    /// no items, or a score or quality that is not a finite number.
    pub fn new(items: &[Outcome]) -> Option<Curve> {
        if items.is_empty()
            || items
                .iter()
                .any(|o| o.score.is_nan() || !o.weak.is_finite() || !o.strong.is_finite())
        {
            return None;
        }
        let n = items.len() as f64;
        let mut sorted: Vec<&Outcome> = items.iter().collect();
        sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
        let weak_correct: f64 = items.iter().map(|o| o.weak).sum();
        let mut correct = weak_correct;
        let mut points = vec![(0.0, correct / n)];
        let mut thresholds = vec![f64::INFINITY];
        let mut i = 0;
        while i < sorted.len() {
            let score = sorted[i].score;
            while i < sorted.len() && sorted[i].score == score {
                correct += sorted[i].strong - sorted[i].weak;
                i += 1;
            }
            points.push((i as f64 / n, correct / n));
            thresholds.push(score);
        }
        Some(Curve {
            weak: weak_correct / n,
            strong: items.iter().map(|o| o.strong).sum::<f64>() / n,
            points,
            thresholds,
        })
    }

    /// Performance gap recovered at a quality; `None` when both models score the same.
    pub fn pgr(&self, quality: f64) -> Option<f64> {
        let gap = self.strong - self.weak;
        (gap.abs() > f64::EPSILON).then(|| (quality - self.weak) / gap)
    }

    /// The area under PGR over the strong share (trapezoids between score boundaries: exact,
    /// since the curve is linear within a tied block).
    pub fn apgr(&self) -> Option<f64> {
        let mut area = 0.0;
        for w in self.points.windows(2) {
            let ((c0, q0), (c1, q1)) = (w[0], w[1]);
            area += (c1 - c0) * (self.pgr(q0)? + self.pgr(q1)?) / 2.0;
        }
        Some(area)
    }

    /// The smallest strong share whose PGR reaches `target` (0–1), interpolated within a
    /// block; `None` when the models tie.
    pub fn cpt(&self, target: f64) -> Option<f64> {
        let mut prev: Option<(f64, f64)> = None;
        for &(c, q) in &self.points {
            let p = self.pgr(q)?;
            if p >= target {
                return Some(match prev {
                    Some((c0, p0)) if p > p0 => c0 + (c - c0) * (target - p0) / (p - p0),
                    _ => c,
                });
            }
            prev = Some((c, p));
        }
        Some(1.0)
    }

    /// Quality at a strong share (linear between boundaries).
    pub fn quality_at(&self, share: f64) -> f64 {
        let share = share.clamp(0.0, 1.0);
        for w in self.points.windows(2) {
            let ((c0, q0), (c1, q1)) = (w[0], w[1]);
            if share <= c1 {
                return if c1 > c0 {
                    q0 + (q1 - q0) * (share - c0) / (c1 - c0)
                } else {
                    q1
                };
            }
        }
        self.strong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(score: f64, weak: bool, strong: bool) -> Outcome {
        Outcome::binary(score, weak, strong)
    }

    #[test]
    fn constant_score_is_the_random_line() {
        let items = [
            o(0.0, false, true),
            o(0.0, true, true),
            o(0.0, false, false),
            o(0.0, false, true),
        ];
        let c = Curve::new(&items).unwrap();
        assert_eq!(c.points, vec![(0.0, 0.25), (1.0, 0.75)]);
        assert!((c.apgr().unwrap() - 0.5).abs() < 1e-12);
        assert!((c.cpt(0.5).unwrap() - 0.5).abs() < 1e-12);
        assert!((c.quality_at(0.5) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn perfect_and_inverted_routers() {
        // Two prompts only the strong model solves, two both solve.
        let gain = |s| o(s, false, true);
        let both = |s| o(s, true, true);
        let perfect = Curve::new(&[gain(0.9), gain(0.8), both(0.2), both(0.1)]).unwrap();
        assert!((perfect.cpt(0.5).unwrap() - 0.25).abs() < 1e-12);
        // PGR: 0 → 0.5 → 1 over the first half (0.5 reached at a quarter), then flat at 1: area
        // 0.25 + 0.5. Inverted, the gains come last: 0.5 is reached at three quarters.
        assert!((perfect.apgr().unwrap() - 0.75).abs() < 1e-12);
        let inverted = Curve::new(&[gain(0.1), gain(0.2), both(0.8), both(0.9)]).unwrap();
        assert!((inverted.apgr().unwrap() - 0.25).abs() < 1e-12);
        assert!((inverted.cpt(0.5).unwrap() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn tied_models_have_no_gap() {
        let c = Curve::new(&[o(1.0, true, true), o(0.0, false, false)]).unwrap();
        assert_eq!(c.apgr(), None);
        assert_eq!(c.cpt(0.5), None);
        assert!(Curve::new(&[]).is_none());
        assert!(Curve::new(&[o(f64::NAN, true, false)]).is_none());
        assert!(
            Curve::new(&[Outcome {
                score: 1.0,
                weak: f64::NAN,
                strong: 1.0
            }])
            .is_none()
        );
    }

    // Graded qualities (a judge's 1–10): the same curve as RouteLLM's MT-Bench evaluation, the
    // mean score of the routed answers.
    #[test]
    fn graded_qualities() {
        let g = |score, weak, strong| Outcome { score, weak, strong };
        // Prompt a gains 4 points from the strong model, b gains 0, c loses 2.
        let c = Curve::new(&[g(0.9, 5.0, 9.0), g(0.5, 8.0, 8.0), g(0.1, 9.0, 7.0)]).unwrap();
        assert!((c.weak - 22.0 / 3.0).abs() < 1e-12 && (c.strong - 8.0).abs() < 1e-12);
        // PGR after each prompt: 4/2, 4/2, 2/2 (the gap is 2/3 of a point per prompt on average).
        let pgr: Vec<f64> = c.points.iter().map(|p| c.pgr(p.1).unwrap()).collect();
        assert_eq!(pgr.len(), 4);
        for (got, want) in pgr.iter().zip([0.0, 2.0, 2.0, 1.0]) {
            assert!((got - want).abs() < 1e-12, "{pgr:?}");
        }
        assert!((c.cpt(0.5).unwrap() - 1.0 / 12.0).abs() < 1e-12);
    }
}
