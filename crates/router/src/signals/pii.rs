//! PII signal (vLLM Semantic Router `pii`): pattern recognizers for personal data. Every
//! candidate goes through a validator (Luhn and issuer prefixes for cards, ISO 7064 mod-97 and
//! the country format for IBANs, SSA allocation rules for SSNs, address parsing for IPs, digit
//! counts and numbering-plan rules for phones) so that order numbers, versions and dates do not
//! count. A rule matches when a type outside its `pii_types_allowed` is found with confidence at
//! or above its threshold. Findings leave this module as types, counts and confidences only:
//! the personal data itself is never logged or reported.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use futures::future::{BoxFuture, FutureExt};
use regex::{Regex, RegexSet};

use super::{Match, Signal, SignalError};
use crate::config::{PiiRule, SignalKind};
use crate::request::RequestView;

/// Confidence a rule needs when its `threshold` is not set.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// The PII types this signal recognizes, named as in vLLM Semantic Router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PiiType {
    /// An e-mail address.
    EmailAddress,
    /// A phone number (international `+` form, North American, or national with a trunk `0`).
    PhoneNumber,
    /// A payment card number.
    CreditCard,
    /// An International Bank Account Number.
    IbanCode,
    /// A US Social Security number.
    UsSsn,
    /// An IPv4 or IPv6 address.
    IpAddress,
}

impl PiiType {
    /// vSR's name for the type (the vocabulary of `pii_types_allowed`).
    pub fn as_str(self) -> &'static str {
        match self {
            PiiType::EmailAddress => "EMAIL_ADDRESS",
            PiiType::PhoneNumber => "PHONE_NUMBER",
            PiiType::CreditCard => "CREDIT_CARD",
            PiiType::IbanCode => "IBAN_CODE",
            PiiType::UsSsn => "US_SSN",
            PiiType::IpAddress => "IP_ADDRESS",
        }
    }

    /// The type with vSR name `name`, if this signal recognizes it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "EMAIL_ADDRESS" => PiiType::EmailAddress,
            "PHONE_NUMBER" => PiiType::PhoneNumber,
            "CREDIT_CARD" => PiiType::CreditCard,
            "IBAN_CODE" => PiiType::IbanCode,
            "US_SSN" => PiiType::UsSsn,
            "IP_ADDRESS" => PiiType::IpAddress,
            _ => return None,
        })
    }
}

/// One piece of personal data: where it is and how sure the recognizer is (never its text).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// What kind of data it is.
    pub kind: PiiType,
    /// Byte range in the scanned text.
    pub span: Range<usize>,
    /// Recognizer confidence in 0..=1.
    pub confidence: f32,
}

/// Checks a regex candidate in its context; returns the (possibly trimmed) span and confidence.
type Validator = fn(&str, Range<usize>) -> Option<(Range<usize>, f32)>;

struct Recognizer {
    kind: PiiType,
    regex: Regex,
    validate: Validator,
}

/// Every recognizer, compiled once; a `RegexSet` pass tells which of them can match at all, so
/// a prompt without personal data costs one scan, not one per type.
pub struct PiiScanner {
    set: RegexSet,
    recognizers: Vec<Recognizer>,
}

const EMAIL: &str = r"(?i)\b[a-z0-9][a-z0-9._%+-]{0,63}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}\b";
const PHONE_INTERNATIONAL: &str = r"\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}";
const PHONE_NANP: &str = r"(?:\+?1[ .-]?)?(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b";
const PHONE_NATIONAL: &str = r"\b0\d{1,4}[ -]\d{3,4}[ -]?\d{3,4}\b";
const CARD: &str = r"\b\d(?:[ -]?\d){12,18}\b";
const IBAN: &str = r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b";
const SSN: &str = r"\b\d{3}[- ]\d{2}[- ]\d{4}\b";
const IPV4: &str = r"\b(?:\d{1,3}\.){3}\d{1,3}\b";
const IPV6: &str = r"(?i)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}";

