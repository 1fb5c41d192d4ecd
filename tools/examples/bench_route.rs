//! `make bench` (model signals): the release sidecar, started here on a free 127.0.0.1 port with
//! every model-based signal on (bench/signals-config.yaml), driven through its `llmsoup.v1.Router`
//! gRPC service — the same `Route` call the proxy-wasm filter makes for each request.
//!
//! Measures, client-side: decision latency p50/p99 against prompt length (≈ 8, 64, 512, 2K, 8K
//! tokens at ≈ 4 bytes a token), one request at a time and at concurrency 16, with requests/s;
//! one cached-hit row (the same prompt again); the sidecar's CPU per request (/proc/PID/stat);
//! and its RSS (VmRSS in /proc/PID/status) idle, after the first request (model loaded) and
//! after 10,000 requests. Every measured prompt is unique (a request counter and varied words),
//! so the sidecar's embedding cache never answers except in the cached-hit row.
//!
//! Writes a markdown report (and prints it). Reports, does not gate: exits 0 whether or not the
//! targets are met, non-zero only when the benchmark could not run. The sidecar is killed at the
//! end, on error, on timeout, on Ctrl-C and on SIGTERM.
//!
//! ```text
//! cargo run --release -p llmsoup-tools --example bench_route -- \
//!     --bin target/release/llmsoup --config bench/signals-config.yaml --out bench/signals-results.md
//! ```
//! Run it from the repository root (the config's model path is relative to the sidecar's working
//! directory, which is this process's). Knobs: see `--help`.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use llmsoup_contract::v1::{Header, RouteRequest, route_response::Action, router_client::RouterClient};
use tonic::transport::Channel;

#[derive(Parser, Clone)]
#[command(about = "Model-signal benchmark of the llmsoup sidecar over its Router gRPC service")]
struct Args {
    /// The sidecar binary (a release build).
    #[arg(long, env = "BENCH_SIDECAR_BIN", default_value = "target/release/llmsoup")]
    bin: PathBuf,
    /// Sidecar config; its `server.grpc_listen` must take the port from LLMSOUP_GRPC_PORT.
    #[arg(
        long,
        short,
        env = "BENCH_SIGNALS_CONFIG",
        default_value = "bench/signals-config.yaml"
    )]
    config: PathBuf,
    /// Markdown report to write.
    #[arg(long, short, default_value = "bench/signals-results.md")]
    out: PathBuf,
    /// Requests per prompt length, one at a time.
    #[arg(long, env = "BENCH_SEQ_REQUESTS", default_value_t = 200)]
    sequential: u64,
    /// Requests at concurrency 16 with 64-token prompts (the req/s target).
    #[arg(long, env = "BENCH_CONC_REQUESTS", default_value_t = 2000)]
    concurrent: u64,
    /// Requests at concurrency 16 for each other prompt length.
    #[arg(long, env = "BENCH_CONC_OTHER_REQUESTS", default_value_t = 160)]
    concurrent_other: u64,
    /// Concurrent in-flight requests for the concurrent rows.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests with fresh prompts (cache misses, all phases) after which the final RSS is read.
    #[arg(long, env = "BENCH_TOTAL_REQUESTS", default_value_t = 10_000)]
    total: u64,
    /// Time cap of each measured phase, in seconds (a phase that hits it reports fewer requests).
    #[arg(long, env = "BENCH_PHASE_SECS", default_value_t = 120)]
    phase_secs: u64,
    /// Time cap of the whole run, in seconds.
    #[arg(long, env = "BENCH_TIMEOUT", default_value_t = 1500)]
    timeout_secs: u64,
    /// Sidecar log filter.
    #[arg(long, env = "BENCH_SIDECAR_LOG", default_value = "info")]
    sidecar_log: String,
    /// Keep the sidecar's log file.
    #[arg(long, env = "BENCH_KEEP")]
    keep: bool,
}

const LENGTHS: [usize; 5] = [8, 64, 512, 2048, 8192];
const TARGET_RPS_TOKENS: usize = 64;

// ---------------------------------------------------------------------------------------------
// The sidecar process.

/// The running sidecar; killed (and reaped) when dropped, so every exit path stops it.
struct Sidecar {
    child: Child,
    pid: u32,
    port: u16,
    log: PathBuf,
    keep_log: bool,
}

