//! `make bench` (model signals): decision latency against prompt length, one at a time and at
//! concurrency 16, requests/s, and process RSS idle / after model load / after 10k requests —
//! the in-process engine with every model-based signal on (bench/signals-config.yaml).
//!
//! Every measured prompt is unique, so the embedding cache never answers (a separate row shows a
//! cached hit). Usage: cargo run --release -p llmsoup-tools --example bench_signals [-- OUT.md]

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmsoup_config as config;
use llmsoup_models::rss_bytes;
use llmsoup_router::engine::Engine;
use llmsoup_router::request::RequestView;

const WORDS: &[&str] = &[
    "the", "system", "request", "model", "latency", "customer", "order", "refund", "theorem", "contract", "patient",
    "design", "network", "price", "history", "river", "garden", "engine", "policy", "market", "signal", "cloud",
    "energy", "budget", "travel", "report", "student", "memory", "window", "quarter", "forecast", "library",
];

/// A prompt of about `tokens` tokens (≈ 4 bytes each), unique per `seed`.
fn prompt(tokens: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = format!("request {seed}:");
    while out.len() < tokens * 4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(' ');
        out.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn mb(b: Option<u64>) -> String {
    b.map_or("?".into(), |b| format!("{:.0}", b as f64 / (1 << 20) as f64))
}

async fn route(engine: &Engine, text: &str) -> Duration {
    let start = Instant::now();
    engine.route(&RequestView::from_text(text)).await.expect("routes");
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bench/signals-results.md".into());
    let rss_idle = rss_bytes();
    let engine = Arc::new(Engine::new(config::load_file("bench/signals-config.yaml".as_ref())?)?);
    // First request loads the model and embeds every prototype bank.
    let first = route(&engine, "warm up the model please").await;
    let rss_loaded = rss_bytes();
    for i in 0..20 {
        route(&engine, &prompt(64, 1_000_000 + i)).await;
    }

    let mut md = String::new();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    md.push_str(&format!(
        "# llmsoup model-signal benchmark\n\n- date: {}\n- machine: {nproc} CPUs; release build; Candle on CPU, all-MiniLM-L6-v2 (F32)\n\
         - config: bench/signals-config.yaml (keyword + embedding + 3 domains + complexity; one shared embedding per request)\n\
         - `embedding.max_tokens` = {} (longer prompts keep head + tail)\n- first request (model load + prototype banks): {:.0} ms\n\n",
        std::process::Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default(),
        engine.config().embedding.max_tokens,
        first.as_secs_f64() * 1e3
    ));
    md.push_str("## Decision latency, one request at a time (unique prompts)\n\n| prompt tokens | p50 ms | p99 ms | n |\n|---:|---:|---:|---:|\n");
    let mut seed = 0u64;
    let mut p50_at = std::collections::HashMap::new();
    for tokens in [8usize, 64, 512, 2048, 8192] {
        let n = if tokens >= 2048 { 40 } else { 100 };
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            seed += 1;
            lat.push(route(&engine, &prompt(tokens, seed)).await);
        }
        lat.sort();
        p50_at.insert(tokens, pct(&lat, 0.5));
        md.push_str(&format!(
            "| {tokens} | {:.2} | {:.2} | {n} |\n",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        ));
        eprintln!("{tokens} tokens: p50 {:.2} ms", pct(&lat, 0.5));
    }
    let cached = prompt(64, 1);
    route(&engine, &cached).await;
    let mut lat: Vec<Duration> = Vec::new();
    for _ in 0..200 {
        lat.push(route(&engine, &cached).await);
    }
    lat.sort();
    md.push_str(&format!(
        "| 64 (cached embedding) | {:.3} | {:.3} | 200 |\n\n",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    ));

    // Concurrency 16: micro-batching folds concurrent requests into one forward pass.
    let total = 1600usize;
    let start = Instant::now();
    let mut tasks = Vec::new();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(10_000_000));
    for _ in 0..16 {
        let (engine, next) = (engine.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for _ in 0..total / 16 {
                let s = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                lat.push(route(&engine, &prompt(64, s)).await);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = start.elapsed();
    lat.sort();
    let rps = total as f64 / elapsed.as_secs_f64();
    md.push_str(&format!(
        "## Concurrency 16 (64-token unique prompts)\n\n| requests | req/s | p50 ms | p99 ms |\n|---:|---:|---:|---:|\n| {total} | {rps:.0} | {:.1} | {:.1} |\n\n",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    ));

    // 10k requests for memory: 2,000 distinct 16-token prompts over a 1,024-entry cache (misses and evictions).
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..625u64 {
                route(&engine, &prompt(16, 20_000_000 + (w * 625 + i) % 2000)).await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let rss_after = rss_bytes();
    md.push_str(&format!(
        "## Memory (process RSS, MB)\n\n| idle | model loaded | after 10k more requests |\n|---:|---:|---:|\n| {} | {} | {} |\n\n(10k requests took {:.1} s)\n\n",
        mb(rss_idle),
        mb(rss_loaded),
        mb(rss_after),
        start.elapsed().as_secs_f64()
    ));

    let check = |ok: bool| if ok { "met" } else { "MISSED" };
    let rss_ok = rss_after.is_some_and(|r| r < 200 << 20);
    md.push_str(&format!(
        "## Targets\n\n- p50 ≤ 10 ms at 64 tokens: {} ({:.1} ms)\n- p50 ≤ 25 ms at 2K tokens: {} ({:.1} ms)\n- ≥ 150 req/s at concurrency 16: {} ({rps:.0})\n- RSS ≤ 200 MB with the model loaded, flat under load: {} ({} MB → {} MB)\n",
        check(p50_at[&64] <= 10.0),
        p50_at[&64],
        check(p50_at[&2048] <= 25.0),
        p50_at[&2048],
        check(rps >= 150.0),
        check(rss_ok),
        mb(rss_loaded),
        mb(rss_after)
    ));
    std::fs::write(&out, &md)?;
    println!("{md}");
    println!("written to {out}");
    Ok(())
}
