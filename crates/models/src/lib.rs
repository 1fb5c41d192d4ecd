//! Model-based inference for signals (Candle on CPU; CUDA with the `cuda` feature).
//!
//! The [`Embedder`] loads its sentence encoder lazily on first use (never at start), from a local
//! directory or a Hugging Face id, and keeps it. Inference runs on dedicated worker threads fed
//! by a bounded queue, never on the async runtime; concurrent requests are micro-batched into one
//! forward pass; query embeddings are cached (bounded LRU keyed by a hash of the text).
//!
//! The only crate with `unsafe` (AVX2/AVX-512/NEON/AMX kernels, the AMX permission request) and the only
//! one that depends on Candle: the training programs in `tools/` use its re-exports.

#![deny(missing_docs)]

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod amx_encoder;
mod bert;
mod checkpoint;
mod classifier;
mod encoder;
mod int8_encoder;
mod kernels;
mod quant;
#[doc(hidden)]
pub mod testing;
mod weights;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;
use tokio::sync::{OnceCell, mpsc, oneshot};

pub use bert::{MODEL_FILES, SentenceEncoder};
/// Candle, for code that builds or reads tensors (the classifier heads, the training programs)
/// without depending on it itself.
pub use candle_core;
/// Candle's layers and optimisers (the training programs).
pub use candle_nn;
pub use classifier::{SequenceClassifier, TextClassifier};
/// The int8 kernels (`SentenceEncoder::load_int8`, `LLMSOUP_INT8_KERNEL`).
pub use quant::{KERNEL_ENV as INT8_KERNEL_ENV, Kernel as Int8Kernel};

use llmsoup_config::EmbeddingConfig;

/// A model could not be loaded or run; signals that need it degrade to "no match".
#[derive(Debug, Clone, Error)]
pub enum ModelError {
    /// Loading failed (missing files, bad weights, download failed).
    #[error("model load failed: {0}")]
    Load(String),
    /// A forward pass failed.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The bounded inference queue is full.
    #[error("inference queue full")]
    Overloaded,
}

/// One embedding, L2-normalised.
pub type Embedding = Arc<[f32]>;

/// Cosine similarity of two L2-normalised vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Resident set size of this process in bytes (Linux), for memory accounting in logs.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Where a model comes from: a local directory, or a Hugging Face id fetched through `hf-hub`.
pub(crate) fn resolve(model: &str) -> Result<PathBuf, ModelError> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let looks_like_hub_id = !model.starts_with(['.', '/', '~']) && model.split('/').count() == 2;
    if !looks_like_hub_id {
        return Err(ModelError::Load(format!(
            "model directory `{model}` does not exist (run `make models`, or name a Hugging Face id)"
        )));
    }
    download(model)
}

#[cfg(feature = "hub")]
fn download(id: &str) -> Result<PathBuf, ModelError> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| ModelError::Load(format!("hf-hub: {e}")))?;
    let repo = api.model(id.to_string());
    let mut dir = None;
    for f in MODEL_FILES {
        let p = repo
            .get(f)
            .map_err(|e| ModelError::Load(format!("downloading {id}/{f}: {e}")))?;
        dir = p.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| ModelError::Load(format!("{id}: empty download")))
}

#[cfg(not(feature = "hub"))]
fn download(id: &str) -> Result<PathBuf, ModelError> {
    Err(ModelError::Load(format!(
        "`{id}` is not a local directory and this build has no Hugging Face download (feature `hub`)"
    )))
}

/// Whether the bf16 AMX encoder can run here (x86-64 CPUs with AMX, Linux granting the state).
pub(crate) fn amx_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::supported()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

pub(crate) fn device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = candle_core::Device::new_cuda(0) {
        return d;
    }
    candle_core::Device::Cpu
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, ModelError>>,
}

/// A model the inference threads run on batches of texts: one output row per text.
pub(crate) trait BatchModel: Send + Sync + 'static {
    /// Runs one forward pass over `texts`.
    fn run(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError>;
}

impl BatchModel for SentenceEncoder {
    fn run(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.embed(texts)
    }
}

