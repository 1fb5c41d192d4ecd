//! The response side of a routed request, shared by both attach modes so they account the same
//! way: the [`ResponseTracker`] is fed response headers and body chunks as they pass (never
//! holding them) and produces the one `UsageReport` of the request; the [`UsageScanner`] inside
//! it reads token usage from OpenAI (Chat and Responses) and Anthropic bodies, JSON or SSE.

use std::time::Duration;

use serde::Deserialize;

use crate::fallback::{Attempts, in_chain};
use crate::v1::{ModelSkip, UsageReport};

/// Token counts found in a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub prompt: u64,
    /// Completion (output) tokens.
    pub completion: u64,
    /// Cached prompt tokens.
    pub cached: u64,
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// An SSE event's usage: top-level (OpenAI chunks, Anthropic `message_delta`), in the message
/// (Anthropic `message_start`) or in the response (OpenAI Responses: `response.completed`, and
/// `response.incomplete` / `response.failed` for a stream that ended early; the earlier events'
/// `"usage": null` reads as none).
#[derive(Deserialize)]
struct SseEvent {
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    message: Option<WithUsage>,
    #[serde(default)]
    response: Option<WithUsage>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<u64>,
    /// OpenAI Chat's cached prompt tokens (`input_tokens_details` in the Responses API).
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Anthropic streams split usage over events (input in `message_start`, output in
    /// `message_delta`): each event updates the counts it carries and keeps the others.
    fn merge_into(self, seen: Option<Usage>) -> Usage {
        let mut u = seen.unwrap_or_default();
        if let Some(p) = self.prompt_tokens {
            u.prompt = p;
        }
        if let Some(c) = self.completion_tokens {
            u.completion = c;
        }
        if self.prompt_tokens_details.is_some() || self.cache_read_input_tokens.is_some() {
            // Provider-controlled numbers: saturate rather than overflow (a panic in debug
            // builds, a wrapped count in release).
            u.cached = self
                .prompt_tokens_details
                .map_or(0, |d| d.cached_tokens)
                .saturating_add(self.cache_read_input_tokens.unwrap_or(0));
        }
        u
    }
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Self {
        w.merge_into(None)
    }
}

/// Largest JSON response kept whole for usage extraction; of a larger one only its last
/// [`TAIL`] bytes are read.
const MAX_JSON: usize = 1 << 20;
/// Longest SSE line kept across chunks; of a longer `data:` line only its last [`TAIL`] bytes are
/// read.
const MAX_LINE: usize = 256 * 1024;
/// What is kept of an over-long body or `data:` line: its end, where providers put the usage
/// (after the answer's text: a Responses stream's `response.completed` repeats the whole output
/// before its usage, so a long answer makes that line longer than [`MAX_LINE`]).
const TAIL: usize = 4 * 1024;

/// The last [`TAIL`] bytes of an over-long body or line, kept as it streams past.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, more: &[u8]) {
        if more.len() >= TAIL {
            self.bytes.clear();
            self.bytes.extend_from_slice(&more[more.len() - TAIL..]);
            return;
        }
        let excess = (self.bytes.len() + more.len()).saturating_sub(TAIL);
        self.bytes.drain(..excess);
        self.bytes.extend_from_slice(more);
    }

    /// The usage object after the last `"usage":` in the tail, if one parses there. (A `"usage":`
    /// inside the answer's text is escaped, `\"usage\":`, so it never matches.)
    fn usage(&self) -> Option<WireUsage> {
        const KEY: &[u8] = b"\"usage\":";
        let at = self.bytes.windows(KEY.len()).rposition(|w| w == KEY)?;
        serde_json::Deserializer::from_slice(&self.bytes[at + KEY.len()..])
            .into_iter::<WireUsage>()
            .next()?
            .ok()
    }
}

/// An SSE line that outgrew [`MAX_LINE`]: whether it is a `data:` line, and its tail so far.
#[derive(Debug, Default)]
struct LongLine {
    data: bool,
    tail: Tail,
}

