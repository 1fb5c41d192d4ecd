//! The BERT encoder forward pass, written for CPU serving on Candle tensors (f32, any device),
//! and the choice between it and the CPU encoders with reduced-precision dense layers.
//!
//! Same weights and maths as `candle_transformers::models::bert::BertModel` (post-LN BERT, exact
//! GELU), laid out for small, ragged batches of queries:
//! - texts are packed row after row with no padding, so the dense layers (90% of the FLOPs) never
//!   compute pad tokens; only attention is done per text;
//! - weights are transposed once at load into the `[in, out]` layout the gemm kernels stream
//!   best (2–4× faster than multiplying by a transposed view at a few dozen rows), Q/K/V are fused
//!   into one matrix, and the 1/√d attention scale is folded into the query weights;
//! - bias + GELU and the softmax run in place (see [`super::kernels`]).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;

#[cfg(target_arch = "x86_64")]
use super::amx_encoder::AmxEncoder;
use super::checkpoint::{EmbeddingWeights, LayerSource, LayerWeights, load_weights};
use super::int8_encoder::Int8Encoder;
use super::kernels;
use super::quant::Kernel;

/// How the dense layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseKind {
    /// f32 gemm (Candle; any device).
    F32,
    /// bf16 tiles on Intel AMX, f32 accumulation.
    Bf16Amx,
    /// int8 weights and inputs on the given kernel (AVX2, AVX-VNNI, AVX-512 VNNI, NEON).
    Int8(Kernel),
}

impl std::fmt::Display for DenseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DenseKind::F32 => f.write_str("f32"),
            DenseKind::Bf16Amx => f.write_str("bf16-amx"),
            DenseKind::Int8(k) => write!(f, "int8-{}", k.name()),
        }
    }
}

/// A dense layer stored as `[in, out]` plus its bias.
struct Dense {
    /// `[in, out]` f32 weights.
    weight: Tensor,
    bias: Tensor,
    bias_host: Vec<f32>,
}

impl Dense {
    /// Builds from a PyTorch-layout `[out, in]` weight (transposed here, once).
    fn from_parts(w: &Tensor, b: &Tensor) -> Result<Self> {
        Ok(Dense {
            weight: w.t()?.contiguous()?,
            bias_host: b.to_vec1::<f32>()?,
            bias: b.clone(),
        })
    }

    /// `gelu(x·W + b)`.
    fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        kernels::bias_gelu(x.matmul(&self.weight)?, &self.bias, &self.bias_host)
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight)?.broadcast_add(&self.bias)
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn new((weight, bias): (Tensor, Tensor), eps: f32) -> Self {
        LayerNorm { weight, bias, eps }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    out_norm: LayerNorm,
}

impl Layer {
    fn new(w: LayerWeights, eps: f32) -> Result<Self> {
        Ok(Layer {
            qkv: Dense::from_parts(&w.qkv.0, &w.qkv.1)?,
            attn_out: Dense::from_parts(&w.attn_out.0, &w.attn_out.1)?,
            attn_norm: LayerNorm::new(w.attn_norm, eps),
            intermediate: Dense::from_parts(&w.intermediate.0, &w.intermediate.1)?,
            output: Dense::from_parts(&w.output.0, &w.output.1)?,
            out_norm: LayerNorm::new(w.out_norm, eps),
        })
    }

    /// `x`: packed `[tokens, hidden]`; `lens`: tokens of each text, in order.
    fn forward(&self, x: &Tensor, lens: &[usize], heads: usize) -> Result<Tensor> {
        let (_, hidden) = x.dims2()?;
        let head_dim = hidden / heads;
        let qkv = self.qkv.forward(x)?;
        let mut contexts = Vec::with_capacity(lens.len());
        let mut start = 0;
        for &len in lens {
            // [len, 3·hidden] → [3, heads, len, head_dim]
            let t = qkv
                .narrow(0, start, len)?
                .reshape((len, 3, heads, head_dim))?
                .permute((1, 2, 0, 3))?
                .contiguous()?;
            let (q, k, v) = (t.get(0)?, t.get(1)?, t.get(2)?);
            let scores = kernels::softmax_last_dim(q.matmul(&k.t()?)?)?;
            let ctx = scores.matmul(&v)?.transpose(0, 1)?.reshape((len, hidden))?;
            contexts.push(ctx);
            start += len;
        }
        let ctx = if contexts.len() == 1 {
            contexts.pop().expect("one context")
        } else {
            Tensor::cat(&contexts, 0)?
        };
        let x = self.attn_norm.forward(&(self.attn_out.forward(&ctx)? + x)?)?;
        let inter = self.intermediate.forward_gelu(&x)?;
        self.out_norm.forward(&(self.output.forward(&inter)? + x)?)
    }
}