/// Loads a model with `load`, logging the time and resident memory it took.
pub(crate) fn load_logged<M>(
    what: &str,
    dir: &Path,
    load: impl FnOnce() -> Result<M, ModelError>,
) -> Result<M, ModelError> {
    let before = rss_bytes().unwrap_or(0);
    let start = Instant::now();
    let model = load()?;
    let after = rss_bytes().unwrap_or(0);
    tracing::info!(
        model = %dir.display(),
        load_ms = start.elapsed().as_millis() as u64,
        rss_added_mb = after.saturating_sub(before) / (1 << 20),
        rss_mb = after / (1 << 20),
        "{what} loaded"
    );
    Ok(model)
}

/// Cores a forward pass is spread over by default: what this process may use (Rust reads the
/// cgroup CPU quota, so a 2-core pod on a 64-core node gets 2), at most 16 — beyond that a
/// short prompt's pass is too small to split further.
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(16)
}

/// A loaded model behind its worker threads.
pub(crate) struct Worker {
    queue: mpsc::Sender<Job>,
    dim: usize,
}

impl Worker {
    fn start(settings: &EmbeddingConfig) -> Result<Self, ModelError> {
        let dir = resolve(&settings.model)?;
        let encoder = load_logged("embedding model", &dir, || {
            SentenceEncoder::load_with(&dir, settings.max_tokens, device(), settings.precision)
        })?;
        let dim = encoder.dim;
        Self::spawn(Arc::new(encoder), dim, settings)
    }

    /// Starts `settings.workers` threads serving `model` from one bounded queue.
    pub(crate) fn spawn(
        model: Arc<dyn BatchModel>,
        dim: usize,
        settings: &EmbeddingConfig,
    ) -> Result<Self, ModelError> {
        let (tx, rx) = mpsc::channel::<Job>(settings.queue.max(1));
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let threads = settings.threads.unwrap_or_else(default_threads).max(1);
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("llmsoup-pass-{i}"))
                .build()
                .map_err(|e| ModelError::Load(format!("starting {threads} inference threads: {e}")))?,
        );
        tracing::info!(workers = settings.workers.max(1), threads, "inference threads");
        for i in 0..settings.workers.max(1) {
            let (rx, model, batch, max_tokens, pool) = (
                rx.clone(),
                model.clone(),
                settings.batch_size.max(1),
                settings.max_tokens,
                pool.clone(),
            );
            std::thread::Builder::new()
                .name(format!("llmsoup-infer-{i}"))
                .spawn(move || work(&rx, model.as_ref(), &pool, batch, max_tokens))
                .map_err(|e| ModelError::Load(format!("spawning inference thread: {e}")))?;
        }
        Ok(Worker { queue: tx, dim })
    }
}

impl Worker {
    /// Queues `texts` for the next forward pass (never waits for room) and awaits the rows.
    pub(crate) async fn run(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ModelError> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .try_send(Job { texts, reply })
            .map_err(|_| ModelError::Overloaded)?;
        rx.await
            .map_err(|_| ModelError::Inference("inference worker stopped".into()))?
    }
}

/// Attention memory grows with batch × width²; cap what one forward pass may take so a burst of
/// long prompts cannot balloon the RSS (16 texts × 256 tokens peaked at ~430 MB): 16 texts of 128
/// tokens, or 4 of 256.
const BATCH_ATTENTION_BUDGET: usize = 16 * 128 * 128;

/// Estimated padded width of a job's texts in tokens (≈ 4 bytes per token, plus CLS/SEP).
fn job_width(job: &Job, max_tokens: usize) -> usize {
    job.texts
        .iter()
        .map(|t| (t.len() / 4 + 2).min(max_tokens))
        .max()
        .unwrap_or(2)
}