/// Extracts usage from a response body seen chunk by chunk, without holding the stream back:
/// JSON bodies are collected (bounded) and parsed at the end; SSE is parsed line by line, with
/// events split across chunks reassembled. Memory stays bounded: an over-long body or `data:`
/// line is read from its last [`TAIL`] bytes, and the result never depends on how the body was
/// split into chunks.
#[derive(Debug, Default)]
pub struct UsageScanner {
    sse: bool,
    buf: Vec<u8>,
    /// JSON: the body outgrew `MAX_JSON`; only its tail is kept.
    overflow: Option<Tail>,
    /// SSE: the current line outgrew `MAX_LINE`; only its tail is kept, up to its newline.
    long: Option<LongLine>,
    usage: Option<Usage>,
}

impl UsageScanner {
    /// A scanner for a JSON (`sse = false`) or SSE body.
    pub fn new(sse: bool) -> Self {
        UsageScanner {
            sse,
            ..Default::default()
        }
    }

    /// Feeds the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        if !self.sse {
            if let Some(tail) = &mut self.overflow {
                tail.push(chunk);
            } else if self.buf.len() + chunk.len() > MAX_JSON {
                let mut tail = Tail::default();
                tail.push(&self.buf);
                tail.push(chunk);
                self.overflow = Some(tail);
                self.buf = Vec::new();
            } else {
                self.buf.extend_from_slice(chunk);
            }
            return;
        }
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let part = &rest[..nl];
            rest = &rest[nl + 1..];
            if let Some(mut long) = self.long.take() {
                long.tail.push(part);
                self.long_line(&long);
            } else if self.buf.is_empty() {
                if part.len() <= MAX_LINE {
                    self.line(part);
                } else {
                    let long = self.start_long(part);
                    self.long_line(&long);
                }
            } else if self.buf.len() + part.len() <= MAX_LINE {
                self.buf.extend_from_slice(part);
                let line = std::mem::take(&mut self.buf);
                self.line(&line);
            } else {
                let long = self.start_long(part);
                self.long_line(&long);
            }
        }
        if let Some(long) = &mut self.long {
            long.tail.push(rest);
        } else if self.buf.len() + rest.len() > MAX_LINE {
            self.long = Some(self.start_long(rest));
        } else {
            self.buf.extend_from_slice(rest);
        }
    }

    /// The line in `buf` followed by `more` is over-long: keep whether it is a `data:` line and
    /// its tail, and free the buffer.
    fn start_long(&mut self, more: &[u8]) -> LongLine {
        let head: Vec<u8> = self.buf.iter().chain(more).take(5).copied().collect();
        let mut tail = Tail::default();
        tail.push(&self.buf);
        tail.push(more);
        self.buf = Vec::new();
        LongLine {
            data: head == b"data:",
            tail,
        }
    }

    /// An over-long line ended: its usage, if it is a `data:` line whose tail has one.
    fn long_line(&mut self, long: &LongLine) {
        if long.data
            && let Some(u) = long.tail.usage()
        {
            self.usage = Some(u.merge_into(self.usage));
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii_start();
        // Cheap pre-check: most events carry no usage.
        if !data.windows(7).any(|w| w == b"\"usage\"") {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<SseEvent>(data)
            && let Some(u) = v
                .usage
                .or(v.message.and_then(|m| m.usage))
                .or(v.response.and_then(|r| r.usage))
        {
            self.usage = Some(u.merge_into(self.usage));
        }
    }

    /// The usage seen, once the body is complete.
    pub fn finish(&mut self) -> Option<Usage> {
        if !self.sse {
            if let Some(tail) = self.overflow.take() {
                if let Some(u) = tail.usage() {
                    self.usage = Some(u.into());
                }
            } else if !self.buf.is_empty() {
                if let Ok(WithUsage { usage: Some(u) }) = serde_json::from_slice::<WithUsage>(&self.buf) {
                    self.usage = Some(u.into());
                }
                self.buf = Vec::new();
            }
        }
        self.usage
    }
}

/// Whether a response `content-type` is server-sent events.
pub fn is_sse(content_type: &[u8]) -> bool {
    content_type.starts_with(b"text/event-stream")
}

/// What one response teaches: status, time to first byte, SSE or not, token usage, turned into
/// the request's `UsageReport` exactly once. Clock-free: callers pass durations since the request
/// started (Envoy's clock in the filter, `Instant` in the sidecar).
#[derive(Debug, Default)]
pub struct ResponseTracker {
    status: u32,
    stream: bool,
    ttfb: Option<Duration>,
    scanner: Option<UsageScanner>,
    reported: bool,
    /// The response body, kept for the response cache (bounded; see [`Self::capture`]).
    capture: Option<Capture>,
    /// The response reached its end (not cut short).
    ended: bool,
    /// Models of a fallback chain whose attempts failed before the answering one.
    failed: Vec<String>,
    /// Attempts that asked for a pause (`retry-after` on a 429/503): model, seconds.
    skips: Vec<ModelSkip>,
}

/// A captured response body: up to `limit` bytes, dropped whole beyond it.
#[derive(Debug, Default)]
struct Capture {
    body: Vec<u8>,
    limit: usize,
    overflow: bool,
}

impl ResponseTracker {
    /// Response headers arrived `since_start` after the request. With `scan`, a JSON or SSE body
    /// will be read for token usage. Returns whether the response is SSE.
    pub fn on_headers(
        &mut self,
        status: Option<&[u8]>,
        content_type: Option<&[u8]>,
        since_start: Option<Duration>,
        scan: bool,
    ) -> bool {
        let ct = content_type.unwrap_or_default();
        let sse = is_sse(ct);
        self.stream = sse;
        self.ttfb = since_start;
        self.status = status
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0);
        if scan && (sse || ct.starts_with(b"application/json")) {
            self.scanner = Some(UsageScanner::new(sse));
        }
        sse
    }

    /// A fallback chain's response headers: `attempts` is [`crate::fallback::ATTEMPTS_HEADER`]'s value, `chain`
    /// the chain the request was routed with ([`crate::fallback::CHAIN_HEADER`]), `now` the
    /// wall clock in seconds since the Unix epoch (for a `retry-after` date). Returns the model
    /// that answered (the report's failed models are the ones before it, its skips the attempts
    /// that asked for a pause); `None` when the request had no chain or the header does not name
    /// models of it.
    pub fn on_attempts(&mut self, attempts: Option<&[u8]>, chain: Option<&str>, now: u64) -> Option<String> {
        let (attempts, chain) = (attempts?, chain?);
        let a = Attempts::parse(attempts, |n| in_chain(chain, n))?;
        self.failed = a.failed.iter().map(|m| m.model.to_string()).collect();
        self.skips = a
            .skips(now)
            .map(|(model, seconds)| ModelSkip {
                model: model.to_string(),
                seconds,
            })
            .collect();
        Some(a.answered.model.to_string())
    }

    /// Whether response chunks are read for usage (callers may skip copying them otherwise).
    pub fn scanning(&self) -> bool {
        self.scanner.is_some()
    }

    /// Keeps the response body (up to `limit` bytes; a longer one is dropped whole) for the
    /// response cache. Call before the first chunk.
    pub fn capture(&mut self, limit: usize) {
        self.capture = Some(Capture {
            limit,
            ..Capture::default()
        });
    }

    /// Whether response chunks are wanted: read for usage or captured.
    pub fn wants_chunks(&self) -> bool {
        self.scanner.is_some() || self.capture.as_ref().is_some_and(|c| !c.overflow)
    }

    /// The response reached its end of stream (so a captured body is complete).
    pub fn on_end(&mut self) {
        self.ended = true;
    }

    /// The response status (0 before headers).
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the response is SSE.
    pub fn sse(&self) -> bool {
        self.stream
    }

    /// The captured body, once, if the response ended and the body fit the limit.
    pub fn take_capture(&mut self) -> Option<Vec<u8>> {
        let c = self.capture.take()?;
        (self.ended && !c.overflow).then_some(c.body)
    }

    /// Whether response headers were seen.
    pub fn started(&self) -> bool {
        self.ttfb.is_some()
    }

    /// The next response body chunk.
    pub fn on_chunk(&mut self, chunk: &[u8]) {
        if let Some(scanner) = &mut self.scanner {
            scanner.feed(chunk);
        }
        self.capture_chunk(chunk);
    }

    /// A chunk as the provider sent it, for usage only (see [`Self::capture_chunk`]).
    pub fn on_chunk_accounted(&mut self, chunk: &[u8]) {
        if let Some(scanner) = &mut self.scanner {
            scanner.feed(chunk);
        }
    }

    /// A chunk as the client receives it, for the capture only (a translated response is
    /// accounted from the provider's bytes but cached as the client's).
    pub fn capture_chunk(&mut self, chunk: &[u8]) {
        if let Some(c) = &mut self.capture
            && !c.overflow
        {
            if c.body.len() + chunk.len() > c.limit {
                c.overflow = true;
                c.body = Vec::new();
            } else {
                c.body.extend_from_slice(chunk);
            }
        }
    }

    /// Whether the report was produced (or handed to someone else with [`Self::hand_off`]).
    pub fn reported(&self) -> bool {
        self.reported
    }

    /// Another party reports this request: [`Self::report`] returns nothing from now on.
    pub fn hand_off(&mut self) {
        self.reported = true;
    }

    /// The request's report, once (later calls return `None`): `duration` is the time from the
    /// request's start to the end of its response (or of the stream, if it ended early).
    pub fn report(
        &mut self,
        request_id: String,
        model: String,
        decision: String,
        duration: Duration,
    ) -> Option<UsageReport> {
        if self.reported {
            return None;
        }
        self.reported = true;
        let usage = self.scanner.as_mut().and_then(UsageScanner::finish);
        let u = usage.unwrap_or_default();
        Some(UsageReport {
            request_id,
            model,
            decision,
            status: self.status,
            stream: self.stream,
            prompt_tokens: u.prompt,
            completion_tokens: u.completion,
            cached_tokens: u.cached,
            time_to_first_byte_us: self.ttfb.map_or(0, |d| d.as_micros() as u64),
            duration_us: duration.as_micros() as u64,
            usage_seen: usage.is_some(),
            // The caller knows who authenticated.
            tenant: String::new(),
            failed_models: std::mem::take(&mut self.failed),
            skips: std::mem::take(&mut self.skips),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_from_json_and_split_sse() {
        let mut s = UsageScanner::new(false);
        s.feed(br#"{"id":"x","usage":{"prompt_tokens":11,"#);
        s.feed(br#""completion_tokens":22,"prompt_tokens_details":{"cached_tokens":3}}}"#);
        assert_eq!(
            s.finish(),
            Some(Usage {
                prompt: 11,
                completion: 22,
                cached: 3
            })
        );

        let mut s = UsageScanner::new(true);
        s.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"us");
        s.feed(b"age\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\r\n\r\ndata: [DONE]\n\n");
        assert_eq!(
            s.finish(),
            Some(Usage {
                prompt: 5,
                completion: 7,
                cached: 0
            })
        );

        let mut s = UsageScanner::new(true);
        s.feed(b"data: {\"choices\":[]}\n\n");
        assert_eq!(s.finish(), None);
    }

    // The Responses API reports usage as `input_tokens` / `output_tokens` with
    // `input_tokens_details`, and a stream only inside `response.completed`'s `response` (the
    // earlier events carry `"usage": null`): such streams were accounted as zero tokens before.
    #[test]
    fn usage_from_responses_api_json_and_stream() {
        let json = br#"{"id":"resp_1","object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":4},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}}"#;
        let want = Some(Usage {
            prompt: 36,
            completion: 87,
            cached: 4,
        });
        assert_eq!(scan(false, [&json[..]]), want);
        let stream = concat!(
            "event: response.created\n",
            "data: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
            "event: response.output_text.delta\n",
            "data: {\"type\":\"response.output_text.delta\",\"delta\":\"the usage is\"}\n\n",
            "event: response.completed\n",
            "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",",
            "\"usage\":{\"input_tokens\":36,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":87,\"total_tokens\":123}}}\n\n",
        )
        .as_bytes();
        assert_eq!(scan(true, [stream]), want);
        assert_eq!(scan(true, stream.chunks(7)), want);
        // A stream cut before `response.completed` reports nothing rather than zeros.
        let cut = stream.len() - 150;
        assert_eq!(scan(true, [&stream[..cut]]), None);
    }

    // A long Responses answer: `response.completed` repeats the whole output before the usage,
    // so its `data:` line is longer than MAX_LINE. Its usage is read from the line's tail, however
    // the stream is split; the same for a JSON body over MAX_JSON.
    #[test]
    fn usage_at_the_end_of_over_long_lines_and_bodies() {
        let text = "word ".repeat(MAX_LINE / 4);
        let completed = format!(
            "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"output\":[{{\"type\":\"message\",\"content\":[{{\"type\":\"output_text\",\"text\":\"{text} the \\\"usage\\\": none\"}}]}}],\"usage\":{{\"input_tokens\":12,\"input_tokens_details\":{{\"cached_tokens\":2}},\"output_tokens\":70000}},\"metadata\":{{}}}}}}\n\n"
        );
        let body = [
            &b"data: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n"[..],
            completed.as_bytes(),
        ]
        .concat();
        assert!(completed.len() > MAX_LINE);
        let want = Some(Usage {
            prompt: 12,
            completion: 70_000,
            cached: 2,
        });
        assert_eq!(scan(true, [&body[..]]), want);
        assert_eq!(scan(true, body.chunks(4096)), want);
        assert_eq!(scan(true, body.chunks(1000)), want);
        for cut in [10, 70, MAX_LINE, body.len() - TAIL, body.len() - 40, body.len() - 3] {
            assert_eq!(scan(true, [&body[..cut], &body[cut..]]), want, "cut at {cut}");
        }
        // An over-long line that is not `data:` still counts for nothing.
        let other = completed.replacen("data:", "note:", 1);
        assert_eq!(scan(true, [other.as_bytes()]), None);

        let json = format!(
            "{{\"id\":\"x\",\"choices\":[{{\"message\":{{\"content\":\"{}\"}}}}],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":300000}}}}",
            "tok ".repeat(MAX_JSON / 3)
        );
        assert!(json.len() > MAX_JSON);
        let want = Some(Usage {
            prompt: 5,
            completion: 300_000,
            cached: 0,
        });
        assert_eq!(scan(false, [json.as_bytes()]), want);
        assert_eq!(scan(false, json.as_bytes().chunks(65536)), want);
        assert_eq!(scan(false, json.as_bytes().chunks(TAIL + 1)), want);
    }

    fn scan<'a>(sse: bool, chunks: impl IntoIterator<Item = &'a [u8]>) -> Option<Usage> {
        let mut s = UsageScanner::new(sse);
        chunks.into_iter().for_each(|c| s.feed(c));
        s.finish()
    }

    // Both cached counts at the edge of u64 overflowed the sum (a panic in debug builds): found
    // while writing the usage fuzz target, whose grammar now generates such numbers.
    #[test]
    fn cached_counts_saturate() {
        let body = br#"{"usage":{"prompt_tokens_details":{"cached_tokens":18446744073709551615},"cache_read_input_tokens":1}}"#;
        let want = Some(Usage {
            prompt: 0,
            completion: 0,
            cached: u64::MAX,
        });
        assert_eq!(scan(false, [&body[..]]), want);
        let sse = [&b"data: "[..], body, b"\n"].concat();
        assert_eq!(scan(true, [&sse[..]]), want);
    }

    // The usage target's split invariance, at the line bound it cannot reach (inputs of a few KB):
    // an over-long line is ignored whole, and its tail is never read as a line of its own.
    #[test]
    fn overlong_sse_lines_are_ignored_however_split() {
        let mut body = b"data: {\"usage\":{\"prompt_tokens\":1}}\n".to_vec();
        body.resize(body.len() + MAX_LINE + 1, b'x');
        body.extend_from_slice(b"data: {\"usage\":{\"prompt_tokens\":666}}\n");
        let want = Some(Usage {
            prompt: 1,
            ..Default::default()
        });
        assert_eq!(scan(true, [&body[..]]), want);
        let start = body.len() - MAX_LINE - 40;
        for cut in [1, start + MAX_LINE, start + MAX_LINE + 2, start + MAX_LINE + 7] {
            assert_eq!(scan(true, [&body[..cut], &body[cut..]]), want, "cut at {cut}");
        }
        assert_eq!(scan(true, body.chunks(4096)), want);
        // A line of exactly MAX_LINE bytes still counts, split or not.
        let mut line = b"data: {\"usage\":{\"prompt_tokens\":2}}".to_vec();
        line.resize(MAX_LINE, b' ');
        line.push(b'\n');
        let two = Some(Usage {
            prompt: 2,
            ..Default::default()
        });
        assert_eq!(scan(true, [&line[..]]), two);
        assert_eq!(scan(true, [&line[..10], &line[10..]]), two);
        assert_eq!(scan(true, line.chunks(1000)), two);
    }

    #[test]
    fn the_tracker_reports_once_with_status_timings_and_usage() {
        let mut t = ResponseTracker::default();
        let sse = t.on_headers(
            Some(b"200"),
            Some(b"text/event-stream; charset=utf-8"),
            Some(Duration::from_millis(20)),
            true,
        );
        assert!(sse && t.scanning() && t.started());
        t.on_chunk(b"data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n");
        let r = t
            .report("r".into(), "m".into(), "d".into(), Duration::from_millis(50))
            .unwrap();
        assert_eq!((r.status, r.stream, r.usage_seen), (200, true, true));
        assert_eq!((r.prompt_tokens, r.completion_tokens), (3, 4));
        assert_eq!((r.time_to_first_byte_us, r.duration_us), (20_000, 50_000));
        assert!(t.report("r".into(), "m".into(), "d".into(), Duration::ZERO).is_none());

        let mut t = ResponseTracker::default();
        assert!(!t.on_headers(Some(b"502"), Some(b"text/html"), None, true));
        assert!(!t.scanning(), "only JSON and SSE bodies carry usage");
        t.hand_off();
        assert!(
            t.reported()
                && t.report(String::new(), String::new(), String::new(), Duration::ZERO)
                    .is_none()
        );
    }

    #[test]
    fn the_tracker_captures_whole_bodies_only() {
        let mut t = ResponseTracker::default();
        t.capture(8);
        t.on_headers(Some(b"200"), Some(b"application/json"), None, false);
        assert!(t.wants_chunks() && !t.scanning());
        t.on_chunk(b"{\"a\":");
        t.on_chunk(b"1}");
        assert_eq!(t.take_capture(), None, "not ended: possibly cut short");
        let mut t = ResponseTracker::default();
        t.capture(8);
        t.on_chunk(b"{\"a\":1}");
        t.on_end();
        assert_eq!(t.take_capture().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(t.take_capture(), None, "once");
        let mut t = ResponseTracker::default();
        t.capture(4);
        t.on_chunk(b"{\"a\":1}");
        t.on_end();
        assert!(!t.wants_chunks());
        assert_eq!(t.take_capture(), None, "over the limit");
    }

    #[test]
    fn anthropic_stream_usage_is_merged_across_events() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":21,\"output_tokens\":1,\"cache_read_input_tokens\":4}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
        );
        let want = Some(Usage {
            prompt: 21,
            completion: 15,
            cached: 4,
        });
        for cut in 0..stream.len() {
            assert_eq!(
                scan(true, [&stream.as_bytes()[..cut], &stream.as_bytes()[cut..]]),
                want,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn anthropic_usage_names() {
        let mut s = UsageScanner::new(false);
        s.feed(br#"{"usage":{"input_tokens":4,"output_tokens":9,"cache_read_input_tokens":2}}"#);
        assert_eq!(
            s.finish(),
            Some(Usage {
                prompt: 4,
                completion: 9,
                cached: 2
            })
        );
    }
}