impl Sidecar {
    fn start(args: &Args) -> anyhow::Result<Sidecar> {
        let bin = args.bin.canonicalize().with_context(|| {
            format!(
                "sidecar binary {} (build it: cargo build --release -p llmsoup)",
                args.bin.display()
            )
        })?;
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("llmsoup-bench-route-{}.log", std::process::id()));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&bin)
            .arg("serve")
            .arg("-c")
            .arg(&args.config)
            .env("LLMSOUP_GRPC_PORT", port.to_string())
            .env("LLMSOUP_LOG", &args.sidecar_log)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        Ok(Sidecar {
            child,
            pid,
            port,
            log,
            keep_log: args.keep,
        })
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Fails (with the log's tail) when the sidecar has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the sidecar exited ({status}); its log ends:\n{}", self.log_tail(30));
        }
        Ok(())
    }

    /// Waits until the gRPC port accepts connections.
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "the sidecar did not listen on {} within {timeout:?}; its log ends:\n{}",
                    self.addr(),
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        let all: Vec<&str> = s.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|s| s.contains(needle))
    }

    /// (VmRSS, VmHWM) in bytes.
    fn rss(&self) -> Mem {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kb| kb * 1024)
        };
        Mem {
            rss: field("VmRSS:"),
            peak: field("VmHWM:"),
        }
    }

    /// User + system CPU time so far.
    fn cpu(&self) -> Duration {
        cpu_time(&self.pid.to_string())
    }
}

/// User + system CPU time of a process (`self` for this one).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15 (1-based).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.keep_log {
            eprintln!("sidecar log kept: {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free 127.0.0.1 port")?;
    Ok(l.local_addr()?.port())
}

#[derive(Clone, Copy, Default)]
struct Mem {
    rss: Option<u64>,
    peak: Option<u64>,
}

fn mb(b: Option<u64>) -> String {
    b.map_or("?".into(), |b| format!("{:.0}", b as f64 / f64::from(1 << 20)))
}

// ---------------------------------------------------------------------------------------------
// Prompts: varied, realistic-looking English, unique per request id.

const SUBJECTS: &[&str] = &[
    "my landlord",
    "the patient",
    "our team",
    "the customer",
    "my doctor",
    "the court",
    "a student",
    "the airline",
    "our accountant",
    "my neighbour",
    "the committee",
    "the teacher",
    "the contractor",
    "my bank",
    "the hospital",
    "the city council",
    "the insurer",
    "my manager",
    "the pharmacist",
    "the tenant",
    "our supplier",
    "the professor",
    "the judge",
    "my sister",
];
const VERBS: &[&str] = &[
    "asked about",
    "disputed",
    "reviewed",
    "explained",
    "rejected",
    "approved",
    "calculated",
    "described",
    "questioned",
    "postponed",
    "compared",
    "estimated",
    "summarised",
    "refunded",
    "measured",
    "negotiated",
    "forgot",
    "changed",
    "checked",
    "published",
    "signed",
    "cancelled",
];
const ADJECTIVES: &[&str] = &[
    "monthly",
    "unexpected",
    "final",
    "detailed",
    "quarterly",
    "expensive",
    "recent",
    "complicated",
    "annual",
    "missing",
    "chronic",
    "linear",
    "regional",
    "late",
    "standard",
    "second",
    "revised",
    "informal",
    "weekly",
    "original",
    "shared",
    "temporary",
];
const NOUNS: &[&str] = &[
    "invoice",
    "lease agreement",
    "blood pressure",
    "probability",
    "contract",
    "insurance claim",
    "derivative",
    "prescription",
    "mortgage rate",
    "flight delay",
    "warranty",
    "budget",
    "symptoms",
    "equation",
    "tax return",
    "delivery",
    "diagnosis",
    "statute",
    "integral",
    "subscription",
    "recipe",
    "itinerary",
    "vaccine",
    "settlement",
    "garden plan",
    "exam results",
    "shipping fee",
    "matrix",
    "dosage",
    "appeal",
    "payroll",
    "timetable",
];
const TAILS: &[&str] = &[
    "last week",
    "before the deadline",
    "without any explanation",
    "in great detail",
    "for the third time",
    "after the meeting",
    "on Friday morning",
    "according to the report",
    "with a few examples",
    "step by step",
    "as soon as possible",
    "during the appointment",
    "over the phone",
    "in the spring",
    "by email yesterday",
    "for the whole family",
];
const QUESTIONS: &[&str] = &[
    "What should I do next?",
    "Can you explain why?",
    "Is that normal?",
    "How would you handle it?",
    "What are my options?",
    "Could you summarise the main points?",
    "Which one is cheaper?",
    "Is there a simpler way to work it out?",
    "Who is responsible here?",
    "How long will it take?",
];