/// The worker loop: wait for one job, then take whatever else is queued (up to `batch` texts and
/// the attention budget) and run them in one forward pass on `pool`. A job that does not fit
/// waits for the next pass. Exits when the engine (and its queue sender) is dropped.
fn work(
    rx: &std::sync::Mutex<mpsc::Receiver<Job>>,
    model: &dyn BatchModel,
    pool: &rayon::ThreadPool,
    batch: usize,
    max_tokens: usize,
) {
    let mut carry: Option<Job> = None;
    loop {
        let mut jobs = Vec::new();
        {
            let Ok(mut rx) = rx.lock() else { return };
            let first = match carry.take() {
                Some(j) => j,
                None => match rx.blocking_recv() {
                    Some(j) => j,
                    None => return,
                },
            };
            let mut n = first.texts.len();
            let mut width = job_width(&first, max_tokens);
            jobs.push(first);
            while n < batch {
                let Ok(j) = rx.try_recv() else { break };
                let w = width.max(job_width(&j, max_tokens));
                let m = n + j.texts.len();
                if m > batch || m * w * w > BATCH_ATTENTION_BUDGET {
                    carry = Some(j);
                    break;
                }
                (n, width) = (m, w);
                jobs.push(j);
            }
        }
        let texts: Vec<&str> = jobs.iter().flat_map(|j| j.texts.iter().map(String::as_str)).collect();
        match pool.install(|| model.run(&texts)) {
            Ok(mut rows) => {
                for job in jobs.into_iter().rev() {
                    let mine = rows.split_off(rows.len() - job.texts.len());
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Shared, lazily loaded sentence embedder.
pub struct Embedder {
    settings: EmbeddingConfig,
    worker: OnceCell<Result<Worker, ModelError>>,
    cache: moka::sync::Cache<u64, Embedding>,
}

fn text_key(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl Embedder {
    /// An embedder that loads nothing until first used.
    pub fn new(settings: EmbeddingConfig) -> Self {
        let cache = moka::sync::Cache::new(settings.cache_entries);
        Embedder {
            settings,
            worker: OnceCell::new(),
            cache,
        }
    }

    async fn worker(&self) -> Result<&Worker, ModelError> {
        let settings = self.settings.clone();
        let result = self
            .worker
            .get_or_init(|| async move {
                match tokio::task::spawn_blocking(move || Worker::start(&settings)).await {
                    Ok(r) => r,
                    Err(e) => Err(ModelError::Load(format!("loader panicked: {e}"))),
                }
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "embedding model unavailable; model-based signals report no match");
        }
        result.as_ref().map_err(Clone::clone)
    }

    /// The settings this embedder was built with.
    pub fn settings(&self) -> &EmbeddingConfig {
        &self.settings
    }

    /// Embedding width, once loaded.
    pub async fn dim(&self) -> Result<usize, ModelError> {
        Ok(self.worker().await?.dim)
    }

    async fn run(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ModelError> {
        self.worker().await?.run(texts).await
    }

    /// Whether `text`'s embedding is cached (so [`Embedder::embed`] runs no model for it).
    pub fn is_cached(&self, text: &str) -> bool {
        self.cache.contains_key(&text_key(text))
    }

    /// Embeds one text (cached).
    pub async fn embed(&self, text: &str) -> Result<Embedding, ModelError> {
        let key = text_key(text);
        if let Some(e) = self.cache.get(&key) {
            return Ok(e);
        }
        let mut rows = self.run(vec![text.to_string()]).await?;
        let e: Embedding = rows.pop().unwrap_or_default().into();
        self.cache.insert(key, e.clone());
        Ok(e)
    }

    /// Embeds several texts of one request (the windows of a long prompt) in one job, each
    /// looked up in and added to the cache like [`Embedder::embed`]'s.
    pub async fn embed_many(&self, texts: &[&str]) -> Result<Vec<Embedding>, ModelError> {
        let keys: Vec<u64> = texts.iter().map(|t| text_key(t)).collect();
        let mut out: Vec<Option<Embedding>> = keys.iter().map(|k| self.cache.get(k)).collect();
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        for part in missing.chunks(self.settings.batch_size.max(1)) {
            let rows = self.run(part.iter().map(|&i| texts[i].to_string()).collect()).await?;
            for (&i, row) in part.iter().zip(rows) {
                let e: Embedding = row.into();
                self.cache.insert(keys[i], e.clone());
                out[i] = Some(e);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Embeds many texts (prototype banks), in batches, uncached.
    pub async fn embed_all(&self, texts: &[String]) -> Result<Vec<Embedding>, ModelError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.settings.batch_size.max(1)) {
            out.extend(self.run(chunk.to_vec()).await?.into_iter().map(Embedding::from));
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests;