static SCANNER: LazyLock<PiiScanner> = LazyLock::new(PiiScanner::new);

impl PiiScanner {
    fn new() -> Self {
        let table: [(PiiType, &str, Validator); 9] = [
            (PiiType::EmailAddress, EMAIL, valid_email),
            (PiiType::PhoneNumber, PHONE_INTERNATIONAL, valid_international_phone),
            (PiiType::PhoneNumber, PHONE_NANP, valid_nanp_phone),
            (PiiType::PhoneNumber, PHONE_NATIONAL, valid_national_phone),
            (PiiType::CreditCard, CARD, valid_card),
            (PiiType::IbanCode, IBAN, valid_iban),
            (PiiType::UsSsn, SSN, valid_ssn),
            (PiiType::IpAddress, IPV4, valid_ipv4),
            (PiiType::IpAddress, IPV6, valid_ipv6),
        ];
        // The patterns are constants covered by the tests below, so a compile error is a bug.
        let set = RegexSet::new(table.iter().map(|(_, p, _)| p)).expect("PII patterns compile");
        let recognizers = table
            .into_iter()
            .map(|(kind, p, validate)| Recognizer {
                kind,
                regex: Regex::new(p).expect("PII patterns compile"),
                validate,
            })
            .collect();
        PiiScanner { set, recognizers }
    }

    /// The process-wide scanner (its patterns do not depend on the config).
    pub fn shared() -> &'static PiiScanner {
        &SCANNER
    }

    /// Every validated finding in `text`; where candidates overlap (a card number inside an
    /// IBAN, `+1` phones), the more confident and then the longer one wins.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        for i in self.set.matches(text).iter() {
            let r = &self.recognizers[i];
            for m in r.regex.find_iter(text) {
                if let Some((span, confidence)) = (r.validate)(text, m.range()) {
                    found.push(Finding {
                        kind: r.kind,
                        span,
                        confidence,
                    });
                }
            }
        }
        found.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then((b.span.end - b.span.start).cmp(&(a.span.end - a.span.start)))
                .then(a.span.start.cmp(&b.span.start))
        });
        let mut kept: Vec<Finding> = Vec::with_capacity(found.len());
        for f in found {
            if !kept
                .iter()
                .any(|k| k.span.start < f.span.end && f.span.start < k.span.end)
            {
                kept.push(f);
            }
        }
        kept.sort_by_key(|f| f.span.start);
        kept
    }

    /// Per type: how many were found and the best confidence.
    pub fn summary(&self, text: &str) -> BTreeMap<PiiType, (usize, f32)> {
        let mut out: BTreeMap<PiiType, (usize, f32)> = BTreeMap::new();
        for f in self.scan(text) {
            let e = out.entry(f.kind).or_insert((0, 0.0));
            e.0 += 1;
            e.1 = e.1.max(f.confidence);
        }
        out
    }
}

/// The character before `span`, if any.
fn before(text: &str, span: &Range<usize>) -> Option<char> {
    text[..span.start].chars().next_back()
}

/// The character after `span`, if any.
fn after(text: &str, span: &Range<usize>) -> Option<char> {
    text[span.end..].chars().next()
}

/// Whether a number stands alone: `\b` alone accepts `1.2.3.4` inside `1.2.3.4.5`, a card
/// inside `4111-1111-1111-1111-22` or an SSN inside the product code `ABC-536-22-1234-X`, so a
/// separator that continues a digit run (or, for `-`, any word) rejects it too. A `/` or `:`
/// next to a word is left alone: `http://10.0.0.1/path`, `ssn:536-22-1234`.
fn isolated(text: &str, span: &Range<usize>) -> bool {
    let continues = |c: Option<char>, next: Option<char>| match c {
        Some(c) if c.is_alphanumeric() || c == '_' => true,
        Some('-') => next.is_some_and(char::is_alphanumeric),
        Some('.' | '/' | ':' | ',') => next.is_some_and(|n| n.is_ascii_digit()),
        _ => false,
    };
    let mut back = text[..span.start].chars().rev();
    let (b1, b2) = (back.next(), back.next());
    let mut fwd = text[span.end..].chars();
    let (a1, a2) = (fwd.next(), fwd.next());
    !continues(b1, b2) && !continues(a1, a2)
}