/// splitmix64
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pick<'a>(state: &mut u64, words: &[&'a str]) -> &'a str {
    words[(next(state) % words.len() as u64) as usize]
}

/// A prompt of about `tokens` tokens (≈ 4 bytes each), unique per `id`.
fn prompt(tokens: usize, id: u64) -> String {
    let target = tokens * 4;
    let mut state = id ^ 0x5eed;
    let mut out = format!("Request {id}:");
    while out.len() < target {
        let mut s = format!(
            " {} {} the {} {} {}.",
            pick(&mut state, SUBJECTS),
            pick(&mut state, VERBS),
            pick(&mut state, ADJECTIVES),
            pick(&mut state, NOUNS),
            pick(&mut state, TAILS)
        );
        if next(&mut state).is_multiple_of(3) {
            s.push(' ');
            s.push_str(pick(&mut state, QUESTIONS));
        }
        out.push_str(&s);
    }
    if out.len() > target {
        // Cut at a word boundary (everything is ASCII).
        let cut = out[..target].rfind(' ').filter(|&c| c > 0).unwrap_or(target);
        out.truncate(cut);
    }
    out
}

fn chat_body(text: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": "auto",
        "messages": [{"role": "user", "content": text}],
    }))
    .expect("serialises")
}

// ---------------------------------------------------------------------------------------------
// Driving Router/Route.

