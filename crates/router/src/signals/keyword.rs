//! Keyword signal: literal keywords (escaped, word-bounded) or raw regexes, combined with
//! AND / OR / NOR. Every pattern is compiled once at config load.

use futures::future::{BoxFuture, FutureExt};
use llmsoup_rules::keyword::{Matcher, Operator, Rule};

use super::{Match, Signal, SignalError};
use crate::config::{KeywordMethod, KeywordOperator, KeywordRule, SignalKind};
use crate::request::RequestView;

/// Evaluates keyword rules with `llmsoup_rules::keyword`, the matcher the wasm filter runs too.
pub struct KeywordSignal {
    matcher: Matcher,
}

/// The shared matcher's view of a configured rule.
pub fn rule(rule: &KeywordRule) -> Rule<'_> {
    Rule {
        name: &rule.name,
        operator: match rule.operator {
            KeywordOperator::And => Operator::And,
            KeywordOperator::Or => Operator::Or,
            KeywordOperator::Nor => Operator::Nor,
        },
        keywords: &rule.keywords,
        regex: rule.method == KeywordMethod::Regex,
        case_sensitive: rule.case_sensitive,
    }
}

impl KeywordSignal {
    /// Compiles the rules; errors name the rule and the bad pattern.
    pub fn new(rules: &[KeywordRule]) -> Result<Self, String> {
        Ok(KeywordSignal {
            matcher: Matcher::new(rules.iter().map(rule))?,
        })
    }

    /// Synchronous evaluation (keyword matching never blocks).
    pub fn matches(&self, text: &str) -> Vec<Match> {
        self.matcher
            .matched(text)
            .map(|name| Match {
                kind: SignalKind::Keyword,
                name: name.clone(),
                confidence: 1.0,
            })
            .collect()
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
