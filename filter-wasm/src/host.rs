//! The host calls the filter needs, as a trait: proxy-wasm in Envoy, a recording fake in tests.
//! Every call returns a `Result` so no host error can turn into a panic.

use std::time::Duration;

/// A host call failed (Envoy returned a non-OK status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub String);

/// Host operations used by [`crate::filter::Filter`].
pub trait Host {
    /// Time since the UNIX epoch.
    fn now(&self) -> Duration;
    /// All request headers.
    fn request_headers(&self) -> Vec<(String, Vec<u8>)>;
    /// One request header.
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&mut self, name: &str, value: Option<&[u8]>) -> Result<(), HostError>;
    /// Adds a request header value, keeping existing ones.
    fn add_request_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// The buffered request body (`size` bytes).
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the buffered request body of `old_size` bytes.
    fn set_request_body(&mut self, old_size: usize, body: &[u8]) -> Result<(), HostError>;
    /// One response header.
    fn response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// Sets a response header.
    fn set_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Removes a response header.
    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError>;
    /// The current response body chunk (`size` bytes).
    fn response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the current response body chunk (`size` bytes) with `body`.
    fn set_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError>;
    /// Sends a local reply and ends the request.
    fn send_response(&mut self, status: u32, headers: &[(&str, &[u8])], body: &[u8]) -> Result<(), HostError>;
    /// Dispatches the Route call; returns its token.
    fn dispatch_route(&mut self, upstream: &[u8], message: &[u8], timeout: Duration) -> Result<u32, HostError>;
    /// The Route call's response message (`size` bytes).
    fn grpc_response(&self, size: usize) -> Option<Vec<u8>>;
    /// Makes Envoy pick the route again after routing headers changed.
    fn clear_route_cache(&mut self) -> Result<(), HostError>;
    /// Lets the paused request continue.
    fn resume_request(&mut self) -> Result<(), HostError>;
    /// Logs a warning.
    fn warn(&self, message: &str);
}
