//! The `llmsoup` command line: the sidecar server and its tools.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

#[cfg(feature = "router")]
use llmsoup::server::serve;
use llmsoup::source::ConfigSource;
use llmsoup_config::{self as config, AttachMode};
use llmsoup_contract::auth::hash_token;
use llmsoup_envoy::{RenderOptions, render, xds};
#[cfg(feature = "router")]
use llmsoup_router::engine::Engine;
#[cfg(feature = "router")]
use llmsoup_router::request::{RequestView, parse_request};

/// Writes to stdout, ignoring a closed pipe (`llmsoup config check f | head -1`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// [`outln!`] without the newline.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

#[derive(Parser)]
#[command(name = "llmsoup", version, about = "Semantic LLM routing for Envoy")]
struct Cli {
    /// Log filter (RUST_LOG syntax).
    #[arg(long, global = true, env = "LLMSOUP_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar (ext_proc gRPC service).
    #[cfg(feature = "router")]
    Serve {
        /// Config file; the embedded demo config when omitted.
        #[arg(long, short, env = "LLMSOUP_CONFIG")]
        config: Option<PathBuf>,
        /// Directory of Envoy's xDS resource files (the one given to `envoy-config --xds-dir`;
        /// overrides `gateway.xds_dir`): rewritten at start and after every reload, so the
        /// reload reaches Envoy.
        #[arg(long, env = "LLMSOUP_XDS_DIR")]
        xds_dir: Option<String>,
    },
    /// Render the Envoy bootstrap for a config.
    EnvoyConfig {
        /// Config file; the embedded demo config when omitted.
        #[arg(long, short, env = "LLMSOUP_CONFIG")]
        config: Option<PathBuf>,
        /// Attach mode (overrides `gateway.mode`).
        #[arg(long)]
        mode: Option<Mode>,
        /// Path of the wasm filter (wasm mode).
        #[arg(long)]
        wasm: Option<String>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Render a bootstrap whose routes, clusters, credentials and token/model filter configs
        /// come from files in this directory (written now; `serve --xds-dir` rewrites them on
        /// reload). Overrides `gateway.xds_dir`.
        #[arg(long)]
        xds_dir: Option<String>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Explain how a prompt (or a JSON request with --file) would be routed.
    #[cfg(feature = "router")]
    Route {
        /// Config file; the embedded demo config when omitted.
        #[arg(long, short, env = "LLMSOUP_CONFIG")]
        config: Option<PathBuf>,
        /// A JSON request body instead of a prompt.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The prompt (stdin when omitted and no --file).
        text: Option<String>,
    },
    /// Route every text on stdin (one per line, or JSONL with a `text` field) and print one JSON
    /// line per text with every signal's result: for evaluating a config on a labelled set.
    #[cfg(feature = "router")]
    Classify {
        /// Config file; the embedded demo config when omitted.
        #[arg(long, short, env = "LLMSOUP_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Route a labelled set (JSONL `{"text", "outcomes": {model: bool}, "cost"?}`) and measure a
    /// weak/strong pair: the quality–cost curve of the threshold sweep, APGR, CPT(50%)/CPT(80%),
    /// and the config's own accuracy, strong share and cost.
    #[cfg(feature = "router")]
    Eval {
        /// Config file; the embedded demo config when omitted.
        #[arg(long, short, env = "LLMSOUP_CONFIG")]
        config: Option<PathBuf>,
        /// The labelled prompts (JSON lines).
        #[arg(long)]
        data: PathBuf,
        /// The pair's weak model (default: `routing.default_model`).
        #[arg(long, requires = "strong")]
        weak: Option<String>,
        /// The pair's strong model (default: the model of the first decision on the score).
        #[arg(long, requires = "weak")]
        strong: Option<String>,
        /// Also draw the curve as an SVG file.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// What a new config would route differently: every prompt a decision log kept
    /// (`decision_log.include_prompt: true`) routed again and compared with the log — requests
    /// per model and decision, moves, the prompt-cost delta, examples.
    #[cfg(feature = "router")]
    Replay {
        /// The decision log (JSON lines). (`--log` is the global log filter, as for `calibrate`.)
        #[arg(long)]
        decisions: PathBuf,
        /// The new config; the embedded demo config when omitted.
        #[arg(long, short, env = "LLMSOUP_CONFIG")]
        config: Option<PathBuf>,
        /// How many changed requests to show.
        #[arg(long, default_value_t = 5)]
        examples: usize,
        /// Print one JSON object instead of the report.
        #[arg(long)]
        json: bool,
    },
    /// Run the OpenAI-compatible fake provider used by the demo and the tests.
    MockUpstream {
        /// Addresses to listen on (repeatable).
        #[arg(long, default_value = "127.0.0.1:18000")]
        listen: Vec<SocketAddr>,
        /// Name reported in responses.
        #[arg(long, default_value = "mock")]
        name: String,
        /// Addresses to serve HTTPS on (repeatable; needs --tls-cert and --tls-key).
        #[arg(long, requires_all = ["tls_cert", "tls_key"])]
        tls_listen: Vec<SocketAddr>,
        /// Certificate chain (PEM) the HTTPS listeners present.
        #[arg(long)]
        tls_cert: Option<PathBuf>,
        /// Private key (PEM) of that certificate.
        #[arg(long)]
        tls_key: Option<PathBuf>,
    },
    /// The score thresholds (`difficulty` rules' `threshold`, a complexity rule's `hard_from`)
    /// that send a target share of the traffic in a decision log to the strong model
    /// (RouteLLM-style calibration); `--write` puts them into the config file, comments kept.
    #[cfg(feature = "router")]
    Calibrate {
        /// Share of requests that should clear the threshold (0–1); default: the config's
        /// `target_share` / `routing.target_strong_share`.
        #[arg(long)]
        strong_share: Option<f64>,
        /// Decision log (JSON lines) with routed requests' scores.
        #[arg(long)]
        decisions: PathBuf,
        /// Config whose calibrated rules (else every difficulty rule and its complexity rule)
        /// to compute thresholds for.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Write the thresholds into the config file (in place; comments and layout kept).
        #[arg(long, requires = "config")]
        write: bool,
    },
    /// Print the SHA-256 to store in `auth.tokens[].sha256` for a client token.
    HashToken {
        /// The token (stdin when omitted, so it stays out of shell history).
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and print a summary; exits non-zero on errors.
    Check {
        /// Config file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the native config.
    Schema,
    /// Convert a config (e.g. a vLLM Semantic Router one) to llmsoup's native YAML; what is not
    /// carried over is listed in a comment header.
    Migrate {
        /// Config file.
        file: PathBuf,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    ExtProc,
    Wasm,
}

fn source(config: Option<PathBuf>) -> ConfigSource {
    config.map_or(ConfigSource::Embedded, ConfigSource::File)
}

fn read_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
    Ok(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A multi-threaded runtime: `threads` workers, or tokio's default (one per CPU).
fn runtime_with(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    builder.enable_all().build().context("starting tokio")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(None)
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        #[cfg(feature = "router")]
        Command::Serve { config, xds_dir } => {
            let source = source(config);
            // Loaded before the runtime exists: it says how many threads the runtime gets.
            let loaded = source.load()?;
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let threads = loaded.server.worker_threads_for(cpus);
            tracing::info!(threads, cpus, "async runtime threads (server.worker_threads)");
            runtime_with(Some(threads))?.block_on(serve(source, loaded, xds_dir))?
        }
        Command::EnvoyConfig {
            config,
            mode,
            wasm,
            output,
            xds_dir,
        } => {
            let cfg = source(config).load()?;
            let opts = RenderOptions {
                mode: mode.map(|m| match m {
                    Mode::ExtProc => AttachMode::ExtProc,
                    Mode::Wasm => AttachMode::Wasm,
                }),
                wasm_path: wasm,
            };
            llmsoup_envoy::local_plan::log_status(&cfg, opts.mode.unwrap_or(cfg.gateway.mode));
            let yaml = match xds_dir.or_else(|| cfg.gateway.xds_dir.clone()) {
                Some(dir) => {
                    // The same files `serve` writes for this config, and the options it needs
                    // to write them the same way.
                    let bundle = xds::render(&cfg, &opts, &dir)?;
                    let bootstrap = bundle.bootstrap_yaml()?;
                    bundle.write(Path::new(&dir), None)?;
                    xds::write_manifest(Path::new(&dir), &opts, &bootstrap)?;
                    bootstrap
                }
                None => render(&cfg, &opts)?,
            };
            match output {
                Some(path) => std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?,
                None => out!("{yaml}"),
            }
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match config::load_file_detailed(&file) {
            Ok(loaded) => {
                let cfg = loaded.config;
                // A model signal that cannot load is an error when a blocking decision depends
                // on it (it would block), a warning otherwise (its decisions never match).
                #[cfg(feature = "router")]
                let problems = llmsoup_router::signals::model_problems(&cfg);
                #[cfg(feature = "router")]
                let errors = problems.iter().filter(|p| p.is_error()).count();
                // Checking model signals means reading their models' files and heads (Candle).
                #[cfg(not(feature = "router"))]
                let errors = 0;
                if errors == 0 {
                    outln!("{}: OK", file.display());
                } else {
                    outln!("{}: {errors} error(s)", file.display());
                }
                outln!("  format:    {}", loaded.shape);
                outln!(
                    "  providers: {}",
                    cfg.providers
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                outln!(
                    "  models:    {}",
                    cfg.models
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let s = &cfg.signals;
                outln!(
                    "  signals:   {} keyword, {} context, {} language, {} embedding, {} domain, {} complexity, {} latency, {} pii, {} jailbreak",
                    s.keywords.len(),
                    s.context.len(),
                    s.language.len(),
                    s.embeddings.len(),
                    s.domains.len(),
                    s.complexity.len(),
                    s.latency.len(),
                    s.pii.len(),
                    s.jailbreak.len()
                );
                outln!(
                    "  decisions: {}",
                    cfg.decisions
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                outln!("  default:   {}", cfg.default_model().name);
                if !loaded.warnings.is_empty() {
                    outln!("  warnings:  {}", loaded.warnings.len());
                    for w in &loaded.warnings {
                        outln!("    - {w}");
                    }
                }
                #[cfg(feature = "router")]
                for p in &problems {
                    let level = if p.is_error() { "error" } else { "warning" };
                    outln!("  {level}: {p}");
                }
                #[cfg(not(feature = "router"))]
                outln!("  models:    not checked (built without the router)");
                // Builds what a config compiles into (keyword patterns, signals), as `serve` would.
                #[cfg(feature = "router")]
                Engine::new(cfg)?;
                if errors > 0 {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                return Ok(ExitCode::FAILURE);
            }
        },
        Command::Config {
            command: ConfigCommand::Migrate { file, output },
        } => {
            let loaded = match config::load_file_detailed(&file) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return Ok(ExitCode::FAILURE);
                }
            };
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            let yaml = config::to_native_yaml(&loaded)?;
            match output {
                Some(path) => std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?,
                None => out!("{yaml}"),
            }
        }
        Command::Config {
            command: ConfigCommand::Schema,
        } => {
            outln!("{}", serde_json::to_string_pretty(&config::json_schema())?);
        }
        #[cfg(feature = "router")]
        Command::Route { config, file, text } => {
            let cfg = source(config).load()?;
            let engine = Engine::new(cfg)?;
            let view = match (file, text) {
                (Some(f), _) => {
                    let body = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                    parse_request(&body, engine.config().routing.include_history)
                        .map_err(|e| anyhow::anyhow!(e.message))?
                        .view
                }
                (None, Some(t)) => RequestView::from_text(&t),
                (None, None) => RequestView::from_text(read_stdin()?.trim_end()),
            };
            let rt = runtime()?;
            let routed = rt
                .block_on(engine.route(&view))
                .map_err(|e| anyhow::anyhow!(e.message))?;
            outln!("prompt tokens (est.): {}", view.prompt_tokens);
            for r in &routed.reports {
                let matched: Vec<String> = routed
                    .matches
                    .iter()
                    .filter(|m| m.kind == r.kind)
                    .map(|m| format!("{} ({:.2})", m.name, m.confidence))
                    .collect();
                let status = r.error.as_deref().map(|e| format!("error: {e}")).unwrap_or_else(|| {
                    if matched.is_empty() {
                        "no match".into()
                    } else {
                        matched.join(", ")
                    }
                });
                outln!(
                    "signal {:<10} {:>8.3} ms  {status}",
                    r.kind.as_str(),
                    r.elapsed.as_secs_f64() * 1e3
                );
            }
            for (kind, details) in rt.block_on(engine.explain(&view)) {
                outln!("  {kind}: {details}");
            }
            outln!(
                "decision: {}",
                routed.decision.as_deref().unwrap_or("(none: default model)")
            );
            outln!("confidence: {:.3}", routed.confidence);
            if let Some(s) = &routed.success {
                outln!(
                    "success_target {:.2}: {}",
                    s.target,
                    if s.reached {
                        "the cheapest model reaching it"
                    } else {
                        "none reaches it, the strongest"
                    }
                );
                for e in &s.estimates {
                    outln!(
                        "  {:<20} strength {:>6.2}  success {:.3}  ${:.2}/1M{}",
                        e.model,
                        e.strength,
                        e.success,
                        e.price,
                        if e.model == s.chosen { "  <- chosen" } else { "" }
                    );
                }
                if let Some(err) = &s.error {
                    outln!("  no prediction: {err}");
                }
            }
            outln!("model: {}", routed.model);
            if !routed.chain.is_empty() {
                outln!("fallback chain: {}", routed.chain.join(" → "));
            }
            for s in &routed.skipped_fallbacks {
                outln!("  skipped: {} ({})", s.model, s.reason.as_str());
            }
            outln!("routing time: {:.3} ms", routed.elapsed.as_secs_f64() * 1e3);
        }
        Command::MockUpstream {
            listen,
            name,
            tls_listen,
            tls_cert,
            tls_key,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) if !tls_listen.is_empty() => Some(llmsoup_tools::mock_upstream::Tls {
                    listen: tls_listen,
                    cert,
                    key,
                }),
                _ => None,
            };
            runtime()?.block_on(llmsoup_tools::mock_upstream::run(&listen, tls.as_ref(), &name))?
        }
        #[cfg(feature = "router")]
        Command::Classify { config } => {
            let engine = Engine::new(source(config).load()?)?;
            runtime()?.block_on(classify(&engine))?;
        }
        #[cfg(feature = "router")]
        Command::Eval {
            config,
            data,
            weak,
            strong,
            plot,
            json,
        } => {
            let config = source(config).load()?;
            let text = std::fs::read_to_string(&data).with_context(|| format!("reading {}", data.display()))?;
            let items = llmsoup::eval::parse_items(&text).with_context(|| format!("in {}", data.display()))?;
            let engine = Engine::new(config.clone())?;
            let report = runtime()?.block_on(llmsoup::eval::run(&engine, &config, &items, weak.zip(strong)))?;
            if let Some(path) = plot {
                std::fs::write(&path, report.svg()).with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                outln!("{}", report.json());
            } else {
                out!("{}", report.text());
            }
        }
        #[cfg(feature = "router")]
        Command::Calibrate {
            strong_share,
            decisions: log,
            config,
            write,
        } => {
            let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
            let cfg = config.as_ref().map(|c| config::load_file(c)).transpose()?;
            let ts = llmsoup::calibrate::thresholds(&text, cfg.as_ref(), strong_share)
                .with_context(|| format!("calibrating from {}", log.display()))?;
            out!("{}", llmsoup::calibrate::report(&ts));
            if let (true, Some(path)) = (write, &config) {
                let original = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let edited = llmsoup::calibrate::write_back(&original, &ts)?;
                // The edited file must still load before it replaces the old one (atomically).
                config::load_str(&edited).context("the calibrated config would not load")?;
                let tmp = path.with_extension("calibrate-tmp");
                std::fs::write(&tmp, &edited).with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
                outln!("wrote {}", path.display());
            }
        }
        #[cfg(feature = "router")]
        Command::Replay {
            decisions: log,
            config,
            examples,
            json,
        } => {
            let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
            let lines = llmsoup::replay::parse_log(&text);
            let engine = Engine::new(source(config).load()?)?;
            let report = runtime()?.block_on(llmsoup::replay::run(&engine, &lines, examples))?;
            if json {
                outln!("{}", report.json());
            } else {
                out!("{}", report.text());
            }
        }
        Command::HashToken { token } => {
            let token = match token {
                Some(t) => t,
                None => read_stdin()?,
            };
            outln!("{}", hash_token(&token));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "router")]
async fn classify(engine: &Engine) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (text, label) = if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line).context("stdin line is not JSON")?;
            let text = v["text"]
                .as_str()
                .context("JSONL lines need a `text` field")?
                .to_string();
            (text, v.get("label").cloned())
        } else {
            (line.to_string(), None)
        };
        let view = RequestView::from_text(&text);
        let routed = engine.route(&view).await.map_err(|e| anyhow::anyhow!(e.message))?;
        let details = engine.explain(&view).await;
        let signals: Vec<serde_json::Value> = routed
            .matches
            .iter()
            .map(|m| serde_json::json!({"kind": m.kind.as_str(), "name": &*m.name, "score": m.confidence}))
            .collect();
        let errors: serde_json::Map<String, serde_json::Value> = routed
            .reports
            .iter()
            .filter_map(|r| Some((r.kind.as_str().to_string(), serde_json::json!(r.error.as_ref()?))))
            .collect();
        let mut out = serde_json::json!({
            "text": text,
            "difficulty": view.difficulty.get().map(|p| p.difficulty()),
            "model": routed.model,
            "decision": routed.decision,
            "confidence": routed.confidence,
            "signals": signals,
            "details": details,
            "latency_ms": routed.elapsed.as_secs_f64() * 1e3,
        });
        if let Some(s) = &routed.success {
            out["success_target"] = serde_json::to_value(s)?;
        }
        if !routed.chain.is_empty() {
            out["chain"] = serde_json::json!(routed.chain);
        }
        if !routed.skipped_fallbacks.is_empty() {
            out["skipped_fallbacks"] = serde_json::json!(routed.skipped_fallbacks);
        }
        if let Some(l) = label {
            out["label"] = l;
        }
        if !errors.is_empty() {
            out["errors"] = serde_json::Value::Object(errors);
        }
        outln!("{out}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Catches clashing argument names (a global `--log` against a subcommand's) at test time.
    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
