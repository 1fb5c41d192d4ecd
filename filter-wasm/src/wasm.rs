//! proxy-wasm bindings: the root context (configuration, report flushing) and the HTTP context
//! delegating to [`Filter`]. Only `hostcalls` functions that return `Result` are used: the SDK's
//! convenience setters unwrap host errors, and a panic would kill the VM.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use llmsoup_contract::plugin_config::Plugin;
use llmsoup_contract::{ROUTER_SERVICE, v1};
use prost::Message as _;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, Status};

use crate::filter::{Filter, Next, ReportQueue};
use crate::host::{Host, HostError};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { plugin: None, local: None, reports: Rc::new(RefCell::new(Vec::new())), report_call: None, done: false })
    });
}}

const TICK: Duration = Duration::from_millis(200);
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

fn err(what: &str, s: Status) -> HostError {
    HostError(format!("{what}: {s:?}"))
}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

struct Root {
    plugin: Option<Rc<Plugin>>,
    local: Option<Rc<crate::local::Local>>,
    reports: ReportQueue,
    report_call: Option<u32>,
    /// The host is shutting this root context down (a new plugin configuration replaced it, on a
    /// reload, or Envoy is stopping): its last reports are sent before it says it is done.
    done: bool,
}

impl Root {
    /// Sends the queued reports in one call, unless one is in flight.
    fn flush(&mut self) {
        let Some(plugin) = &self.plugin else { return };
        if self.report_call.is_some() || self.reports.borrow().is_empty() {
            return;
        }
        let reports: Vec<v1::UsageReport> = self.reports.borrow_mut().drain(..).collect();
        let msg = v1::UsageReports { reports }.encode_to_vec();
        let Ok(upstream) = std::str::from_utf8(&plugin.upstream) else {
            return;
        };
        match hostcalls::dispatch_grpc_call(upstream, ROUTER_SERVICE, "Report", vec![], Some(&msg), REPORT_TIMEOUT) {
            Ok(token) => self.report_call = Some(token),
            Err(s) => log(LogLevel::Warn, &format!("llmsoup: Report dispatch failed: {s:?}")),
        }
    }
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, _size: usize) {
        if self.report_call == Some(token_id) {
            self.report_call = None;
            if status_code != 0 {
                log(
                    LogLevel::Warn,
                    &format!("llmsoup: Report returned gRPC status {status_code}"),
                );
            }
        }
        if self.done {
            self.flush();
            if self.report_call.is_none() {
                let _ = hostcalls::done();
            }
        }
    }

    /// The plugin configuration this root context serves is being retired (every stream it
    /// created has ended): reports still queued would be lost with it, so they are sent first,
    /// and the host is told it may delete the context once the call is answered.
    fn on_done(&mut self) -> bool {
        self.done = true;
        self.flush();
        self.report_call.is_none()
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            _ => {
                log(LogLevel::Error, "llmsoup: missing plugin configuration");
                return false;
            }
        };
        match Plugin::parse(&bytes) {
            Ok(p) => {
                self.local = match crate::local::Local::new(&p) {
                    Ok(l) => l.map(Rc::new),
                    Err(e) => {
                        log(LogLevel::Warn, &format!("llmsoup: local routing plan unusable: {e}"));
                        None
                    }
                };
                self.plugin = Some(Rc::new(p));
                let _ = hostcalls::set_tick_period(TICK);
                true
            }
            Err(e) => {
                log(LogLevel::Error, &format!("llmsoup: {e}"));
                false
            }
        }
    }

    /// Sends queued usage reports, one call in flight at a time, off every request's path.
    fn on_tick(&mut self) {
        self.flush();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let plugin = self.plugin.clone()?;
        Some(Box::new(Http {
            filter: Filter::new(WasmHost, plugin, self.reports.clone()).with_local(self.local.clone()),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    filter: Filter<WasmHost>,
}

fn action(n: Next) -> Action {
    match n {
        Next::Continue => Action::Continue,
        Next::Pause => Action::Pause,
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.filter.on_route_response(token_id, status_code, response_size);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.filter.on_request_headers(end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.filter.on_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.filter.on_request_trailers())
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        action(self.filter.on_response_headers())
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.filter.on_response_body(body_size, end_of_stream))
    }

    fn on_log(&mut self) {
        self.filter.on_done();
    }
}

/// The real host: proxy-wasm hostcalls.
struct WasmHost;

impl Host for WasmHost {
    fn now(&self) -> Duration {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default()
    }

    fn request_headers(&self) -> Vec<(String, Vec<u8>)> {
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
        hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value)
            .map_err(|s| err("set request header", s))
    }

    fn add_request_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::add_map_value_bytes(MapType::HttpRequestHeaders, name, value)
            .map_err(|s| err("add request header", s))
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
    }

    fn set_request_body(&mut self, old_size: usize, body: &[u8]) -> Result<(), HostError> {
        hostcalls::set_buffer(BufferType::HttpRequestBody, 0, old_size, body).map_err(|s| err("set request body", s))
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn set_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, Some(value))
            .map_err(|s| err("set response header", s))
    }

    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, None)
            .map_err(|s| err("remove response header", s))
    }

    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
            .ok()
            .flatten()
    }

    fn set_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
        hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, body).map_err(|s| err("set response body", s))
    }

    fn send_response(&mut self, status: u32, headers: &[(&str, &[u8])], body: &[u8]) -> Result<(), HostError> {
        let values: Vec<String> = headers
            .iter()
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect();
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .zip(&values)
            .map(|((k, _), v)| (*k, v.as_str()))
            .collect();
        hostcalls::send_http_response(status, pairs, Some(body)).map_err(|s| err("send response", s))
    }

    fn dispatch_route(&mut self, upstream: &[u8], message: &[u8], timeout: Duration) -> Result<u32, HostError> {
        let upstream =
            std::str::from_utf8(upstream).map_err(|_| HostError("upstream descriptor is not UTF-8".into()))?;
        hostcalls::dispatch_grpc_call(upstream, ROUTER_SERVICE, "Route", vec![], Some(message), timeout)
            .map_err(|s| err("dispatch Route", s))
    }

    fn grpc_response(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
            .ok()
            .flatten()
    }

    fn clear_route_cache(&mut self) -> Result<(), HostError> {
        hostcalls::call_foreign_function("clear_route_cache", None)
            .map(|_| ())
            .map_err(|s| err("clear_route_cache", s))
    }

    fn resume_request(&mut self) -> Result<(), HostError> {
        hostcalls::resume_http_request().map_err(|s| err("resume", s))
    }

    fn warn(&self, message: &str) {
        log(LogLevel::Warn, message);
    }
}