/// The word right before `span` (lowercase), to recognise labels such as `version` or `order`.
fn preceding_word(text: &str, span: &Range<usize>) -> String {
    text[..span.start]
        .trim_end_matches(|c: char| c.is_whitespace() || matches!(c, ':' | '#' | '=' | '(' | '.'))
        .rsplit(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_lowercase()
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn valid_email(text: &str, span: Range<usize>) -> Option<(Range<usize>, f32)> {
    let s = &text[span.clone()];
    let (local, domain) = s.split_once('@')?;
    // RFC 5321 limits, and dots may neither repeat nor end the local part.
    let ok = s.len() <= 254
        && local.len() <= 64
        && !local.contains("..")
        && !local.ends_with('.')
        && !domain.split('.').any(|l| l.starts_with('-') || l.ends_with('-'));
    ok.then_some((span, 1.0))
}

fn valid_international_phone(text: &str, span: Range<usize>) -> Option<(Range<usize>, f32)> {
    // `3+4 5678 9012` is arithmetic, not a phone number.
    if before(text, &span).is_some_and(|c| c.is_alphanumeric()) || !isolated(text, &span) {
        return None;
    }
    // E.164 allows at most 15 digits; fewer than 8 is a short code or a sum.
    let n = digits(&text[span.clone()]).len();
    (8..=15).contains(&n).then_some((span, 0.85))
}

fn valid_nanp_phone(text: &str, span: Range<usize>) -> Option<(Range<usize>, f32)> {
    if !isolated(text, &span) {
        return None;
    }
    let d = digits(&text[span.clone()]);
    let d = d.strip_prefix('1').filter(|_| d.len() == 11).unwrap_or(&d);
    let b = d.as_bytes();
    // North American numbering plan: area code and exchange start with 2-9.
    (b.len() == 10 && b[0] >= b'2' && b[3] >= b'2').then_some((span, 0.75))
}

fn valid_national_phone(text: &str, span: Range<usize>) -> Option<(Range<usize>, f32)> {
    if !isolated(text, &span) {
        return None;
    }
    // A trunk `0` plus 9 or 10 digits (UK, DE, FR, AU...): looser evidence than `+`.
    let n = digits(&text[span.clone()]).len();
    (10..=11).contains(&n).then_some((span, 0.6))
}

fn valid_card(text: &str, span: Range<usize>) -> Option<(Range<usize>, f32)> {
    if !isolated(text, &span) {
        return None;
    }
    let s = &text[span.clone()];
    let d = digits(s);
    // Printed card numbers are either unbroken or grouped by one separator (4-4-4-4, 4-6-5).
    let seps: Vec<char> = s.chars().filter(|c| !c.is_ascii_digit()).collect();
    if seps.windows(2).any(|w| w[0] != w[1]) {
        return None;
    }
    if !seps.is_empty() {
        let groups: Vec<usize> = s.split([' ', '-']).map(str::len).collect();
        let grouped = groups.iter().all(|&g| (3..=6).contains(&g)) || matches!(groups.as_slice(), [4, 4, 4, 4, 1..=3]);
        if !grouped {
            return None;
        }
    }
    let first = d.as_bytes()[0];
    if d.bytes().all(|b| b == first) || !known_issuer(&d) || !luhn::valid(&d) {
        return None;
    }
    Some((span, 1.0))
}

/// Issuer identification number ranges of the networks whose numbers people paste: a Luhn
/// check alone passes one random digit string in ten.
fn known_issuer(d: &str) -> bool {
    let p = |n: usize| d[..n].parse::<u32>().unwrap_or(0);
    let len = d.len();
    match d.as_bytes()[0] {
        b'4' => matches!(len, 13 | 16 | 19),
        b'5' => (51..=55).contains(&p(2)) && len == 16 || (50..=59).contains(&p(2)) && (12..=19).contains(&len),
        b'2' => (2221..=2720).contains(&p(4)) && len == 16,
        b'3' => {
            matches!(p(2), 34 | 37) && len == 15
                || (300..=305).contains(&p(3)) && len == 14
                || matches!(p(2), 36 | 38 | 39) && (14..=19).contains(&len)
                || (3528..=3589).contains(&p(4)) && (16..=19).contains(&len)
        }
        b'6' => {
            (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3)) || p(2) == 62 || p(2) == 67)
                && (16..=19).contains(&len)
        }
        _ => false,
    }
}

