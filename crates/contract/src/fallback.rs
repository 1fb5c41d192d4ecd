//! Fallback chains: the headers the sidecar, Envoy's per-attempt upstream filters and both
//! response paths share.
//!
//! The sidecar (either attach mode) computes a request's chain — the primary model, then the
//! fallbacks that can take the request — and sets [`CHAIN_HEADER`] and [`MODEL_SPAN_HEADER`].
//! Envoy's route for that chain retries on the next model (`retry_priority: previous_priorities`
//! over an aggregate cluster); an upstream Lua filter rewrites each attempt (path, `model` id at
//! the span, credential) and keeps what must outlive an attempt — the models tried and how each
//! answered, the span, the first path — in the request's dynamic metadata, never in headers: the
//! attempts share one header map, and whatever is in it reaches the provider. The answer carries
//! [`ATTEMPTS_HEADER`], read back by both response paths with [`Attempts::parse`]: the last model
//! answered, the others failed, and a failed attempt's `retry-after` becomes a skip window.

/// Request header: the chain Envoy routes on, model names comma-separated, primary first.
pub const CHAIN_HEADER: &str = "x-llmsoup-chain";
/// Request header: `start-end`, the byte range of the `model` JSON string in the body sent to
/// the primary, so each fallback attempt splices its own id without parsing the body.
pub const MODEL_SPAN_HEADER: &str = "x-llmsoup-model-span";
/// Response header: the attempts of this request, in order; the last one answered. Each entry
/// is `model[;status[;retry-after]]`: a status only for an attempt answered with a non-2xx
/// (none: no answer — connect failure, reset, idle timeout), then that answer's `retry-after`
/// with `%`, `,` and `;` percent-encoded (an HTTP date has a comma).
pub const ATTEMPTS_HEADER: &str = "x-llmsoup-attempts";
/// Separator of an attempt's fields in [`ATTEMPTS_HEADER`].
pub const FIELD_SEPARATOR: char = ';';
/// Separator of model names in the chain and attempts headers (model names in chains may not
/// contain it: `config` refuses them).
pub const SEPARATOR: char = ',';

/// A provider's `retry-after` (RFC 9110 §10.2.3): a delay in seconds or an HTTP date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `retry-after: 120`.
    Seconds(u64),
    /// `retry-after: Wed, 21 Oct 2026 07:28:00 GMT`, as seconds since the Unix epoch.
    Date(u64),
}

impl RetryAfter {
    /// Parses a `retry-after` value; `None` for anything else.
    pub fn parse(value: &str) -> Option<RetryAfter> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            return value.parse().ok().map(RetryAfter::Seconds);
        }
        let at = httpdate::parse_http_date(value).ok()?;
        let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        Some(RetryAfter::Date(secs))
    }

    /// Seconds to wait from `now` (seconds since the Unix epoch; a date in the past is 0).
    pub fn seconds_from(self, now: u64) -> u64 {
        match self {
            RetryAfter::Seconds(s) => s,
            RetryAfter::Date(at) => at.saturating_sub(now),
        }
    }
}

/// One attempt of a chain request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// The model it went to.
    pub model: &'a str,
    /// The status of its answer when that was not a 2xx; `None` when it was a 2xx or there was
    /// no answer (connect failure, reset, timeout).
    pub status: Option<u16>,
    /// The answer's `retry-after`, when it had a valid one.
    pub retry_after: Option<RetryAfter>,
}

impl Attempt<'_> {
    /// Whether the answer asked the client to come back later: a 429 or a 503 with
    /// `retry-after` (RFC 9110). Returns the delay in seconds from `now`.
    pub fn skip_for(&self, now: u64) -> Option<u64> {
        match (self.status, self.retry_after) {
            (Some(429 | 503), Some(r)) => Some(r.seconds_from(now)),
            _ => None,
        }
    }
}

/// What a chain response says about its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempts<'a> {
    /// The attempt whose answer the client gets.
    pub answered: Attempt<'a>,
    /// Attempts before it, which failed (connect error, reset, timeout, 5xx, 429), in order.
    pub failed: Vec<Attempt<'a>>,
}

/// `%XX` escapes decoded (the Lua step encodes `%`, `,` and `;` of a `retry-after`).
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn attempt<'a>(entry: &'a str, known: &impl Fn(&str) -> bool) -> Option<Attempt<'a>> {
    let mut fields = entry.trim().splitn(3, FIELD_SEPARATOR);
    let model = fields.next()?.trim();
    if model.is_empty() || !known(model) {
        return None;
    }
    let status = match fields.next() {
        Some(s) => Some(s.trim().parse::<u16>().ok().filter(|s| (100..=599).contains(s))?),
        None => None,
    };
    // An unreadable retry-after is ignored, like a provider's malformed one.
    let retry_after = fields
        .next()
        .and_then(percent_decode)
        .and_then(|v| RetryAfter::parse(&v));
    Some(Attempt {
        model,
        status,
        retry_after,
    })
}

