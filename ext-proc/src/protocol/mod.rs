//! Client wire protocols: parsing OpenAI-style (and Anthropic-style) requests into what the
//! signals need, rewriting the body, and OpenAI-style error bodies.

mod error;
mod request;

pub use error::{ApiError, MAX_ECHO_BYTES, NOT_FOUND_MESSAGE, truncate_echo};
pub use request::{ParsedRequest, RequestView, estimate_tokens, parse_request};
