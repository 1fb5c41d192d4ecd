//! Language signal: whatlang's detector, reported as ISO-639-1 codes.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};

use super::{Match, Signal, SignalError};
use crate::config::{LanguageRule, SignalKind};
use crate::request::RequestView;

/// Default minimum detector confidence, as in vLLM Semantic Router.
const DEFAULT_THRESHOLD: f64 = 0.3;
/// Detection cost grows with text length and a prefix decides the language just as well.
const MAX_DETECT_BYTES: usize = 2048;

/// Evaluates language rules.
pub struct LanguageSignal {
    rules: Vec<(Arc<str>, f64)>,
}

/// Detects the language of `text`: (ISO-639-1 code, confidence).
pub fn detect(text: &str) -> Option<(&'static str, f64)> {
    let mut end = text.len().min(MAX_DETECT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let info = whatlang::detect(&text[..end])?;
    // whatlang names Mandarin `cmn`, which has no ISO-639-1 code of its own; users write `zh`.
    let code = match info.lang() {
        whatlang::Lang::Cmn => "zh",
        lang => isolang::Language::from_639_3(lang.code())?.to_639_1()?,
    };
    Some((code, info.confidence()))
}

impl LanguageSignal {
    /// Builds the evaluator.
    pub fn new(rules: &[LanguageRule]) -> Self {
        LanguageSignal {
            rules: rules
                .iter()
                .map(|r| {
                    (
                        r.name.to_ascii_lowercase().into(),
                        r.threshold.unwrap_or(DEFAULT_THRESHOLD),
                    )
                })
                .collect(),
        }
    }

    /// Rules naming the detected language with enough confidence.
    pub fn matches(&self, text: &str) -> Vec<Match> {
        let Some((code, confidence)) = detect(text) else {
            return Vec::new();
        };
        self.rules
            .iter()
            .filter(|(name, threshold)| &**name == code && confidence >= *threshold)
            .map(|(name, _)| Match {
                kind: SignalKind::Language,
                name: name.clone(),
                confidence,
            })
            .collect()
    }
}

impl Signal for LanguageSignal {
    fn kind(&self) -> SignalKind {
        SignalKind::Language
    }

    fn evaluate<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Result<Vec<Match>, SignalError>> {
        futures::future::ready(Ok(self.matches(&req.text))).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_common_languages() {
        assert_eq!(
            detect("Bonjour, pouvez-vous m'aider à écrire une lettre de motivation ?")
                .unwrap()
                .0,
            "fr"
        );
        assert_eq!(
            detect("Hola, ¿me puedes ayudar a escribir una carta de presentación?")
                .unwrap()
                .0,
            "es"
        );
        assert_eq!(
            detect("Please help me write a cover letter for a job application.")
                .unwrap()
                .0,
            "en"
        );
        assert_eq!(
            detect("Können Sie mir bitte helfen, einen Brief zu schreiben?")
                .unwrap()
                .0,
            "de"
        );
    }

    #[test]
    fn threshold_filters_low_confidence() {
        let rules = [LanguageRule {
            name: "fr".into(),
            threshold: Some(1.01),
            description: None,
        }];
        assert!(
            LanguageSignal::new(&rules)
                .matches("Bonjour, comment allez-vous aujourd'hui ?")
                .is_empty()
        );
        let rules = [LanguageRule {
            name: "fr".into(),
            threshold: None,
            description: None,
        }];
        let m = LanguageSignal::new(&rules)
            .matches("Bonjour, comment allez-vous aujourd'hui ? Je voudrais réserver une table.");
        assert_eq!(m.len(), 1);
        assert!(m[0].confidence > 0.3);
    }
}
