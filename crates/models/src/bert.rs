//! A BERT-family sentence encoder on Candle: tokenise, window long texts (head + tail), one
//! forward pass per batch (see [`super::encoder`]), mean-pool over each text's tokens, L2-normalise.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config as BertConfig;
use tokenizers::Tokenizer;

use super::ModelError;
use super::encoder::{DenseKind, Encoder};
use super::quant::Kernel as Int8Kernel;
use super::weights::FileWeights;
use llmsoup_config::Precision;

/// A loaded sentence encoder. Not `Sync`-shared across threads: the worker owns it.
pub struct SentenceEncoder {
    kind: DenseKind,
    model: Encoder,
    tokenizer: Tokenizer,
    device: Device,
    cls: u32,
    sep: u32,
    max_tokens: usize,
    /// Embedding width.
    pub dim: usize,
}

/// The files a model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

fn err(what: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Load(format!("{what}: {e}"))
}

impl SentenceEncoder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` (tensor by tensor) from `dir`,
    /// dense layers in exact f32.
    pub fn load(dir: &Path, max_tokens: usize, device: Device) -> Result<Self, ModelError> {
        Self::load_with(dir, max_tokens, device, Precision::F32)
    }

    /// [`SentenceEncoder::load`] with the dense layers in `precision` where this CPU can run it;
    /// otherwise it warns and runs f32.
    pub fn load_with(dir: &Path, max_tokens: usize, device: Device, precision: Precision) -> Result<Self, ModelError> {
        let kind = dense_kind(precision, &device);
        Self::load_kind(dir, max_tokens, device, kind)
    }

    /// [`SentenceEncoder::load`] with int8 dense layers on `kernel` (one of
    /// [`Int8Kernel::available`]): benchmarks and tests compare every path a CPU offers.
    pub fn load_int8(dir: &Path, max_tokens: usize, kernel: Int8Kernel) -> Result<Self, ModelError> {
        if !kernel.supported() {
            return Err(ModelError::Load(format!(
                "this CPU has no {} int8 kernel",
                kernel.name()
            )));
        }
        Self::load_kind(dir, max_tokens, Device::Cpu, DenseKind::Int8(kernel))
    }

    fn load_kind(dir: &Path, max_tokens: usize, device: Device, kind: DenseKind) -> Result<Self, ModelError> {
        for f in MODEL_FILES {
            if !dir.join(f).is_file() {
                return Err(ModelError::Load(format!("{} has no {f}", dir.display())));
            }
        }
        let config: BertConfig =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).map_err(|e| err("reading config.json", e))?)
                .map_err(|e| err("parsing config.json", e))?;
        let mut tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| err("loading tokenizer.json", e))?;
        // sentence-transformers ship tokenizers with fixed padding/truncation; we window and pad
        // ourselves (head + tail, to the longest text of each batch).
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| err("tokenizer truncation", e))?;
        let weights: PathBuf = dir.join("model.safetensors");
        let vb = VarBuilder::from_backend(Box::new(FileWeights::open(&weights)?), DType::F32, device.clone());
        let model = Encoder::load(vb, &config, kind).map_err(|e| err("building BERT", e))?;
        let id = |t: &str| tokenizer.token_to_id(t);
        let (cls, sep) = match (id("[CLS]"), id("[SEP]")) {
            (Some(c), Some(s)) => (c, s),
            _ => return Err(ModelError::Load("tokenizer has no [CLS]/[SEP] tokens".into())),
        };
        let max_tokens = max_tokens.clamp(8, config.max_position_embeddings);
        release_freed_memory();
        Ok(SentenceEncoder {
            kind,
            model,
            tokenizer,
            device,
            cls,
            sep,
            max_tokens,
            dim: config.hidden_size,
        })
    }

    /// Token ids of `text` with `[CLS]`/`[SEP]`, windowed to `max_tokens`: the head and the tail
    /// of a long text carry its intent; the middle is dropped. A text far longer than the window
    /// is tokenised as two slices cut at whitespace (its head and its tail), not whole: a 32 KB
    /// prompt otherwise spends more time in the tokenizer than in the model.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let budget = self.max_tokens - 2;
        let (head, tail) = (budget.div_ceil(2), budget / 2);
        let slice = head * SLICE_BYTES_PER_TOKEN;
        if text.len() > 4 * slice {
            let (front, back) = (head_slice(text, slice), tail_slice(text, slice));
            let (a, b) = (self.encode(front)?, self.encode(back)?);
            // Enough tokens on both sides (a margin past any token the cut could have split)?
            if a.len() >= head + SLICE_MARGIN && b.len() >= tail + SLICE_MARGIN {
                return Ok(self.framed(&a[..head], &b[b.len() - tail..]));
            }
        }
        let ids = self.encode(text)?;
        if ids.len() <= budget {
            return Ok(self.framed(&ids, &[]));
        }
        Ok(self.framed(&ids[..head], &ids[ids.len() - tail..]))
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Inference(format!("tokenising: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn framed(&self, head: &[u32], tail: &[u32]) -> Vec<u32> {
        let mut out = Vec::with_capacity(head.len() + tail.len() + 2);
        out.push(self.cls);
        out.extend_from_slice(head);
        out.extend_from_slice(tail);
        out.push(self.sep);
        out
    }

    /// Embeds a batch in one forward pass; rows are L2-normalised.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let (hidden, lens) = self.hidden(texts)?;
        Ok(mean_pool(&hidden, &lens, self.dim))
    }

    /// The last hidden state of a batch, packed (`lens[i]` rows for text `i`, `[CLS]` first).
    pub fn hidden(&self, texts: &[&str]) -> Result<(Vec<f32>, Vec<usize>), ModelError> {
        if texts.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.ids(t)).collect::<Result<_, _>>()?;
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let flat: Vec<u32> = ids.into_iter().flatten().collect();
        let hidden = self
            .model
            .forward(&flat, &lens, &self.device)
            .map_err(|e| ModelError::Inference(format!("forward: {e}")))?;
        Ok((hidden, lens))
    }

    /// How the dense layers run (`f32`, `bf16-amx`, `int8-avx2`, ...): logs and benchmarks.
    pub fn dense_path(&self) -> String {
        self.kind.to_string()
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// Bytes of text sliced per kept token when pre-cutting long texts: WordPiece tokens average
/// 4–6 bytes in English and 3 (one CJK character) elsewhere, so 16 leaves a wide margin; a
/// slice that still yields too few tokens falls back to tokenising the whole text.
const SLICE_BYTES_PER_TOKEN: usize = 16;
/// Tokens required beyond the window on each slice, so a word cut at the slice edge is never kept.
const SLICE_MARGIN: usize = 8;

/// About the first `bytes` bytes of `text`, ending at whitespace when there is some.
fn head_slice(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let s = &text[..end];
    match s.rfind(char::is_whitespace) {
        Some(i) if i > end / 2 => &s[..i],
        _ => s,
    }
}

/// About the last `bytes` bytes of `text`, starting after whitespace when there is some.
fn tail_slice(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let s = &text[start..];
    match s.find(char::is_whitespace) {
        Some(i) if i < s.len() / 2 => &s[i..],
        _ => s,
    }
}

/// Hands memory freed while loading (f32 copies of re-laid-out weights) back to the OS: glibc
/// keeps freed heap pages otherwise, tens of MB that would count as the sidecar's RSS forever.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The dense-layer implementation for `precision` on `device`. `auto` takes the fastest path
/// this CPU has whose embeddings stay within cosine 0.995 of f32 (the `tests` module checks every
/// path against f32 on real texts): bf16 on AMX tiles, else int8 on the best integer kernel
/// (AVX-512 VNNI, AVX-VNNI, AVX2, NEON), else f32.
fn dense_kind(precision: Precision, device: &Device) -> DenseKind {
    dense_kind_with(precision, device, super::quant::Kernel::select())
}

pub(crate) fn dense_kind_with(precision: Precision, device: &Device, int8: Option<super::quant::Kernel>) -> DenseKind {
    let amx = device.is_cpu() && super::amx_supported();
    let int8 = int8.filter(|_| device.is_cpu());
    let kind = match precision {
        Precision::F32 => DenseKind::F32,
        Precision::Auto if amx => DenseKind::Bf16Amx,
        Precision::Auto => int8.map_or(DenseKind::F32, DenseKind::Int8),
        Precision::Bf16 if amx => DenseKind::Bf16Amx,
        Precision::Bf16 => {
            tracing::warn!("embedding.precision bf16 needs a CPU with AMX (and Linux 5.16+); running f32");
            DenseKind::F32
        }
        Precision::Int8 => match int8 {
            Some(k) => DenseKind::Int8(k),
            None => {
                tracing::warn!(
                    "embedding.precision int8 needs a CPU with AVX2, AVX-VNNI, AVX-512 VNNI or NEON; running f32"
                );
                DenseKind::F32
            }
        },
    };
    tracing::info!(?precision, dense = %kind, "embedding model precision");
    kind
}

/// Masked mean over each text's token rows (no padding exists in the packed batch), then L2.
fn mean_pool(hidden: &[f32], lens: &[usize], dim: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut rows = hidden.chunks_exact(dim);
    for &len in lens {
        let mut acc = vec![0f32; dim];
        for row in rows.by_ref().take(len) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
        let norm = acc.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        // The mean's 1/len cancels in the L2 normalisation.
        acc.iter_mut().for_each(|v| *v /= norm);
        out.push(acc);
    }
    out
}