impl<'a> Attempts<'a> {
    /// Reads [`ATTEMPTS_HEADER`]. `known` says whether a name is a model of this request's chain:
    /// a header naming anything else (a provider sending its own) is ignored.
    pub fn parse(value: &'a [u8], known: impl Fn(&str) -> bool) -> Option<Attempts<'a>> {
        let value = std::str::from_utf8(value).ok()?;
        let mut all = value
            .split(SEPARATOR)
            .map(|e| attempt(e, &known))
            .collect::<Option<Vec<_>>>()?;
        let answered = all.pop()?;
        Some(Attempts { answered, failed: all })
    }

    /// Every attempt that asked for a pause (see [`Attempt::skip_for`]): model and seconds.
    pub fn skips(&self, now: u64) -> impl Iterator<Item = (&'a str, u64)> + '_ {
        self.failed
            .iter()
            .chain(std::iter::once(&self.answered))
            .filter_map(move |a| Some((a.model, a.skip_for(now)?)))
    }
}

/// The chain header's value for these models.
pub fn chain_value<S: AsRef<str>>(models: &[S]) -> String {
    let mut out = String::new();
    for (i, m) in models.iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        out.push_str(m.as_ref());
    }
    out
}

/// Whether `name` is one of the chain header's models.
pub fn in_chain(chain: &str, name: &str) -> bool {
    chain.split(SEPARATOR).any(|m| m == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_name_the_answering_model_last() {
        let chain = "prim,fb1,fb2";
        let a = Attempts::parse(b"prim,fb2", |n| in_chain(chain, n)).unwrap();
        assert_eq!(a.answered.model, "fb2");
        assert_eq!(a.failed.len(), 1);
        assert_eq!((a.failed[0].model, a.failed[0].status), ("prim", None));
        let a = Attempts::parse(b"prim", |n| in_chain(chain, n)).unwrap();
        assert_eq!((a.answered.model, a.failed.len()), ("prim", 0));
        // A provider's own header, or garbage, is not believed.
        assert_eq!(Attempts::parse(b"prim,other", |n| in_chain(chain, n)), None);
        assert_eq!(Attempts::parse(b"", |n| in_chain(chain, n)), None);
        assert_eq!(Attempts::parse(b"prim,,fb1", |n| in_chain(chain, n)), None);
        assert_eq!(Attempts::parse(b"prim;abc,fb1", |n| in_chain(chain, n)), None);
        assert_eq!(Attempts::parse(b"prim;999,fb1", |n| in_chain(chain, n)), None);
        assert_eq!(Attempts::parse(b"\xff", |_| true), None);
        assert_eq!(chain_value(&["a", "b"]), "a,b");
        assert!(!in_chain(chain, "fb"));
    }

    #[test]
    fn failed_attempts_carry_status_and_retry_after() {
        let chain = "prim,fb1,fb2";
        let a = Attempts::parse(b"prim;429;2,fb1;503,fb2", |n| in_chain(chain, n)).unwrap();
        assert_eq!(a.answered.model, "fb2");
        assert_eq!(
            a.failed,
            [
                Attempt {
                    model: "prim",
                    status: Some(429),
                    retry_after: Some(RetryAfter::Seconds(2))
                },
                Attempt {
                    model: "fb1",
                    status: Some(503),
                    retry_after: None
                },
            ]
        );
        assert_eq!(a.skips(0).collect::<Vec<_>>(), [("prim", 2)]);
        // An HTTP date, its comma percent-encoded by the Lua step; seconds from `now`.
        let a = Attempts::parse(b"prim;503;Wed%2C 21 Oct 2015 07:28:00 GMT,fb1", |n| in_chain(chain, n)).unwrap();
        assert_eq!(a.failed[0].retry_after, Some(RetryAfter::Date(1_445_412_480)));
        assert_eq!(a.skips(1_445_412_480 - 30).collect::<Vec<_>>(), [("prim", 30)]);
        assert_eq!(a.skips(1_445_412_480 + 30).collect::<Vec<_>>(), [("prim", 0)]);
        // A 500 with retry-after, or a malformed retry-after, is no skip.
        let a = Attempts::parse(b"prim;500;5,fb1;429;soon,fb2", |n| in_chain(chain, n)).unwrap();
        assert_eq!(a.skips(0).count(), 0);
        // The answer itself may ask for a pause (every attempt failed).
        let a = Attempts::parse(b"prim;503,fb1;429;7", |n| in_chain(chain, n)).unwrap();
        assert_eq!(a.skips(0).collect::<Vec<_>>(), [("fb1", 7)]);
        assert_eq!(RetryAfter::parse(" 12 "), Some(RetryAfter::Seconds(12)));
        assert_eq!(RetryAfter::parse("-1"), None);
        assert_eq!(RetryAfter::parse(""), None);
    }
}