fn valid_iban(text: &str, span: Range<usize>) -> Option<(Range<usize>, f32)> {
    // The pattern may run on into a following upper-case word (`... 00 AND`), so try the
    // longest prefix ending at a group boundary that parses.
    let s = &text[span.clone()];
    let ends = s
        .char_indices()
        .filter(|&(i, c)| c != ' ' && s[i + c.len_utf8()..].starts_with(' '))
        .map(|(i, c)| i + c.len_utf8())
        .chain([s.len()]);
    let mut ends: Vec<usize> = ends.collect();
    ends.sort_unstable_by(|a, b| b.cmp(a));
    ends.into_iter().find_map(|end| {
        let cand = &s[..end];
        let compact: String = cand.chars().filter(|c| *c != ' ').collect();
        (compact.len() >= 15 && compact.parse::<iban::Iban>().is_ok()).then(|| (span.start..span.start + end, 1.0))
    })
}

fn valid_ssn(text: &str, span: Range<usize>) -> Option<(Range<usize>, f32)> {
    if !isolated(text, &span) || before(text, &span) == Some('#') {
        return None;
    }
    let s = &text[span.clone()];
    if s.as_bytes()[3] != s.as_bytes()[6] {
        return None;
    }
    if matches!(
        preceding_word(text, &span).as_str(),
        "order" | "invoice" | "ref" | "reference" | "ticket" | "case" | "no" | "number"
    ) {
        return None;
    }
    let d = digits(s);
    let (area, group, serial) = (&d[..3], &d[3..5], &d[5..]);
    // Never issued: area 000, 666 and 900-999, group 00, serial 0000; and the digits of the
    // famous example numbers that appear in documentation.
    let issued = area != "000" && area != "666" && area < "900" && group != "00" && serial != "0000";
    (issued && d != "123456789" && d != "078051120").then_some((span, 0.85))
}

fn valid_ipv4(text: &str, span: Range<usize>) -> Option<(Range<usize>, f32)> {
    if !isolated(text, &span) {
        return None;
    }
    if matches!(
        preceding_word(text, &span).as_str(),
        "version" | "v" | "ver" | "release" | "build" | "python" | "node" | "rust" | "go" | "java"
    ) {
        return None;
    }
    // The standard parser rejects out-of-range and zero-padded octets.
    let ip: Ipv4Addr = text[span.clone()].parse().ok()?;
    Some((span, ip_confidence(IpAddr::V4(ip))))
}

fn valid_ipv6(text: &str, span: Range<usize>) -> Option<(Range<usize>, f32)> {
    let s = &text[span.clone()];
    // Rust paths (`d::io`) and clock times parse or nearly do; a real address has digits and
    // stands apart from identifiers.
    let hexish = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
    if hexish(before(text, &span)) || hexish(after(text, &span)) || !s.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let ip: Ipv6Addr = s.parse().ok()?;
    Some((span, ip_confidence(IpAddr::V6(ip))))
}

