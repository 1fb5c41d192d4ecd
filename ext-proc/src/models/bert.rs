//! A BERT-family sentence encoder on Candle: tokenise, window long texts (head + tail), one
//! forward pass per batch, mean-pool with the attention mask, L2-normalise.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig, DTYPE};
use tokenizers::Tokenizer;

use super::ModelError;

/// A loaded sentence encoder. Not `Sync`-shared across threads: the worker owns it.
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    cls: u32,
    sep: u32,
    pad: u32,
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
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` (memory-mapped) from `dir`.
    pub fn load(dir: &Path, max_tokens: usize, device: Device) -> Result<Self, ModelError> {
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
        // SAFETY: the file is mapped read-only; llmsoup never writes model files while serving.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DTYPE, &device) }
            .map_err(|e| err("mapping model.safetensors", e))?;
        let model = BertModel::load(vb, &config).map_err(|e| err("building BERT", e))?;
        let id = |t: &str| tokenizer.token_to_id(t);
        let (cls, sep) = match (id("[CLS]"), id("[SEP]")) {
            (Some(c), Some(s)) => (c, s),
            _ => return Err(ModelError::Load("tokenizer has no [CLS]/[SEP] tokens".into())),
        };
        let pad = id("[PAD]").unwrap_or(0);
        let max_tokens = max_tokens.clamp(8, config.max_position_embeddings);
        Ok(SentenceEncoder {
            model,
            tokenizer,
            device,
            cls,
            sep,
            pad,
            max_tokens,
            dim: config.hidden_size,
        })
    }

    /// Token ids of `text` with `[CLS]`/`[SEP]`, windowed to `max_tokens`: the head and the tail
    /// of a long text carry its intent; the middle is dropped.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Inference(format!("tokenising: {e}")))?;
        let ids = enc.get_ids();
        let budget = self.max_tokens - 2;
        let mut out = Vec::with_capacity(ids.len().min(budget) + 2);
        out.push(self.cls);
        if ids.len() <= budget {
            out.extend_from_slice(ids);
        } else {
            let head = budget.div_ceil(2);
            out.extend_from_slice(&ids[..head]);
            out.extend_from_slice(&ids[ids.len() - (budget - head)..]);
        }
        out.push(self.sep);
        Ok(out)
    }

    /// Embeds a batch in one forward pass; rows are L2-normalised.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inf = |what: &str, e: candle_core::Error| ModelError::Inference(format!("{what}: {e}"));
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.ids(t)).collect::<Result<_, _>>()?;
        let width = ids.iter().map(Vec::len).max().unwrap_or(2);
        let n = ids.len();
        let mut flat_ids = Vec::with_capacity(n * width);
        let mut flat_mask = Vec::with_capacity(n * width);
        for row in &ids {
            flat_ids.extend_from_slice(row);
            flat_ids.extend(std::iter::repeat_n(self.pad, width - row.len()));
            flat_mask.extend(std::iter::repeat_n(1u32, row.len()));
            flat_mask.extend(std::iter::repeat_n(0u32, width - row.len()));
        }
        let input = Tensor::from_vec(flat_ids, (n, width), &self.device).map_err(|e| inf("input ids", e))?;
        let mask = Tensor::from_vec(flat_mask, (n, width), &self.device).map_err(|e| inf("mask", e))?;
        let types = input.zeros_like().map_err(|e| inf("token types", e))?;
        let hidden = self
            .model
            .forward(&input, &types, Some(&mask))
            .map_err(|e| inf("forward", e))?;
        let pooled = (|| {
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&m)?.sum(1)?;
            let counts = m.sum(1)?;
            let mean = summed.broadcast_div(&counts)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            mean.broadcast_div(&norm)?.to_vec2::<f32>()
        })()
        .map_err(|e| inf("pooling", e))?;
        Ok(pooled)
    }
}
