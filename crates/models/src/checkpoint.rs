//! A BERT checkpoint's tensors as every forward pass wants them: Q/K/V fused into one matrix with
//! the attention scale folded in, layer norms under either naming, read one layer at a time.
//! Shared by the Candle encoder ([`super::encoder`]), the int8 one ([`super::int8_encoder`]) and
//! the AMX one (`amx_encoder`), which is why it is none of theirs.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

/// A layer norm's `(weight, bias)`; old TF-converted checkpoints name them gamma/beta.
pub(crate) fn norm_params(vb: &VarBuilder, size: usize) -> Result<(Tensor, Tensor)> {
    if vb.contains_tensor("weight") {
        Ok((vb.get(size, "weight")?, vb.get(size, "bias")?))
    } else {
        Ok((vb.get(size, "gamma")?, vb.get(size, "beta")?))
    }
}

/// A dense layer's PyTorch-layout `[out, in]` weight and its bias.
pub(crate) type DenseParams = (Tensor, Tensor);

/// One transformer layer's weights as stored, with Q/K/V fused into one `[3·hidden, hidden]`
/// matrix and the 1/√d attention scale folded into the query rows.
pub(crate) struct LayerWeights {
    pub qkv: DenseParams,
    pub attn_out: DenseParams,
    pub attn_norm: (Tensor, Tensor),
    pub intermediate: DenseParams,
    pub output: DenseParams,
    pub out_norm: (Tensor, Tensor),
}

impl LayerWeights {
    pub(crate) fn load(vb: &VarBuilder, c: &Config) -> Result<Self> {
        let (h, heads) = (c.hidden_size, c.num_attention_heads);
        let scale = 1.0 / ((h / heads) as f64).sqrt();
        let att = vb.pp("attention");
        let dense = |vb: VarBuilder, inputs: usize, outputs: usize| -> Result<DenseParams> {
            Ok((vb.get((outputs, inputs), "weight")?, vb.get(outputs, "bias")?))
        };
        let (qw, qb) = dense(att.pp("self").pp("query"), h, h)?;
        let (kw, kb) = dense(att.pp("self").pp("key"), h, h)?;
        let (vw, vb_) = dense(att.pp("self").pp("value"), h, h)?;
        Ok(LayerWeights {
            qkv: (
                Tensor::cat(&[(qw * scale)?, kw, vw], 0)?,
                Tensor::cat(&[(qb * scale)?, kb, vb_], 0)?,
            ),
            attn_out: dense(att.pp("output").pp("dense"), h, h)?,
            attn_norm: norm_params(&att.pp("output").pp("LayerNorm"), h)?,
            intermediate: dense(vb.pp("intermediate").pp("dense"), h, c.intermediate_size)?,
            output: dense(vb.pp("output").pp("dense"), c.intermediate_size, h)?,
            out_norm: norm_params(&vb.pp("output").pp("LayerNorm"), h)?,
        })
    }
}

/// The embedding tables and their layer norm.
pub(crate) struct EmbeddingWeights {
    pub words: Tensor,
    pub positions: Tensor,
    /// Token type 0 (queries are single segments).
    pub token_type: Tensor,
    pub norm: (Tensor, Tensor),
}

/// Where the transformer layers' weights are, read one layer at a time so a backend that
/// re-lays them out frees each layer's f32 tensors before reading the next (load-time peak RSS).
pub(crate) struct LayerSource<'a> {
    vb: VarBuilder<'a>,
    config: &'a Config,
}

impl LayerSource<'_> {
    /// Every layer's weights, in order, read on demand.
    pub(crate) fn layers(&self) -> impl Iterator<Item = Result<LayerWeights>> + '_ {
        (0..self.config.num_hidden_layers)
            .map(|i| LayerWeights::load(&self.vb.pp("encoder").pp("layer").pp(i), self.config))
    }
}

/// Checks that `c` describes a BERT this encoder runs, and finds its weights under `vb`
/// (plain, or `bert.`-prefixed as in sequence classifiers): the embeddings, and the layers.
pub(crate) fn load_weights<'a>(vb: VarBuilder<'a>, c: &'a Config) -> Result<(EmbeddingWeights, LayerSource<'a>)> {
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
    let embeddings = EmbeddingWeights {
        words: e.get((c.vocab_size, h), "word_embeddings.weight")?,
        positions: e.get((c.max_position_embeddings, h), "position_embeddings.weight")?,
        token_type: e.get((c.type_vocab_size, h), "token_type_embeddings.weight")?.get(0)?,
        norm: norm_params(&e.pp("LayerNorm"), h)?,
    };
    Ok((embeddings, LayerSource { vb, config: c }))
}

/// The word-embedding table, read in place from its Candle CPU tensor (no second 40+ MB copy).
pub(crate) struct Table(candle_core::Tensor);

impl Table {
    pub(crate) fn new(t: candle_core::Tensor) -> Result<Self> {
        let t = t.contiguous()?;
        let table = Table(t);
        table.with(|_| Ok(()))?;
        Ok(table)
    }

    /// Runs `f` on the table's rows, row-major.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
        let (storage, layout) = self.0.storage_and_layout();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("embedding table is not contiguous".into()))?;
        match &*storage {
            candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => f(&v[start..end]),
            _ => candle_core::bail!("embedding table is not an f32 CPU tensor"),
        }
    }
}