/// Loopback, unspecified and broadcast addresses name no one, so they stay below the default
/// threshold.
fn ip_confidence(ip: IpAddr) -> f32 {
    let generic = ip.is_loopback() || ip.is_unspecified() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if generic { 0.4 } else { 0.95 }
}

struct Rule {
    name: Arc<str>,
    allowed: Vec<PiiType>,
    threshold: f32,
    include_history: bool,
}

/// Evaluates PII rules.
pub struct PiiSignal {
    scanner: &'static PiiScanner,
    rules: Vec<Rule>,
}

/// What the scan found in one request, by type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PiiVerdict {
    /// Types in the scanned turn: count and best confidence.
    pub text: BTreeMap<PiiType, (usize, f32)>,
    /// Types in earlier user turns (scanned only when some rule includes history).
    pub history: BTreeMap<PiiType, (usize, f32)>,
}

impl PiiSignal {
    /// Builds the evaluator; allowed type names the scanner does not recognize are ignored.
    pub fn new(rules: &[PiiRule]) -> Self {
        PiiSignal {
            scanner: PiiScanner::shared(),
            rules: rules
                .iter()
                .map(|r| Rule {
                    name: r.name.as_str().into(),
                    allowed: r
                        .pii_types_allowed
                        .iter()
                        .filter_map(|t| PiiType::from_name(t))
                        .collect(),
                    threshold: r.threshold.unwrap_or(DEFAULT_THRESHOLD),
                    include_history: r.include_history,
                })
                .collect(),
        }
    }

    /// Scans the request (history only when a rule asks for it).
    pub fn verdict(&self, req: &RequestView) -> PiiVerdict {
        let history = if self.rules.iter().any(|r| r.include_history) && !req.history.is_empty() {
            self.scanner.summary(&req.history)
        } else {
            BTreeMap::new()
        };
        PiiVerdict {
            text: self.scanner.summary(&req.text),
            history,
        }
    }

    /// For each rule, the disallowed types found and the best confidence among them.
    fn judge(&self, v: &PiiVerdict) -> Vec<(&Rule, Vec<PiiType>, f32)> {
        self.rules
            .iter()
            .map(|r| {
                let mut found: BTreeMap<PiiType, f32> = BTreeMap::new();
                let sources = std::iter::once(&v.text).chain(r.include_history.then_some(&v.history));
                for (kind, (_, conf)) in sources.flatten() {
                    if !r.allowed.contains(kind) && *conf >= r.threshold {
                        let e = found.entry(*kind).or_insert(0.0);
                        *e = e.max(*conf);
                    }
                }
                let best = found.values().copied().fold(0.0, f32::max);
                (r, found.into_keys().collect(), best)
            })
            .collect()
    }

    /// Synchronous evaluation (pattern matching never blocks).
    pub fn matches(&self, req: &RequestView) -> Vec<Match> {
        let v = self.verdict(req);
        self.judge(&v)
            .into_iter()
            .filter(|(_, types, _)| !types.is_empty())
            .map(|(r, _, conf)| Match {
                kind: SignalKind::Pii,
                name: r.name.clone(),
                confidence: f64::from(conf),
            })
            .collect()
    }
}

