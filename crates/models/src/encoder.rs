//! The BERT encoder forward pass, written for CPU serving on Candle tensors.
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
use super::kernels;
use super::quant::QuantLinear;

/// How the dense layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseKind {
    /// f32 gemm (Candle; any device).
    F32,
    /// bf16 tiles on Intel AMX, f32 accumulation.
    Bf16Amx,
    /// int8 weights and inputs on AVX-512 VNNI.
    Int8Vnni,
}

/// A dense layer stored as `[in, out]` plus its bias.
struct Dense {
    /// `[in, out]` f32 weights; `None` when the int8 version replaces them (saves their memory).
    weight: Option<Tensor>,
    bias: Tensor,
    bias_host: Vec<f32>,
    /// The int8 version of this layer (`embedding.precision: int8`), used instead on the CPU.
    quant: Option<QuantLinear>,
    /// Zeros for the activation after the int8 path, which has already added the bias.
    zero_bias: Vec<f32>,
}

impl Dense {
    /// Builds from a PyTorch-layout `[out, in]` weight (transposed here, once).
    fn from_parts(w: &Tensor, b: &Tensor, kind: DenseKind) -> Result<Self> {
        let bias_host = b.to_vec1::<f32>()?;
        let (outputs, inputs) = w.dims2()?;
        let host = || w.flatten_all()?.to_vec1::<f32>();
        let quant = match kind {
            DenseKind::Int8Vnni => Some(QuantLinear::new(&host()?, &bias_host, inputs, outputs)),
            _ => None,
        };
        Ok(Dense {
            weight: if quant.is_some() {
                None
            } else {
                Some(w.t()?.contiguous()?)
            },
            zero_bias: if quant.is_some() {
                vec![0.0; bias_host.len()]
            } else {
                Vec::new()
            },
            bias_host,
            bias: b.clone(),
            quant,
        })
    }

    fn f32_weight(&self) -> Result<&Tensor> {
        self.weight
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("dense layer has no f32 weights".into()))
    }

    /// `gelu(x·W + b)`.
    fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        match &self.quant {
            Some(q) => kernels::bias_gelu(quant_forward(q, x)?, &self.bias, &self.zero_bias),
            None => kernels::bias_gelu(x.matmul(self.f32_weight()?)?, &self.bias, &self.bias_host),
        }
    }
}

fn quant_forward(q: &QuantLinear, x: &Tensor) -> Result<Tensor> {
    let rows = x.dim(0)?;
    let data = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; rows * q.outputs()];
    q.forward(&data, &mut out);
    Tensor::from_vec(out, (rows, q.outputs()), x.device())
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.quant {
            Some(q) => quant_forward(q, x),
            None => x.matmul(self.f32_weight()?)?.broadcast_add(&self.bias),
        }
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
    fn new(w: LayerWeights, kind: DenseKind, eps: f32) -> Result<Self> {
        Ok(Layer {
            qkv: Dense::from_parts(&w.qkv.0, &w.qkv.1, kind)?,
            attn_out: Dense::from_parts(&w.attn_out.0, &w.attn_out.1, kind)?,
            attn_norm: LayerNorm::new(w.attn_norm, eps),
            intermediate: Dense::from_parts(&w.intermediate.0, &w.intermediate.1, kind)?,
            output: Dense::from_parts(&w.output.0, &w.output.1, kind)?,
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
    /// Candle tensors: f32 or int8 dense layers, any device.
    Candle(CandleEncoder),
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
                Encoder::Candle(CandleEncoder::new(embeddings, layers, c, DenseKind::F32)?)
            }
            _ => Encoder::Candle(CandleEncoder::new(embeddings, layers, c, kind)?),
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
    fn new(e: EmbeddingWeights, layers: LayerSource<'_>, c: &Config, kind: DenseKind) -> Result<Self> {
        let eps = c.layer_norm_eps as f32;
        Ok(CandleEncoder {
            words: e.words,
            positions: e.positions,
            token_type: e.token_type,
            norm: LayerNorm::new(e.norm, eps),
            layers: layers
                .layers()
                .map(|w| Layer::new(w?, kind, eps))
                .collect::<Result<_>>()?,
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
