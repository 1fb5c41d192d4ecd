//! An incremental server-sent-events parser: fed response chunks split anywhere, it hands over
//! each complete event (its `event:` name, its joined `data:` lines and its raw bytes) once the
//! blank line that ends it has arrived. Nothing is buffered beyond the event in progress.

/// Longest event kept; a longer one is passed through raw, unparsed (`Event::data` empty).
const MAX_EVENT: usize = 4 << 20;

/// One complete event.
#[derive(Debug)]
pub struct Event<'a> {
    /// The `event:` field, when present.
    pub name: Option<&'a str>,
    /// The `data:` lines joined with `\n` (empty for comment-only events such as keep-alives).
    pub data: &'a [u8],
    /// The event's bytes exactly as received, its terminating blank line included.
    pub raw: &'a [u8],
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Raw bytes of the event in progress (complete lines and the partial last line).
    raw: Vec<u8>,
    /// Where the partial (unterminated) line starts in `raw`.
    line_start: usize,
    name: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    /// The event in progress outgrew `MAX_EVENT`: skip to its end.
    overflow: bool,
    /// While skipping: the current line has content (so it does not end the event).
    nonblank: bool,
}

impl SseParser {
    /// Feeds the next chunk; `on_event` is called for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], on_event: &mut impl FnMut(&Event<'_>)) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let (piece, complete) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            rest = &rest[piece.len()..];
            if !self.overflow && self.raw.len() + piece.len() > MAX_EVENT {
                // Too long to translate: the event is dropped, not held without bound.
                self.overflow = true;
                self.nonblank = self.raw[self.line_start..].iter().any(|&b| b != b'\r');
                self.reset();
            }
            if self.overflow {
                let body = if complete { &piece[..piece.len() - 1] } else { piece };
                self.nonblank |= body.iter().any(|&b| b != b'\r');
                if complete {
                    if !self.nonblank {
                        self.overflow = false;
                        self.reset();
                    }
                    self.nonblank = false;
                }
                continue;
            }
            self.raw.extend_from_slice(piece);
            if complete {
                let start = std::mem::replace(&mut self.line_start, self.raw.len());
                let raw = std::mem::take(&mut self.raw);
                let line = trim_eol(&raw[start..]);
                let blank = line.is_empty();
                if !blank {
                    self.field(line);
                }
                self.raw = raw;
                if blank {
                    self.dispatch(on_event);
                }
            }
        }
    }

    /// The stream ended: an event missing its final blank line is still dispatched (raw bytes
    /// as received).
    pub fn finish(&mut self, on_event: &mut impl FnMut(&Event<'_>)) {
        if self.overflow || self.raw.is_empty() {
            self.overflow = false;
            self.reset();
            return;
        }
        if self.line_start < self.raw.len() {
            let raw = std::mem::take(&mut self.raw);
            let line = trim_eol(&raw[self.line_start..]);
            if !line.is_empty() {
                self.field(line);
            }
            self.raw = raw;
        }
        self.dispatch(on_event);
    }

    fn field(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return; // a comment
        }
        let (key, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match key {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.name = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(&Event<'_>)) {
        on_event(&Event {
            name: self.name.as_deref(),
            data: &self.data,
            raw: &self.raw,
        });
        self.reset();
    }

    fn reset(&mut self) {
        self.raw.clear();
        self.line_start = 0;
        self.name = None;
        self.data.clear();
        self.has_data = false;
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Appends one `data:` event (OpenAI style: no event name).
pub fn write_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// Appends one named event (Anthropic style: `event:` then `data:`).
pub fn write_event(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n");
    write_data(out, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<(Option<String>, String, String)> {
        let mut p = SseParser::default();
        let mut got = Vec::new();
        let mut f = |e: &Event<'_>| {
            got.push((
                e.name.map(str::to_string),
                String::from_utf8_lossy(e.data).into_owned(),
                String::from_utf8_lossy(e.raw).into_owned(),
            ))
        };
        for c in chunks {
            p.feed(c, &mut f);
        }
        p.finish(&mut f);
        got
    }

    #[test]
    fn events_are_the_same_however_the_stream_is_split() {
        let stream: &[u8] =
            b"event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: x\ndata: y\r\n\r\ndata:[DONE]\n\ndata: tail";
        let whole = events(&[stream]);
        assert_eq!(
            whole,
            vec![
                (
                    Some("message_start".into()),
                    "{\"a\":1}".into(),
                    "event: message_start\ndata: {\"a\":1}\n\n".into()
                ),
                (None, String::new(), ": keep-alive\n\n".into()),
                (None, "x\ny".into(), "data: x\ndata: y\r\n\r\n".into()),
                (None, "[DONE]".into(), "data:[DONE]\n\n".into()),
                (None, "tail".into(), "data: tail".into()),
            ]
        );
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                assert_eq!(
                    events(&[&stream[..i], &stream[i..j], &stream[j..]]),
                    whole,
                    "cut at {i},{j}"
                );
            }
        }
    }
}
