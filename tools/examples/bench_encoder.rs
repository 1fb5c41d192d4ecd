//! The encoder alone, in process: wall and CPU time per forward pass for one text and for
//! batches of 16, at several window lengths and on every precision path this CPU offers. A profiling aid for the
//! numbers `bench_route` reports end to end.
//!
//! cargo run --release -p llmsoup-tools --example bench_encoder -- [MODEL_DIR] [ITERATIONS]

use std::path::PathBuf;
use std::time::Instant;

use llmsoup_config::Precision;
use llmsoup_models::candle_core;
use llmsoup_models::{Int8Kernel, SentenceEncoder};

fn cpu_seconds() -> f64 {
    // utime + stime of the whole process, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = after.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // Fields after the command: state(skipped, not numeric) ppid pgrp ... utime is the 12th numeric.
    (f.get(10).copied().unwrap_or(0.0) + f.get(11).copied().unwrap_or(0.0)) / 100.0
}

/// VmHWM: the process's peak resident set, in kB.
fn peak_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn text(words: usize, seed: usize) -> String {
    const W: &[&str] = &[
        "the", "system", "request", "model", "latency", "customer", "order", "refund", "theorem", "contract",
        "patient", "design", "network", "price", "history", "river", "garden", "engine",
    ];
    let mut s = format!("request {seed}:");
    for i in 0..words {
        s.push(' ');
        s.push_str(W[(i * 7 + seed * 13) % W.len()]);
    }
    s
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| ".cache/models/all-MiniLM-L6-v2".into()));
    let iters: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(50);
    let only = std::env::var("ONLY").ok();
    // Every path this CPU offers: exact f32, bf16 on AMX (f32 again where there is none),
    // and each int8 kernel (`int8-avx2`, `int8-avx512vnni`, ...).
    let mut paths: Vec<(String, Option<Precision>, Option<Int8Kernel>)> = vec![
        ("f32".into(), Some(Precision::F32), None),
        ("bf16".into(), Some(Precision::Bf16), None),
    ];
    for k in Int8Kernel::available() {
        paths.push((format!("int8-{}", k.name()), None, Some(k)));
    }
    for (name, precision, kernel) in paths {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let before = llmsoup_models::rss_bytes().unwrap_or(0);
        let enc = match (precision, kernel) {
            (_, Some(k)) => SentenceEncoder::load_int8(&dir, 128, k)?,
            (p, None) => SentenceEncoder::load_with(&dir, 128, candle_core::Device::Cpu, p.unwrap_or_default())?,
        };
        if name == "bf16" && enc.dense_path() != "bf16-amx" {
            println!("bf16: no AMX on this CPU, skipped");
            continue;
        }
        let loaded = llmsoup_models::rss_bytes().unwrap_or(0);
        println!(
            "{name}: RSS {} MB before load, {} MB loaded, peak so far {} MB",
            before >> 20,
            loaded >> 20,
            peak_kb() >> 10
        );
        for (batch, words) in [(1, 8), (1, 40), (1, 126), (16, 40), (16, 126)] {
            let texts: Vec<String> = (0..batch * (iters + 2)).map(|i| text(words, i)).collect();
            let tokens = enc.ids(&texts[0])?.len();
            let mut chunks = texts.chunks(batch);
            for c in chunks.by_ref().take(2) {
                let refs: Vec<&str> = c.iter().map(String::as_str).collect();
                enc.embed(&refs)?;
            }
            let (t0, c0) = (Instant::now(), cpu_seconds());
            for c in chunks {
                let refs: Vec<&str> = c.iter().map(String::as_str).collect();
                enc.embed(&refs)?;
            }
            let wall = t0.elapsed().as_secs_f64() * 1e3 / iters as f64;
            let cpu = (cpu_seconds() - c0) * 1e3 / iters as f64;
            println!(
                "{:16} batch {batch:2} × {tokens:3} tokens: {wall:7.2} ms wall, {cpu:7.2} ms cpu per pass, {:6.1} texts/s",
                name,
                batch as f64 * 1e3 / wall
            );
        }
    }
    println!(
        "RSS at exit {} MB, peak {} MB",
        llmsoup_models::rss_bytes().unwrap_or(0) >> 20,
        peak_kb() >> 10
    );
    Ok(())
}
