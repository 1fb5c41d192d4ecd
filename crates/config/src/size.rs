//! Token counts written as `8000`, `8K`, `1.5M` in configuration.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A token count; accepts integers and strings with a `K`/`M`/`G` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenCount(pub u64);

impl TokenCount {
    /// Parses `8K`, `1.5M`, `128000`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
            Some('K') => (&t[..t.len() - 1], 1_000f64),
            Some('M') => (&t[..t.len() - 1], 1_000_000f64),
            Some('G') => (&t[..t.len() - 1], 1_000_000_000f64),
            _ => (t, 1f64),
        };
        let n: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a token count (examples: 512, 8K, 1.5M)"))?;
        if !n.is_finite() || n < 0.0 {
            return Err(format!("`{s}` must be a non-negative token count"));
        }
        Ok(TokenCount((n * mult).round() as u64))
    }
}

impl<'de> Deserialize<'de> for TokenCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TokenCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a token count such as 512, \"8K\" or \"1.5M\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TokenCount, E> {
                Ok(TokenCount(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TokenCount, E> {
                u64::try_from(v)
                    .map(TokenCount)
                    .map_err(|_| E::custom("token counts cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TokenCount, E> {
                TokenCount::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TokenCount, E> {
                TokenCount::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for TokenCount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl JsonSchema for TokenCount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TokenCount".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Token count: an integer or a string with a K/M/G suffix (\"8K\", \"1.5M\")",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*[kKmMgG]?\\s*$"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::TokenCount;

    #[test]
    fn parses_suffixes() {
        assert_eq!(TokenCount::parse("8K").unwrap().0, 8_000);
        assert_eq!(TokenCount::parse("1.5M").unwrap().0, 1_500_000);
        assert_eq!(TokenCount::parse("512").unwrap().0, 512);
        assert_eq!(TokenCount::parse(" 2k ").unwrap().0, 2_000);
        assert!(TokenCount::parse("lots").is_err());
        assert!(TokenCount::parse("-1K").is_err());
    }
}
