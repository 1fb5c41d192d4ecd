//! Client tokens at the gateway: how a token is read from a request and checked against the
//! stored SHA-256 hashes. Shared by the sidecar (ext_proc mode) and the wasm filter so both
//! attach modes accept exactly the same credentials.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No token sent.
    Missing,
    /// Token not accepted.
    Wrong,
}

impl AuthError {
    /// The client-facing message of the 401, the one text every enforcement point sends (the
    /// sidecar, the wasm filter, and the Lua step `llmsoup envoy-config` renders from it).
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "You didn't provide an API key. Send it as `Authorization: Bearer <token>`.",
            AuthError::Wrong => "Incorrect API key provided.",
        }
    }

    /// The rejection's metric label (the 401 body's `code` is `invalid_api_key` either way).
    pub fn code(self) -> &'static str {
        match self {
            AuthError::Missing => "missing_api_key",
            AuthError::Wrong => "invalid_api_key",
        }
    }
}

/// gRPC metadata key carrying the sidecar's shared secret (`server.grpc_token`).
pub const GRPC_TOKEN_METADATA: &str = "authorization";

/// The metadata value Envoy and the wasm filter send for `token`.
pub fn grpc_metadata_value(token: &str) -> String {
    format!("Bearer {token}")
}

/// Whether a gRPC call's `authorization` metadata carries `expected`. Both sides are hashed
/// first so the constant-time comparison does not even reveal the secret's length.
pub fn grpc_token_ok(expected: &str, authorization: Option<&[u8]>) -> bool {
    let Some(presented) = authorization
        .map(<[u8]>::trim_ascii)
        .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
        .map(|v| v[7..].trim_ascii())
    else {
        return false;
    };
    bool::from(hash(presented).ct_eq(&hash(expected.as_bytes())))
}

/// The token of a request: `Authorization: Bearer <token>`, else `x-api-key: <token>`.
pub fn token<'a>(authorization: Option<&'a [u8]>, api_key: Option<&'a [u8]>) -> Option<&'a [u8]> {
    authorization
        .and_then(|v| {
            let v = v.trim_ascii();
            (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| v[7..].trim_ascii())
        })
        .or(api_key.map(<[u8]>::trim_ascii))
        .filter(|t| !t.is_empty())
}

/// SHA-256 of a token, as stored.
pub fn hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// SHA-256 hex of a client token, as stored in `auth.tokens[].sha256` (surrounding whitespace is
/// not part of the token).
pub fn hash_token(token: &str) -> String {
    hex::encode(hash(token.trim().as_bytes()))
}

/// Checks a request's token against the hashes; returns the index of the matching one. Every
/// hash is compared, in constant time, so timing reveals neither the token nor which matched.
pub fn check(hashes: &[[u8; 32]], authorization: Option<&[u8]>, api_key: Option<&[u8]>) -> Result<usize, AuthError> {
    let digest = hash(token(authorization, api_key).ok_or(AuthError::Missing)?);
    let mut found = None;
    for (i, h) in hashes.iter().enumerate() {
        if bool::from(h.ct_eq(&digest)) && found.is_none() {
            found = Some(i);
        }
    }
    found.ok_or(AuthError::Wrong)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_api_key() {
        let hashes = [hash(b"a"), hash(b"b")];
        assert_eq!(check(&hashes, Some(b"Bearer b"), None), Ok(1));
        assert_eq!(check(&hashes, Some(b"  bearer   a "), None), Ok(0));
        assert_eq!(check(&hashes, None, Some(b"a")), Ok(0));
        assert_eq!(check(&hashes, None, None), Err(AuthError::Missing));
        assert_eq!(check(&hashes, Some(b"Bearer "), None), Err(AuthError::Missing));
        assert_eq!(check(&hashes, Some(b"Bearer c"), None), Err(AuthError::Wrong));
        assert_eq!(check(&hashes, Some(b"Basic a"), None), Err(AuthError::Missing));
    }

    #[test]
    fn grpc_token() {
        let secret = "0123456789abcdef-secret";
        assert!(grpc_token_ok(secret, Some(grpc_metadata_value(secret).as_bytes())));
        assert!(grpc_token_ok(secret, Some(b"bearer 0123456789abcdef-secret ")));
        assert!(!grpc_token_ok(secret, None));
        assert!(!grpc_token_ok(secret, Some(b"0123456789abcdef-secret")));
        assert!(!grpc_token_ok(secret, Some(b"Bearer 0123456789abcdef-secreT")));
        assert!(!grpc_token_ok(secret, Some(b"Bearer 0123456789abcdef-secret-and-more")));
        assert!(!grpc_token_ok(secret, Some(b"Bearer ")));
    }
}
