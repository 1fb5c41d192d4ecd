//! Keyword rules: literal keywords (escaped, word-bounded where the keyword's edges are word
//! characters, never for CJK) or raw regexes, combined with AND / OR / NOR, case-insensitive
//! unless asked. Every pattern is compiled once.

use std::sync::Arc;

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

/// How a rule combines its keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// Every keyword.
    And,
    /// Any keyword.
    Or,
    /// No keyword.
    Nor,
}

/// One rule to compile.
#[derive(Debug, Clone, Copy)]
pub struct Rule<'a> {
    /// Rule name.
    pub name: &'a str,
    /// How the keywords combine.
    pub operator: Operator,
    /// The keywords, or patterns when `regex`.
    pub keywords: &'a [String],
    /// `keywords` are regexes (`method: regex`), not literals.
    pub regex: bool,
    /// Match case exactly.
    pub case_sensitive: bool,
}

struct Compiled {
    name: Arc<str>,
    operator: Operator,
    set: RegexSet,
}

/// Compiled keyword rules.
pub struct Matcher {
    rules: Vec<Compiled>,
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

impl Matcher {
    /// Compiles the rules; errors name the rule and the bad pattern.
    pub fn new<'a>(rules: impl IntoIterator<Item = Rule<'a>>) -> Result<Self, String> {
        let mut compiled = Vec::new();
        for rule in rules {
            let patterns: Vec<String> = if rule.regex {
                rule.keywords.to_vec()
            } else {
                rule.keywords.iter().map(|k| literal_pattern(k)).collect()
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
            compiled.push(Compiled {
                name: rule.name.into(),
                operator: rule.operator,
                set,
            });
        }
        Ok(Matcher { rules: compiled })
    }

    /// The names of the rules `text` matches, in rule order.
    pub fn matched<'s>(&'s self, text: &'s str) -> impl Iterator<Item = &'s Arc<str>> + 's {
        self.rules.iter().filter_map(move |rule| {
            let hit = match rule.operator {
                Operator::Or => rule.set.is_match(text),
                Operator::And => rule.set.matches(text).matched_all(),
                Operator::Nor => !rule.set.is_match(text),
            };
            hit.then_some(&rule.name)
        })
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(m: &Matcher, text: &str) -> Vec<String> {
        m.matched(text).map(|n| n.to_string()).collect()
    }

    fn kws(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn operators_literals_case_and_cjk() {
        let (code, secret, cpp, api, zh, ticket) = (
            kws(&["python", "rust"]),
            kws(&["secret", "password"]),
            kws(&["c++"]),
            kws(&["API"]),
            kws(&["代码"]),
            kws(&[r"[A-Z]{2,5}-\d+"]),
        );
        let rule = |name, operator, keywords, regex, case_sensitive| Rule {
            name,
            operator,
            keywords,
            regex,
            case_sensitive,
        };
        let m = Matcher::new([
            rule("code", Operator::Or, &code, false, false),
            rule("both", Operator::And, &code, false, false),
            rule("clean", Operator::Nor, &secret, false, false),
            rule("cpp", Operator::Or, &cpp, false, false),
            rule("api", Operator::Or, &api, false, true),
            rule("zh", Operator::Or, &zh, false, false),
            rule("ticket", Operator::Or, &ticket, true, true),
        ])
        .unwrap();
        assert_eq!(names(&m, "I like Python"), ["code", "clean"]);
        assert_eq!(names(&m, "python and RUST, my password"), ["code", "both"]);
        assert_eq!(names(&m, "write c++ for the API"), ["clean", "cpp", "api"]);
        assert_eq!(names(&m, "the api, rusty"), ["clean"]);
        assert_eq!(names(&m, "请帮我写代码吧 JIRA-12"), ["clean", "zh", "ticket"]);
        let bad = kws(&["(unclosed"]);
        let err = Matcher::new([rule("bad", Operator::Or, &bad, true, false)])
            .err()
            .unwrap();
        assert!(err.contains("bad") && err.contains("(unclosed"), "{err}");
    }
}
