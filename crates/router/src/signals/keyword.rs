//! Keyword signal: literal keywords (escaped, word-bounded) or raw regexes, combined with
//! AND / OR / NOR. Every pattern is compiled once at config load.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

use super::{Match, Signal, SignalError};
use crate::config::{KeywordMethod, KeywordOperator, KeywordRule, SignalKind};
use crate::request::RequestView;

struct CompiledRule {
    name: Arc<str>,
    operator: KeywordOperator,
    set: RegexSet,
}

/// Evaluates keyword rules.
pub struct KeywordSignal {
    rules: Vec<CompiledRule>,
}

/// Whether `\b` makes sense around a keyword: word boundaries need word characters at the
/// edges, and scripts written without spaces (CJK) have none between words.
fn boundable(keyword: &str) -> (bool, bool) {
    let is_cjk = |c: char| matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF);
    if keyword.chars().any(is_cjk) {
        return (false, false);
    }
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    (word(keyword.chars().next()), word(keyword.chars().last()))
}

fn literal_pattern(keyword: &str) -> String {
    let (start, end) = boundable(keyword);
    format!(
        "{}{}{}",
        if start { r"\b" } else { "" },
        regex::escape(keyword),
        if end { r"\b" } else { "" }
    )
}

impl KeywordSignal {
    /// Compiles the rules; errors name the rule and the bad pattern.
    pub fn new(rules: &[KeywordRule]) -> Result<Self, String> {
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            let patterns: Vec<String> = match rule.method {
                KeywordMethod::Literal => rule.keywords.iter().map(|k| literal_pattern(k)).collect(),
                KeywordMethod::Regex => rule.keywords.clone(),
            };
            for p in &patterns {
                // Compile one by one first so the error names the offending pattern.
                RegexBuilder::new(p)
                    .case_insensitive(!rule.case_sensitive)
                    .build()
                    .map_err(|e| format!("keyword rule `{}`: bad pattern `{p}`: {e}", rule.name))?;
            }
            let set = RegexSetBuilder::new(&patterns)
                .case_insensitive(!rule.case_sensitive)
                .build()
                .map_err(|e| format!("keyword rule `{}`: {e}", rule.name))?;
            compiled.push(CompiledRule {
                name: rule.name.as_str().into(),
                operator: rule.operator,
                set,
            });
        }
        Ok(KeywordSignal { rules: compiled })
    }

    /// Synchronous evaluation (keyword matching never blocks).
    pub fn matches(&self, text: &str) -> Vec<Match> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let hit = match rule.operator {
                KeywordOperator::Or => rule.set.is_match(text),
                KeywordOperator::And => rule.set.matches(text).matched_all(),
                KeywordOperator::Nor => !rule.set.is_match(text),
            };
            if hit {
                out.push(Match {
                    kind: SignalKind::Keyword,
                    name: rule.name.clone(),
                    confidence: 1.0,
                });
            }
        }
        out
    }
}

impl Signal for KeywordSignal {
    fn kind(&self) -> SignalKind {
        SignalKind::Keyword
    }

    fn evaluate<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Result<Vec<Match>, SignalError>> {
        futures::future::ready(Ok(self.matches(&req.text))).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, op: KeywordOperator, kws: &[&str], method: KeywordMethod, cs: bool) -> KeywordRule {
        KeywordRule {
            name: name.into(),
            operator: op,
            keywords: kws.iter().map(|s| s.to_string()).collect(),
            case_sensitive: cs,
            method,
            description: None,
        }
    }

    fn names(s: &KeywordSignal, text: &str) -> Vec<String> {
        s.matches(text).into_iter().map(|m| m.name.to_string()).collect()
    }

    #[test]
    fn or_and_nor() {
        let s = KeywordSignal::new(&[
            rule(
                "code",
                KeywordOperator::Or,
                &["python", "rust"],
                KeywordMethod::Literal,
                false,
            ),
            rule(
                "both",
                KeywordOperator::And,
                &["python", "rust"],
                KeywordMethod::Literal,
                false,
            ),
            rule(
                "clean",
                KeywordOperator::Nor,
                &["secret", "password"],
                KeywordMethod::Literal,
                false,
            ),
        ])
        .unwrap();
        assert_eq!(names(&s, "I like Python"), ["code", "clean"]);
        assert_eq!(names(&s, "python and RUST"), ["code", "both", "clean"]);
        assert_eq!(names(&s, "my password is"), Vec::<String>::new());
    }

    #[test]
    fn literal_is_escaped_and_word_bounded() {
        let s = KeywordSignal::new(&[
            rule("cpp", KeywordOperator::Or, &["c++"], KeywordMethod::Literal, false),
            rule("art", KeywordOperator::Or, &["art"], KeywordMethod::Literal, false),
        ])
        .unwrap();
        assert_eq!(names(&s, "write c++ code"), ["cpp"]);
        assert_eq!(names(&s, "cxx code"), Vec::<String>::new());
        assert_eq!(names(&s, "a smart start"), Vec::<String>::new());
        assert_eq!(names(&s, "modern art."), ["art"]);
    }

    #[test]
    fn case_sensitivity() {
        let s =
            KeywordSignal::new(&[rule("api", KeywordOperator::Or, &["API"], KeywordMethod::Literal, true)]).unwrap();
        assert_eq!(names(&s, "the API"), ["api"]);
        assert!(names(&s, "the api").is_empty());
    }

    #[test]
    fn regex_method_and_bad_pattern() {
        let s = KeywordSignal::new(&[rule(
            "ticket",
            KeywordOperator::Or,
            &[r"[A-Z]{2,5}-\d+"],
            KeywordMethod::Regex,
            true,
        )])
        .unwrap();
        assert_eq!(names(&s, "fix JIRA-1234 now"), ["ticket"]);
        let err = KeywordSignal::new(&[rule(
            "bad",
            KeywordOperator::Or,
            &["(unclosed"],
            KeywordMethod::Regex,
            false,
        )])
        .err()
        .unwrap();
        assert!(err.contains("bad") && err.contains("(unclosed"), "{err}");
    }

    #[test]
    fn cjk_keywords_match_without_boundaries() {
        let s = KeywordSignal::new(&[rule(
            "zh",
            KeywordOperator::Or,
            &["代码"],
            KeywordMethod::Literal,
            false,
        )])
        .unwrap();
        assert_eq!(names(&s, "请帮我写代码吧"), ["zh"]);
    }
}
