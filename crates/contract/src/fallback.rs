//! Fallback chains: the headers the sidecar, Envoy's per-attempt upstream filters and both
//! response paths share.
//!
//! The sidecar (either attach mode) computes a request's chain — the primary model, then the
//! fallbacks that can take the request — and sets [`CHAIN_HEADER`]. Envoy's route for that chain
//! retries on the next model (`retry_priority: previous_priorities` over an aggregate cluster);
//! an upstream Lua filter rewrites each attempt (path, `model` id at [`MODEL_SPAN_HEADER`],
//! credential) and appends the attempt's model to [`TRIED_HEADER`]; the answer carries
//! [`ATTEMPTS_HEADER`]. The response paths read it back with [`Attempts::parse`]: the last model
//! answered, the others failed.

/// Request header: the chain Envoy routes on, model names comma-separated, primary first.
pub const CHAIN_HEADER: &str = "x-llmsoup-chain";
/// Request header: `start-end`, the byte range of the `model` JSON string in the body sent to
/// the primary, so each fallback attempt splices its own id without parsing the body.
pub const MODEL_SPAN_HEADER: &str = "x-llmsoup-model-span";
/// Upstream request header the per-attempt filter keeps: models attempted so far, in order.
pub const TRIED_HEADER: &str = "x-llmsoup-tried";
/// Response header: the models attempted for this request, in order; the last one answered.
pub const ATTEMPTS_HEADER: &str = "x-llmsoup-attempts";
/// Separator of model names in the chain and attempts headers (model names in chains may not
/// contain it: `config` refuses them).
pub const SEPARATOR: char = ',';

/// What a chain response says about its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempts<'a> {
    /// The model whose answer the client gets.
    pub answered: &'a str,
    /// Models tried before it, which failed (connect error, reset, 5xx, 429), in order.
    pub failed: Vec<&'a str>,
}

impl<'a> Attempts<'a> {
    /// Reads [`ATTEMPTS_HEADER`]. `known` says whether a name is a model of this request's chain:
    /// a header naming anything else (a provider sending its own) is ignored.
    pub fn parse(value: &'a [u8], known: impl Fn(&str) -> bool) -> Option<Attempts<'a>> {
        let value = std::str::from_utf8(value).ok()?;
        let mut names: Vec<&str> = value.split(SEPARATOR).map(str::trim).collect();
        if names.iter().any(|n| n.is_empty() || !known(n)) {
            return None;
        }
        let answered = names.pop()?;
        Some(Attempts {
            answered,
            failed: names,
        })
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
        assert_eq!(a.answered, "fb2");
        assert_eq!(a.failed, ["prim"]);
        let a = Attempts::parse(b"prim", |n| in_chain(chain, n)).unwrap();
        assert_eq!((a.answered, a.failed.len()), ("prim", 0));
        // A provider's own header, or garbage, is not believed.
        assert_eq!(Attempts::parse(b"prim,other", |n| in_chain(chain, n)), None);
        assert_eq!(Attempts::parse(b"", |n| in_chain(chain, n)), None);
        assert_eq!(Attempts::parse(b"prim,,fb1", |n| in_chain(chain, n)), None);
        assert_eq!(Attempts::parse(b"\xff", |_| true), None);
        assert_eq!(chain_value(&["a", "b"]), "a,b");
        assert!(!in_chain(chain, "fb"));
    }
}
