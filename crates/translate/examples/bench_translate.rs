//! `make bench`: what response translation costs per streamed chunk, for each translation, on
//! realistic streams (one SSE event per network chunk, the way providers flush tokens). Prints a
//! table and writes it to the path given as the first argument (default
//! `bench/translate-results.md`). The added time to first byte is this per-chunk cost on the
//! first chunk (the translators hold nothing back but an incomplete event).

use std::fmt::Write as _;
use std::time::Instant;

use llmsoup_translate::{ResponseTranslator, Translation};

const CHUNKS: usize = 2_000;
const ROUNDS: usize = 20;

fn openai_stream() -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(CHUNKS + 3);
    let head = r#"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"gpt-bench","choices":[{"index":0,"delta":"#;
    out.push(
        format!(
            "data: {head}{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        )
        .into_bytes(),
    );
    for i in 0..CHUNKS {
        out.push(
            format!("data: {head}{{\"content\":\" token{i}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n")
                .into_bytes(),
        );
    }
    out.push(format!("data: {head}{{}},\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n").into_bytes());
    out.push(b"data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2000,\"total_tokens\":2010}}\n\ndata: [DONE]\n\n".to_vec());
    out
}

fn anthropic_stream() -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(CHUNKS + 4);
    out.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-bench\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_vec());
    for i in 0..CHUNKS {
        out.push(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" token{i}\"}}}}\n\n").into_bytes());
    }
    out.push(b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2000}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_vec());
    out
}

/// Nanoseconds per chunk (median round), and the first chunk's cost.
fn measure(t: Translation, chunks: &[Vec<u8>]) -> (f64, f64) {
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut firsts = Vec::with_capacity(ROUNDS);
    let mut out = Vec::with_capacity(1 << 16);
    for _ in 0..ROUNDS {
        let mut r = ResponseTranslator::new(t, 200, true, 1);
        let start = Instant::now();
        for (i, c) in chunks.iter().enumerate() {
            out.clear();
            r.feed(c, &mut out);
            if i == 0 {
                firsts.push(start.elapsed().as_nanos() as f64);
            }
            std::hint::black_box(&out);
        }
        out.clear();
        r.finish(&mut out);
        rounds.push(start.elapsed().as_nanos() as f64 / chunks.len() as f64);
    }
    rounds.sort_by(f64::total_cmp);
    firsts.sort_by(f64::total_cmp);
    (rounds[ROUNDS / 2], firsts[ROUNDS / 2])
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bench/translate-results.md".into());
    let openai = openai_stream();
    let anthropic = anthropic_stream();
    let cases = [
        (
            "OpenAI stream → Anthropic client",
            Translation::AnthropicFromOpenAiChat,
            &openai,
        ),
        (
            "Anthropic stream → OpenAI client (with usage chunk)",
            Translation::OpenAiChatFromAnthropic { include_usage: true },
            &anthropic,
        ),
        (
            "OpenAI stream, usage chunk stripped",
            Translation::StripUsageChunk,
            &openai,
        ),
        ("untranslated (pass)", Translation::None, &openai),
    ];
    let mut table =
        String::from("| translation | CPU per chunk (µs, median of rounds) | first chunk (µs) |\n|---|---|---|\n");
    for (name, t, chunks) in cases {
        let (per_chunk, first) = measure(t, chunks);
        let _ = writeln!(table, "| {name} | {:.2} | {:.2} |", per_chunk / 1e3, first / 1e3);
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let report = format!(
        "# Response translation cost\n\n`cargo run --release -p llmsoup-translate --example bench_translate` ({CHUNKS} one-event chunks per stream, {ROUNDS} rounds, one thread) on {cpu}. The same code runs in the sidecar (ext_proc) and in the wasm filter (interpreted/JIT by Envoy's wasm runtime, slower than native).\n\n{table}"
    );
    print!("{report}");
    if let Err(e) = std::fs::write(&path, &report) {
        eprintln!("could not write {path}: {e}");
    }
}