fn summary_json(m: &BTreeMap<PiiType, (usize, f32)>) -> serde_json::Value {
    m.iter()
        .map(|(k, (n, c))| (k.as_str().to_string(), serde_json::json!({"count": n, "confidence": c})))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl Signal for PiiSignal {
    fn kind(&self) -> SignalKind {
        SignalKind::Pii
    }

    fn evaluate<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Result<Vec<Match>, SignalError>> {
        futures::future::ready(Ok(self.matches(req))).boxed()
    }

    fn explain<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Option<serde_json::Value>> {
        let v = self.verdict(req);
        let rules: serde_json::Map<_, _> = self
            .judge(&v)
            .into_iter()
            .map(|(r, types, conf)| {
                let types: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
                let value = serde_json::json!({"matched": !types.is_empty(), "confidence": conf, "types": types});
                (r.name.to_string(), value)
            })
            .collect();
        let mut out = serde_json::json!({"found": summary_json(&v.text), "rules": rules});
        if !v.history.is_empty() {
            out["history"] = summary_json(&v.history);
        }
        futures::future::ready(Some(out)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(text: &str) -> Vec<&'static str> {
        let mut t: Vec<&str> = PiiScanner::shared()
            .scan(text)
            .iter()
            .map(|f| f.kind.as_str())
            .collect();
        t.dedup();
        t
    }

    #[track_caller]
    fn found(kind: &str, positives: &[&str], negatives: &[&str]) {
        for p in positives {
            assert!(types(p).contains(&kind), "{kind} not found in {p:?}: {:?}", types(p));
        }
        for n in negatives {
            assert!(!types(n).contains(&kind), "{kind} wrongly found in {n:?}");
        }
    }

    #[test]
    fn emails() {
        found(
            "EMAIL_ADDRESS",
            &[
                "mail jane.doe@example.com please",
                "Contact: J.Smith+news@mail.example.co.uk.",
            ],
            &[
                "ping @jane on slack",
                "npm install left-pad@1.3.0",
                "user@localhost",
                "jane..doe@example.com",
                "a@-bad.example.com",
            ],
        );
    }

    #[test]
    fn phone_numbers() {
        found(
            "PHONE_NUMBER",
            &[
                "call me at +1 415 555 2671",
                "our London office: +44 20 7946 0958",
                "(415) 555-2671 is my cell",
                "reach me on 415-555-2671.",
                "ring 020 7946 0958 tomorrow",
                "Tel. +49 (30) 901820",
            ],
            &[
                "released on 2024-01-15 at 10:30",
                "call 123-456-7890",
                "x = 3+4 + 5",
                "version 1.2.3",
                "order 12345678",
                "see chapter 041-2",
                "+1 2 3",
            ],
        );
    }

    #[test]
    fn credit_cards_need_luhn_and_a_known_issuer() {
        found(
            "CREDIT_CARD",
            &[
                "my card is 4111 1111 1111 1111",
                "4111-1111-1111-1111 exp 12/27",
                "5500000000000004",
                "amex 3782 822463 10005",
                "discover 6011 1111 1111 1117",
            ],
            &[
                "card 4111 1111 1111 1112",
                "0000 0000 0000 0000",
                "tracking number 1234567890123452",
                "4111 1111-1111 1111",
                "order 9999999999999995",
                "4111-1111-1111-1111-2222-3",
            ],
        );
    }

    #[test]
    fn ibans_need_mod97_and_the_country_format() {
        found(
            "IBAN_CODE",
            &[
                "pay to GB82 WEST 1234 5698 7654 32 today",
                "IBAN DE89370400440532013000",
                "DE89 3704 0044 0532 0130 00 AND THEN",
            ],
            &[
                "GB82 WEST 1234 5698 7654 33",
                "DE00370400440532013000",
                "XX89370400440532013000",
                "the SKU AB12CDEF34567890 is out",
            ],
        );
        // The card-like digits inside an IBAN are not reported as a second type.
        assert_eq!(types("IBAN DE89370400440532013000"), ["IBAN_CODE"]);
    }

    #[test]
    fn us_ssns_follow_allocation_rules() {
        found(
            "US_SSN",
            &["my SSN is 536-22-1234", "ssn: 401 55 9012"],
            &[
                "000-12-3456",
                "666-12-3456",
                "912-12-3456",
                "536-00-1234",
                "536-22-0000",
                "536-22 1234",
                "order #536-22-1234",
                "invoice 536-22-1234",
                "123-45-6789",
                "call 555-12-34567",
                "part ABC-536-22-1234-X",
            ],
        );
    }

    #[test]
    fn ip_addresses() {
        found(
            "IP_ADDRESS",
            &[
                "the server at 192.168.1.20 is down",
                "open http://10.1.2.3/admin",
                "dns 8.8.8.8",
                "host 2001:db8::8a2e:370:7334 refused",
                "fe80::1ff:fe23:4567:890a%eth0",
            ],
            &[
                "version 1.2.3.4",
                "upgrade to v1.2.3.4",
                "1.2.3.4.5",
                "999.1.1.1",
                "010.1.1.1",
                "Python 3.11.2",
                "at 12:30:45",
                "use std::io",
                "dead::beef",
                "a::b::c",
            ],
        );
        let f = PiiScanner::shared().scan("bind 127.0.0.1 and ::1");
        assert!(f.iter().all(|f| f.confidence < DEFAULT_THRESHOLD), "{f:?}");
    }

    #[test]
    fn ordinary_text_has_no_pii() {
        for text in [
            "What is the capital of France?",
            "Write a Python function that returns the nth Fibonacci number.",
            "Meeting moved to 2024-03-05 14:00; room 4.12, budget $12,500.00.",
            "Compare Rust 1.83.0 with Go 1.22 for a 10 Gbit/s proxy.",
            "ISBN 978-3-16-148410-0 and DOI 10.1000/182",
        ] {
            assert_eq!(types(text), Vec::<&str>::new(), "{text}");
        }
    }

    #[test]
    fn findings_carry_spans_not_text() {
        let text = "mail a@b.io or call +44 20 7946 0958";
        let f = PiiScanner::shared().scan(text);
        assert_eq!(f.len(), 2);
        assert_eq!(&text[f[0].span.clone()], "a@b.io");
        assert_eq!(&text[f[1].span.clone()], "+44 20 7946 0958");
    }

    fn rule(name: &str, allowed: &[&str], threshold: Option<f32>, include_history: bool) -> PiiRule {
        PiiRule {
            name: name.into(),
            pii_types_allowed: allowed.iter().map(|s| s.to_string()).collect(),
            threshold,
            include_history,
            description: None,
        }
    }

    fn names(s: &PiiSignal, req: &RequestView) -> Vec<String> {
        s.matches(req).into_iter().map(|m| m.name.to_string()).collect()
    }

    #[test]
    fn rules_honour_allowed_types_threshold_and_history() {
        let s = PiiSignal::new(&[
            rule("any", &[], None, false),
            rule("no_cards", &["EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON"], None, false),
            rule("strict", &[], Some(0.9), false),
            rule("whole_chat", &[], None, true),
        ]);
        let req = RequestView::from_text("write to jane@example.com");
        assert_eq!(names(&s, &req), ["any", "strict", "whole_chat"]);
        let req = RequestView::from_text("call +44 20 7946 0958");
        assert_eq!(
            names(&s, &req),
            ["any", "whole_chat"],
            "0.85 is below the strict threshold"
        );
        let req = RequestView::from_text("charge 4111 1111 1111 1111");
        let m = s.matches(&req);
        assert_eq!(m.len(), 4);
        assert!(m.iter().all(|m| m.confidence == 1.0));
        let mut req = RequestView::from_text("and what is the weather?");
        assert!(names(&s, &req).is_empty());
        req.history = "my SSN is 536-22-1234".into();
        assert_eq!(names(&s, &req), ["whole_chat"]);
    }

    #[tokio::test]
    async fn explain_reports_types_and_confidence_without_the_data() {
        let s = PiiSignal::new(&[rule("no_cards", &["EMAIL_ADDRESS"], None, false)]);
        let req = RequestView::from_text("mail jane@example.com, card 4111 1111 1111 1111");
        let v = s.explain(&req).await.unwrap();
        assert_eq!(v["found"]["CREDIT_CARD"]["count"], 1);
        assert_eq!(v["found"]["EMAIL_ADDRESS"]["confidence"], 1.0);
        assert_eq!(v["rules"]["no_cards"]["types"], serde_json::json!(["CREDIT_CARD"]));
        assert_eq!(v["rules"]["no_cards"]["matched"], true);
        let out = v.to_string();
        assert!(!out.contains("jane") && !out.contains("4111"), "{out}");
    }

    #[test]
    fn every_recognized_type_is_a_vsr_type() {
        for t in [
            PiiType::EmailAddress,
            PiiType::PhoneNumber,
            PiiType::CreditCard,
            PiiType::IbanCode,
            PiiType::UsSsn,
            PiiType::IpAddress,
        ] {
            assert!(crate::config::PII_TYPES.contains(&t.as_str()));
            assert_eq!(PiiType::from_name(t.as_str()), Some(t));
        }
    }

    #[tokio::test]
    async fn decisions_reference_pii_rules() {
        let text = "
providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]
models:
  - {name: general, provider: p}
  - {name: private, provider: p}
signals:
  pii:
    - {name: payment_data, pii_types_allowed: [EMAIL_ADDRESS, PHONE_NUMBER]}
    - {name: unused, pii_types_allowed: []}
decisions:
  - {name: sensitive, priority: 10, rules: {type: pii, name: payment_data}, modelRefs: [{model: private}]}
routing: {default_model: general}
";
        let e = crate::engine::Engine::new(crate::config::load_str_with_env(text, &|_| None).unwrap()).unwrap();
        let routed = |t: &str| {
            let e = &e;
            let view = RequestView::from_text(t);
            async move { e.route(&view).await.unwrap() }
        };
        let r = routed("refund to DE89 3704 0044 0532 0130 00 please").await;
        assert_eq!((r.model.as_str(), r.matches.len()), ("private", 1), "{:?}", r.matches);
        assert_eq!(r.matches[0].name.as_ref(), "payment_data");
        for t in ["email me at jane@example.com", "my order 1234-5678-9012-3456 is late"] {
            assert_eq!(routed(t).await.model, "general", "{t}");
        }
        assert!(
            e.explain(&RequestView::from_text("x")).await.get("pii").is_some(),
            "only referenced rules are built, and they explain themselves"
        );
    }

    /// Precision and recall per type on `tests/data/pii-eval.jsonl` (hand-written: real formats
    /// and look-alikes); the README's "Safety signals" table quotes this output.
    #[test]
    fn eval_set_precision_and_recall() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/pii-eval.jsonl");
        let mut counts: BTreeMap<String, [u32; 3]> = BTreeMap::new(); // tp, fp, fn per type
        for line in std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = v["text"].as_str().unwrap();
            let gold: Vec<&str> = v["types"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            let found: Vec<&str> = PiiScanner::shared()
                .summary(text)
                .into_iter()
                .filter(|(_, (_, c))| *c >= DEFAULT_THRESHOLD)
                .map(|(k, _)| k.as_str())
                .collect();
            for t in &found {
                let slot = if gold.contains(t) { 0 } else { 1 };
                counts.entry(t.to_string()).or_default()[slot] += 1;
                if slot == 1 {
                    eprintln!("false positive {t}: {text}");
                }
            }
            for t in gold.iter().filter(|t| !found.contains(t)) {
                counts.entry(t.to_string()).or_default()[2] += 1;
                eprintln!("missed {t}: {text}");
            }
        }
        let total = counts
            .values()
            .fold([0; 3], |a, c| [a[0] + c[0], a[1] + c[1], a[2] + c[2]]);
        for (t, [tp, fp, fn_]) in counts.iter().chain([(&"all".to_string(), &total)]) {
            eprintln!("{t:<14} tp {tp:>2} fp {fp:>2} fn {fn_:>2}");
        }
        let [tp, fp, fn_] = total.map(f64::from);
        let (precision, recall) = (tp / (tp + fp), tp / (tp + fn_));
        eprintln!("pii eval: precision {precision:.3} recall {recall:.3}");
        assert!(
            precision >= 0.95 && recall >= 0.9,
            "precision {precision:.3} recall {recall:.3}"
        );
    }
}