struct Client {
    grpc: RouterClient<Channel>,
    /// Unique prompt ids (and seeds): how many fresh prompts (cache misses) were sent.
    ids: Arc<AtomicU64>,
    /// Requests sent in all phases.
    sent: Arc<AtomicU64>,
    decisions: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Clone for Client {
    fn clone(&self) -> Self {
        Client {
            grpc: self.grpc.clone(),
            ids: self.ids.clone(),
            sent: self.sent.clone(),
            decisions: self.decisions.clone(),
        }
    }
}

struct Routed {
    latency: Duration,
    decision: Option<String>,
}

impl Client {
    async fn route_text(&mut self, text: &str) -> anyhow::Result<Routed> {
        let id = self.sent.fetch_add(1, Ordering::Relaxed);
        let request = RouteRequest {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: vec![Header {
                name: "content-type".into(),
                value: b"application/json".to_vec(),
            }],
            body: chat_body(text),
            client: String::new(),
            request_id: format!("bench-{id}"),
        };
        let start = Instant::now();
        let response = self.grpc.route(request).await;
        let latency = start.elapsed();
        let response = response.map_err(|s| anyhow::anyhow!("Route failed: {} {}", s.code(), s.message()))?;
        let r = response.into_inner();
        match r.action {
            Some(Action::Forward(_)) => {
                let decision = (!r.decision.is_empty()).then(|| r.decision.clone());
                let key = format!("{} → {}", decision.as_deref().unwrap_or("(none)"), r.model);
                *self.decisions.lock().expect("not poisoned").entry(key).or_default() += 1;
                Ok(Routed { latency, decision })
            }
            Some(Action::Reply(reply)) => bail!(
                "Route answered locally with {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ),
            None => bail!("Route returned no action"),
        }
    }
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

struct Phase {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// Sidecar CPU time.
    cpu: Duration,
    /// This process's CPU time (the load generator shares the machine).
    client_cpu: Duration,
}

impl Phase {
    fn p(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1e3
    }
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn cpu_ms_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e3 / (self.ok + self.errors).max(1) as f64
    }
    fn client_cpu_ms_per_request(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e3 / (self.ok + self.errors).max(1) as f64
    }
}

/// Sends `requests` Route calls (`concurrency` in flight), each with a fresh `tokens`-token
/// prompt (or `fixed` every time), stopping early at `budget`.
async fn phase(
    client: &Client,
    sidecar: &Sidecar,
    tokens: usize,
    fixed: Option<&str>,
    requests: u64,
    concurrency: usize,
    budget: Duration,
) -> anyhow::Result<Phase> {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (cpu0, client_cpu0) = (sidecar.cpu(), cpu_time("self"));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (mut client, issued, fixed) = (client.clone(), issued.clone(), fixed.map(str::to_owned));
        tasks.push(tokio::spawn(async move {
            let mut out = Phase {
                hist: histogram(),
                ok: 0,
                errors: 0,
                first_error: None,
                elapsed: Duration::ZERO,
                cpu: Duration::ZERO,
                client_cpu: Duration::ZERO,
            };
            while start.elapsed() < budget && issued.fetch_add(1, Ordering::Relaxed) < requests {
                let text = match &fixed {
                    Some(t) => t.clone(),
                    None => prompt(tokens, client.ids.fetch_add(1, Ordering::Relaxed)),
                };
                match client.route_text(&text).await {
                    Ok(r) => {
                        out.ok += 1;
                        out.hist.saturating_record(r.latency.as_micros() as u64);
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            out
        }));
    }
    let mut total = Phase {
        hist: histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        cpu: Duration::ZERO,
        client_cpu: Duration::ZERO,
    };
    for t in tasks {
        let p = t.await.context("bench task panicked")?;
        total.hist.add(&p.hist).expect("same bounds");
        total.ok += p.ok;
        total.errors += p.errors;
        total.first_error = total.first_error.or(p.first_error);
    }
    total.elapsed = start.elapsed();
    total.cpu = sidecar.cpu().saturating_sub(cpu0);
    total.client_cpu = cpu_time("self").saturating_sub(client_cpu0);
    if total.ok == 0 {
        bail!(
            "no request succeeded ({} errors): {}",
            total.errors,
            total.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// The run.

fn label(tokens: usize) -> String {
    if tokens >= 1024 {
        format!("{}K", tokens / 1024)
    } else {
        tokens.to_string()
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn load1() -> f64 {
    loadavg()
        .split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0.0)
}

/// Which of the encoder's CPU paths this machine offers (`auto` picks AMX bf16 when present).
fn cpu_flags() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| if flags.contains(&f) { "yes" } else { "no" };
    format!("AMX-BF16 {}, AVX-512 VNNI {}", has("amx_bf16"), has("avx512_vnni"))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "?".into())
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

struct Row {
    tokens: usize,
    bytes: usize,
    seq: Phase,
    conc: Phase,
}

async fn run(args: &Args, sidecar: &mut Sidecar) -> anyhow::Result<String> {
    // The sidecar's embedding settings, for the report (the same loader, so the same env expansion).
    let embedding = llmsoup_config::load_file(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?
        .embedding;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all CPUs".to_string());
    let load_before = loadavg();
    let load1_before = load1();
    let ready = sidecar.wait_ready(Duration::from_secs(30))?;
    // Idle: listening, nothing routed yet (the model loads lazily, on the first request).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = sidecar.rss();
    eprintln!(
        "sidecar pid {} on {} (ready in {ready:?}); RSS idle {} MB",
        sidecar.pid,
        sidecar.addr(),
        mb(idle.rss)
    );

    let channel = Channel::from_shared(format!("http://{}", sidecar.addr()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .context("connecting to the sidecar")?;
    let mut client = Client {
        grpc: RouterClient::new(channel).max_decoding_message_size(64 << 20),
        ids: Arc::new(AtomicU64::new(0)),
        sent: Arc::new(AtomicU64::new(0)),
        decisions: Arc::new(Mutex::new(BTreeMap::new())),
    };

    // First request: loads the model and embeds every prototype bank. It must be routed by the
    // embedding rule, or the model signals are not running and the numbers would mean nothing.
    let id = client.ids.fetch_add(1, Ordering::Relaxed);
    let first = client
        .route_text(&format!(
            "My card was charged twice for the same order and I want a refund. (request {id})"
        ))
        .await?;
    let loaded = sidecar.rss();
    sidecar.check_alive()?;
    if first.decision.as_deref() != Some("billing") {
        bail!(
            "the first request was routed to {:?}, not `billing` by the embedding rule: the model signals are not \
             running (is the model in .cache/models? run `make models`); the sidecar log ends:\n{}",
            first.decision,
            sidecar.log_tail(20)
        );
    }
    let model_loaded_logged = sidecar.log_contains("embedding model loaded");
    eprintln!(
        "first request (model load + prototype banks) {:.0} ms; RSS {} MB",
        first.latency.as_secs_f64() * 1e3,
        mb(loaded.rss)
    );

    // Warm-up: a few requests of each length, then some at 64 tokens.
    for tokens in LENGTHS {
        for _ in 0..5 {
            let id = client.ids.fetch_add(1, Ordering::Relaxed);
            client.route_text(&prompt(tokens, id)).await?;
        }
    }
    for _ in 0..20 {
        let id = client.ids.fetch_add(1, Ordering::Relaxed);
        client.route_text(&prompt(64, id)).await?;
    }

    let budget = Duration::from_secs(args.phase_secs);
    let mut rows = Vec::new();
    for tokens in LENGTHS {
        let seq = phase(&client, sidecar, tokens, None, args.sequential, 1, budget).await?;
        eprintln!(
            "{:>4} tokens, one at a time: p50 {:.2} ms  p99 {:.2} ms  ({} requests, {:.1} ms CPU each)",
            label(tokens),
            seq.p(0.5),
            seq.p(0.99),
            seq.ok,
            seq.cpu_ms_per_request()
        );
        let n = if tokens == TARGET_RPS_TOKENS {
            args.concurrent
        } else {
            args.concurrent_other
        };
        let conc = phase(&client, sidecar, tokens, None, n, args.concurrency, budget).await?;
        eprintln!(
            "{:>4} tokens, concurrency {}: {:.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ({} requests)",
            label(tokens),
            args.concurrency,
            conc.rps(),
            conc.p(0.5),
            conc.p(0.99),
            conc.ok
        );
        sidecar.check_alive()?;
        rows.push(Row {
            tokens,
            bytes: prompt(tokens, 0).len(),
            seq,
            conc,
        });
    }

    // Cached hit: the same 64-token prompt again (its embedding is in the sidecar's cache).
    let same = prompt(64, u64::MAX / 2);
    client.route_text(&same).await?;
    let cached_seq = phase(&client, sidecar, 64, Some(&same), args.sequential, 1, budget).await?;
    let cached_conc = phase(
        &client,
        sidecar,
        64,
        Some(&same),
        args.concurrent,
        args.concurrency,
        budget,
    )
    .await?;
    eprintln!(
        "cached: p50 {:.3} ms one at a time, {:.0} req/s at concurrency {}",
        cached_seq.p(0.5),
        cached_conc.rps(),
        args.concurrency
    );

    // Fill up to `total` fresh-prompt requests at concurrency 16 with 64-token prompts (every one
    // misses the cache, so it fills and evicts), sampling RSS every 1,000 requests.
    let mut samples = Vec::new();
    let fill_start = Instant::now();
    let mut fill_deadline_hit = false;
    loop {
        let fresh = client.ids.load(Ordering::Relaxed);
        if fresh >= args.total {
            break;
        }
        if fill_start.elapsed() > Duration::from_secs(args.phase_secs * 3) {
            fill_deadline_hit = true;
            break;
        }
        let chunk = (args.total - fresh).min(1000);
        let p = phase(&client, sidecar, 64, None, chunk, args.concurrency, budget).await?;
        sidecar.check_alive()?;
        let m = sidecar.rss();
        let fresh = client.ids.load(Ordering::Relaxed);
        samples.push((fresh, m.rss));
        eprintln!(
            "{fresh} fresh-prompt requests: RSS {} MB ({:.0} req/s)",
            mb(m.rss),
            p.rps()
        );
    }
    let after = sidecar.rss();
    let sent = client.sent.load(Ordering::Relaxed);
    let fresh = client.ids.load(Ordering::Relaxed);
    let load_after = loadavg();

    // ---- Report.
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = String::new();
    let w = &mut md;
    use std::fmt::Write as _;
    writeln!(w, "# llmsoup model-signal benchmark (Router gRPC)\n")?;
    writeln!(w, "- date: {}", now_utc())?;
    writeln!(w, "- machine: {nproc} CPUs ({})", cpu_model())?;
    writeln!(
        w,
        "- load average (1/5/15 min): {load_before} before, {load_after} after{}",
        if load1_before > 0.5 {
            " — the machine was not idle before the run, so these numbers are upper bounds"
        } else {
            ""
        }
    )?;
    writeln!(
        w,
        "- sidecar: `{} serve -c {}` (release), on CPU ({threads} threads per forward pass), model `{}`; \
         every model signal (embedding rule, 3 built-in domains, complexity) plus a keyword rule, one shared \
         embedding per request; `embedding`: precision {} (this CPU: {}), max_tokens {} (longer prompts keep \
         head + tail), batch_size {}, workers {}, cache_entries {}",
        args.bin.display(),
        args.config.display(),
        embedding.model,
        serde_json::to_value(embedding.precision)?.as_str().unwrap_or("?"),
        cpu_flags(),
        embedding.max_tokens,
        embedding.batch_size,
        embedding.workers,
        embedding.cache_entries
    )?;
    writeln!(
        w,
        "- client: this example (tonic, one HTTP/2 connection, on the same machine), latency measured around each \
         `Router/Route` call; prompts are unique (request counter + varied words), so the embedding cache misses \
         except in the cached rows; tokens ≈ bytes / 4"
    )?;
    writeln!(
        w,
        "- first request (model load + prototype banks): {:.0} ms{}\n",
        first.latency.as_secs_f64() * 1e3,
        if model_loaded_logged {
            ""
        } else {
            " (no `embedding model loaded` line in the sidecar log)"
        }
    )?;

    writeln!(w, "## Decision latency against prompt length\n")?;
    writeln!(
        w,
        "| prompt tokens | bytes | 1 at a time: p50 ms | p99 ms | n | sidecar CPU ms/req \
         | c={c}: req/s | p50 ms | p99 ms | n | sidecar CPU ms/req | client CPU ms/req |",
        c = args.concurrency
    )?;
    writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let line = |name: String, bytes: usize, seq: &Phase, conc: &Phase| {
        format!(
            "| {name} | {bytes} | {:.2} | {:.2} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {} | {:.1} | {:.2} |",
            seq.p(0.5),
            seq.p(0.99),
            seq.ok,
            seq.cpu_ms_per_request(),
            conc.rps(),
            conc.p(0.5),
            conc.p(0.99),
            conc.ok,
            conc.cpu_ms_per_request(),
            conc.client_cpu_ms_per_request()
        )
    };
    for r in &rows {
        writeln!(w, "{}", line(label(r.tokens), r.bytes, &r.seq, &r.conc))?;
    }
    writeln!(
        w,
        "{}\n",
        line("64, cached hit".into(), same.len(), &cached_seq, &cached_conc)
    )?;
    writeln!(
        w,
        "Latency is client-side around each call (gRPC over loopback included). CPU ms/req is the sidecar's \
         user + system CPU over the phase divided by its requests (> wall time when a forward pass uses both \
         cores); client CPU is this load generator's, which shares the machine. Prompts over `max_tokens` \
         model tokens ({}) are windowed (head + tail) before the model, so 512, 2K and 8K cost about the same \
         (this text has ≈ 6 bytes per MiniLM token, so the 64-token row is ≈ 45 model tokens).\n",
        embedding.max_tokens
    )?;
    let errors: u64 =
        rows.iter().map(|r| r.seq.errors + r.conc.errors).sum::<u64>() + cached_seq.errors + cached_conc.errors;
    if errors > 0 {
        let first_error = rows
            .iter()
            .flat_map(|r| [&r.seq.first_error, &r.conc.first_error])
            .find_map(|e| e.clone())
            .unwrap_or_default();
        writeln!(w, "**{errors} failed requests** (first: {first_error})\n")?;
    }
    let short_phases: Vec<String> = rows
        .iter()
        .filter(|r| r.seq.ok + r.seq.errors < args.sequential)
        .map(|r| format!("{} tokens one at a time", label(r.tokens)))
        .collect();
    if !short_phases.is_empty() {
        writeln!(
            w,
            "Stopped at the {} s phase cap: {}.\n",
            args.phase_secs,
            short_phases.join(", ")
        )?;
    }

    writeln!(w, "## Sidecar memory (VmRSS, MB)\n")?;
    writeln!(
        w,
        "| idle | model loaded (after 1st request) | after {fresh} fresh-prompt requests ({sent} in all) | peak (VmHWM) |"
    )?;
    writeln!(w, "|---:|---:|---:|---:|")?;
    writeln!(
        w,
        "| {} | {} | {} | {} |\n",
        mb(idle.rss),
        mb(loaded.rss),
        mb(after.rss),
        mb(after.peak)
    )?;
    if !samples.is_empty() {
        let s: Vec<String> = samples.iter().map(|(n, r)| format!("{n}: {}", mb(*r))).collect();
        writeln!(
            w,
            "RSS while filling to {} fresh-prompt requests at concurrency {} with 64-token prompts \
             (requests so far: MB): {}\n",
            args.total,
            args.concurrency,
            s.join(", ")
        )?;
    }
    if fill_deadline_hit {
        writeln!(w, "The fill to {} requests stopped at its time cap.\n", args.total)?;
    }

    writeln!(w, "## Decisions seen (all requests)\n")?;
    for (k, v) in client.decisions.lock().expect("not poisoned").iter() {
        writeln!(w, "- {k}: {v}")?;
    }
    writeln!(w)?;

    // Targets.
    let row = |t: usize| rows.iter().find(|r| r.tokens == t).expect("measured");
    let (p64, p2k) = (row(64).seq.p(0.5), row(2048).seq.p(0.5));
    let rps = row(TARGET_RPS_TOKENS).conc.rps();
    let fill_rss: Vec<u64> = samples.iter().filter_map(|(_, r)| *r).collect();
    let spread = match (fill_rss.iter().min(), fill_rss.iter().max()) {
        (Some(lo), Some(hi)) => Some(hi - lo),
        _ => None,
    };
    let max_rss = [loaded.rss, after.rss]
        .into_iter()
        .flatten()
        .chain(fill_rss.iter().copied())
        .max();
    let rss_ok =
        max_rss.is_some_and(|m| m <= 200 << 20) && spread.is_some_and(|s| s <= 10 << 20) && fresh >= args.total;
    let mark = |ok: bool| if ok { "met" } else { "**missed**" };
    writeln!(w, "## Targets\n")?;
    writeln!(w, "| target | measured | |\n|---|---|---|")?;
    writeln!(
        w,
        "| p50 ≤ 10 ms at 64 tokens (one at a time) | {p64:.2} ms | {} |",
        mark(p64 <= 10.0)
    )?;
    writeln!(
        w,
        "| p50 ≤ 25 ms at 2K tokens (one at a time) | {p2k:.2} ms | {} |",
        mark(p2k <= 25.0)
    )?;
    writeln!(
        w,
        "| ≥ 150 req/s at concurrency {} (64 tokens, cache misses) | {rps:.0} req/s | {} |",
        args.concurrency,
        mark(rps >= 150.0)
    )?;
    writeln!(
        w,
        "| RSS ≤ 200 MB with MiniLM loaded, flat under load (samples over the last requests within 10 MB) | \
         {} MB loaded, {} MB after {fresh}, max sampled {} MB, spread {} MB | {} |",
        mb(loaded.rss),
        mb(after.rss),
        mb(max_rss),
        mb(spread),
        mark(rss_ok)
    )?;
    writeln!(
        w,
        "| (peak RSS, VmHWM, over the whole run incl. {}-way batches of {}-token windows) | {} MB | {} |",
        args.concurrency,
        embedding.max_tokens,
        mb(after.peak),
        if after.peak.is_some_and(|p| p <= 200 << 20) {
            "≤ 200 MB"
        } else {
            "**over 200 MB** (transient)"
        }
    )?;
    if load1_before > 0.5 {
        writeln!(
            w,
            "\nThe 1-minute load average was {load1_before:.2} before the run (something else was using the CPUs): \
             the latencies are upper bounds and req/s lower bounds."
        )?;
    }
    Ok(md)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.config.is_file() {
        bail!(
            "config {} not found (run from the repository root)",
            args.config.display()
        );
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sidecar = Sidecar::start(&args)?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, run(&args, &mut sidecar)) => match r {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("the benchmark did not finish within {timeout:?}")),
        },
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    };
    let failed_log = result.is_err().then(|| sidecar.log_tail(20));
    drop(sidecar); // kills the sidecar
    let md = match result {
        Ok(md) => md,
        Err(e) => {
            // Errors that concern the sidecar already carry its log's tail.
            if let Some(log) = failed_log.filter(|l| !l.is_empty() && !e.to_string().contains("log ends")) {
                eprintln!("sidecar log ends:\n{log}");
            }
            return Err(e);
        }
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &md).with_context(|| format!("writing {}", args.out.display()))?;
    println!("{md}");
    println!("written to {}", args.out.display());
    Ok(())
}