/// A BERT encoder (sentence-transformers or `BertModel` checkpoints; `bert.`-prefixed
/// checkpoints such as sequence classifiers work too).
pub enum Encoder {
    /// Candle tensors: f32 dense layers, any device.
    Candle(CandleEncoder),
    /// int8 dense layers, fused CPU kernels around them (CPUs without AMX).
    Int8(Int8Encoder),
    /// bf16 dense layers on AMX tiles, fused CPU kernels around them.
    #[cfg(target_arch = "x86_64")]
    Amx(AmxEncoder),
}

impl Encoder {
    /// Loads the weights under `vb`, dense layers prepared for `kind` (the caller checks that
    /// the device and CPU support it).
    pub fn load(vb: VarBuilder, c: &Config, kind: DenseKind) -> Result<Self> {
        let (embeddings, layers) = load_weights(vb, c)?;
        Ok(match kind {
            #[cfg(target_arch = "x86_64")]
            DenseKind::Bf16Amx if AmxEncoder::fits(c) => Encoder::Amx(AmxEncoder::new(embeddings, layers, c)?),
            DenseKind::Bf16Amx => {
                tracing::warn!("model widths are not multiples of 16: AMX does not apply, running f32");
                Encoder::Candle(CandleEncoder::new(embeddings, layers, c)?)
            }
            DenseKind::Int8(kernel) if Int8Encoder::fits(c) => {
                Encoder::Int8(Int8Encoder::new(embeddings, layers, c, kernel)?)
            }
            DenseKind::Int8(_) => {
                tracing::warn!("model widths are not multiples of 16: int8 does not apply, running f32");
                Encoder::Candle(CandleEncoder::new(embeddings, layers, c)?)
            }
            DenseKind::F32 => Encoder::Candle(CandleEncoder::new(embeddings, layers, c)?),
        })
    }

    /// Runs the packed texts (`ids` holds `lens[0]` tokens of the first text, then the next...)
    /// and returns the last hidden state, `[sum(lens), hidden]` row-major.
    pub fn forward(&self, ids: &[u32], lens: &[usize], device: &Device) -> Result<Vec<f32>> {
        if lens.iter().sum::<usize>() != ids.len() || lens.contains(&0) {
            candle_core::bail!("packed batch: lengths do not add up");
        }
        match self {
            Encoder::Candle(e) => e.forward(ids, lens, device),
            Encoder::Int8(e) => e.forward(ids, lens),
            #[cfg(target_arch = "x86_64")]
            Encoder::Amx(e) => e.forward(ids, lens),
        }
    }
}

/// The encoder on Candle tensors.
pub struct CandleEncoder {
    words: Tensor,
    positions: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    max_positions: usize,
}

impl CandleEncoder {
    fn new(e: EmbeddingWeights, layers: LayerSource<'_>, c: &Config) -> Result<Self> {
        let eps = c.layer_norm_eps as f32;
        Ok(CandleEncoder {
            words: e.words,
            positions: e.positions,
            token_type: e.token_type,
            norm: LayerNorm::new(e.norm, eps),
            layers: layers.layers().map(|w| Layer::new(w?, eps)).collect::<Result<_>>()?,
            heads: c.num_attention_heads,
            max_positions: c.max_position_embeddings,
        })
    }

    /// Runs the packed texts (`ids` holds `lens[0]` tokens of the first text, then the next...)
    /// and returns the last hidden state, `[sum(lens), hidden]` row-major.
    fn forward(&self, ids: &[u32], lens: &[usize], device: &Device) -> Result<Vec<f32>> {
        if lens.iter().any(|&l| l > self.max_positions) {
            candle_core::bail!("a text is longer than {} positions", self.max_positions);
        }
        let positions: Vec<u32> = lens.iter().flat_map(|&l| 0..l as u32).collect();
        let ids = Tensor::from_slice(ids, ids.len(), device)?;
        let positions = Tensor::from_slice(&positions, positions.len(), device)?;
        let x = (self.words.index_select(&ids, 0)? + self.positions.index_select(&positions, 0)?)?
            .broadcast_add(&self.token_type)?;
        let mut x = self.norm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x, lens, self.heads)?;
        }
        x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
    }
}
