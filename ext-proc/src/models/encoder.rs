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
use candle_transformers::models::bert::{Config, HiddenAct};

use super::kernels;
use super::quant::QuantLinear;

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
    fn load(vb: &VarBuilder, inputs: usize, outputs: usize, int8: bool) -> Result<Self> {
        let w = vb.get((outputs, inputs), "weight")?;
        let b = vb.get(outputs, "bias")?;
        Self::from_parts(&w, &b, int8)
    }

    /// Builds from a PyTorch-layout `[out, in]` weight (transposed here, once).
    fn from_parts(w: &Tensor, b: &Tensor, int8: bool) -> Result<Self> {
        let bias_host = b.to_vec1::<f32>()?;
        let quant = if int8 {
            let (outputs, inputs) = w.dims2()?;
            let rows = w.flatten_all()?.to_vec1::<f32>()?;
            Some(QuantLinear::new(&rows, &bias_host, inputs, outputs))
        } else {
            None
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
    fn load(vb: &VarBuilder, size: usize, eps: f64) -> Result<Self> {
        // Old TF-converted checkpoints name the parameters gamma/beta.
        let (weight, bias) = if vb.contains_tensor("weight") {
            (vb.get(size, "weight")?, vb.get(size, "bias")?)
        } else {
            (vb.get(size, "gamma")?, vb.get(size, "beta")?)
        };
        Ok(LayerNorm {
            weight,
            bias,
            eps: eps as f32,
        })
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
    fn load(vb: VarBuilder, c: &Config, int8: bool) -> Result<Self> {
        let (h, heads) = (c.hidden_size, c.num_attention_heads);
        let scale = 1.0 / ((h / heads) as f64).sqrt();
        let att = vb.pp("attention");
        let part = |name: &str| -> Result<(Tensor, Tensor)> {
            let vb = att.pp("self").pp(name);
            Ok((vb.get((h, h), "weight")?, vb.get(h, "bias")?))
        };
        let (qw, qb) = part("query")?;
        let (kw, kb) = part("key")?;
        let (vw, vb_) = part("value")?;
        let w = Tensor::cat(&[(qw * scale)?, kw, vw], 0)?;
        let b = Tensor::cat(&[(qb * scale)?, kb, vb_], 0)?;
        Ok(Layer {
            qkv: Dense::from_parts(&w, &b, int8)?,
            attn_out: Dense::load(&att.pp("output").pp("dense"), h, h, int8)?,
            attn_norm: LayerNorm::load(&att.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
            intermediate: Dense::load(&vb.pp("intermediate").pp("dense"), h, c.intermediate_size, int8)?,
            output: Dense::load(&vb.pp("output").pp("dense"), c.intermediate_size, h, int8)?,
            out_norm: LayerNorm::load(&vb.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
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
pub struct Encoder {
    words: Tensor,
    positions: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    max_positions: usize,
}

impl Encoder {
    /// Loads the weights under `vb` (or `vb.pp("bert")`); `int8` quantises the dense layers
    /// (the caller checks [`super::quant::supported`]).
    pub fn load(vb: VarBuilder, c: &Config, int8: bool) -> Result<Self> {
        if !matches!(c.hidden_act, HiddenAct::Gelu) {
            candle_core::bail!(
                "unsupported hidden_act {:?}: llmsoup's encoder runs exact-GELU BERTs",
                c.hidden_act
            );
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!("hidden_size is not a multiple of num_attention_heads");
        }
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let e = vb.pp("embeddings");
        let h = c.hidden_size;
        let token_types = e.get((c.type_vocab_size, h), "token_type_embeddings.weight")?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::load(vb.pp("encoder").pp("layer").pp(i), c, int8))
            .collect::<Result<_>>()?;
        Ok(Encoder {
            words: e.get((c.vocab_size, h), "word_embeddings.weight")?,
            positions: e.get((c.max_position_embeddings, h), "position_embeddings.weight")?,
            // Queries are single segments: token type 0 everywhere.
            token_type: token_types.get(0)?,
            norm: LayerNorm::load(&e.pp("LayerNorm"), h, c.layer_norm_eps)?,
            layers,
            heads: c.num_attention_heads,
            max_positions: c.max_position_embeddings,
        })
    }

    /// Runs the packed texts (`ids` holds `lens[0]` tokens of the first text, then the next...)
    /// and returns the last hidden state, `[sum(lens), hidden]` row-major.
    pub fn forward(&self, ids: &[u32], lens: &[usize], device: &Device) -> Result<Vec<f32>> {
        if lens.iter().sum::<usize>() != ids.len() || lens.contains(&0) {
            candle_core::bail!("packed batch: lengths do not add up");
        }
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
