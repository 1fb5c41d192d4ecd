//! The BERT forward pass for CPUs without AMX: int8 dense layers ([`super::quant`], AVX2,
//! AVX-VNNI, AVX-512 VNNI or NEON) and everything between them on host buffers reused from pass
//! to pass.
//!
//! With the dense layers in int8, the Candle encoder's glue costs as much as they do on short
//! texts: every layer copied a tensor out to quantise it and back in, attention permuted and
//! copied Q/K/V per text and ran three small matmuls per head. Here each activation lives in one
//! workspace buffer that survives the pass, and attention runs fused — scores, softmax and the
//! weighted sum of V for one (text, head) in one task on rayon's pool, with its Kᵀ and V in a
//! per-thread scratch buffer — compiled for AVX2+FMA where the CPU has them (portable loops the
//! compiler vectorises; NEON is the ARM64 baseline).

use std::sync::Mutex;

use candle_core::Result;
use candle_transformers::models::bert::Config;
use rayon::prelude::*;

use super::checkpoint::{EmbeddingWeights, LayerSource, Table};
use super::kernels;
use super::quant::{Kernel, QuantLinear};

/// A layer norm's parameters on the host.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn new((w, b): (candle_core::Tensor, candle_core::Tensor), eps: f32) -> Result<Self> {
        Ok(Norm {
            gamma: w.to_vec1()?,
            beta: b.to_vec1()?,
            eps,
        })
    }
}

struct Layer {
    qkv: QuantLinear,
    attn_out: QuantLinear,
    attn_norm: Norm,
    intermediate: QuantLinear,
    output: QuantLinear,
    out_norm: Norm,
}

fn linear((w, b): &(candle_core::Tensor, candle_core::Tensor), kernel: Kernel) -> Result<QuantLinear> {
    let (outputs, inputs) = w.dims2()?;
    Ok(QuantLinear::new(
        &w.flatten_all()?.to_vec1()?,
        &b.to_vec1::<f32>()?,
        inputs,
        outputs,
        kernel,
    ))
}

/// Activations of one forward pass, kept for the next (grown, never shrunk).
#[derive(Default)]
struct Workspace {
    /// `[rows, hidden]`: the running hidden state.
    x: Vec<f32>,
    /// `[rows, hidden]`: dense outputs + residual, before their layer norm.
    y: Vec<f32>,
    /// `[rows, 3·hidden]`: queries, keys, values.
    qkv: Vec<f32>,
    /// `[rows, hidden]`: attention context.
    ctx: Vec<f32>,
    /// `[rows, intermediate]`: GELU activations.
    inter: Vec<f32>,
}

impl Workspace {
    fn fit(&mut self, rows: usize, hidden: usize, inter: usize) {
        for (v, n) in [
            (&mut self.x, rows * hidden),
            (&mut self.y, rows * hidden),
            (&mut self.qkv, rows * 3 * hidden),
            (&mut self.ctx, rows * hidden),
            (&mut self.inter, rows * inter),
        ] {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        }
    }
}

/// Workspaces kept between passes (one per concurrent caller; usually one worker thread).
const KEPT_WORKSPACES: usize = 4;

/// The encoder with int8 dense layers.
pub struct Int8Encoder {
    words: Table,
    positions: Vec<f32>,
    token_type: Vec<f32>,
    norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    max_positions: usize,
    workspaces: Mutex<Vec<Workspace>>,
}

impl Int8Encoder {
    /// Whether this model's widths fit `kernel`'s column blocks.
    pub fn fits(c: &Config) -> bool {
        c.hidden_size.is_multiple_of(16) && c.intermediate_size.is_multiple_of(16)
    }

    /// Quantises loaded weights for `kernel` (the caller checked it is supported and
    /// [`Self::fits`]), one layer at a time so its f32 tensors are freed before the next.
    pub fn new(e: EmbeddingWeights, layers: LayerSource<'_>, c: &Config, kernel: Kernel) -> Result<Self> {
        if !Self::fits(c) {
            candle_core::bail!("model widths are not multiples of 16: not supported by the int8 encoder");
        }
        let eps = c.layer_norm_eps as f32;
        let layers = layers
            .layers()
            .map(|w| {
                let w = w?;
                Ok(Layer {
                    qkv: linear(&w.qkv, kernel)?,
                    attn_out: linear(&w.attn_out, kernel)?,
                    attn_norm: Norm::new(w.attn_norm.clone(), eps)?,
                    intermediate: linear(&w.intermediate, kernel)?,
                    output: linear(&w.output, kernel)?,
                    out_norm: Norm::new(w.out_norm.clone(), eps)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Int8Encoder {
            words: Table::new(e.words)?,
            positions: e.positions.flatten_all()?.to_vec1()?,
            token_type: e.token_type.to_vec1()?,
            norm: Norm::new(e.norm, eps)?,
            layers,
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            intermediate: c.intermediate_size,
            max_positions: c.max_position_embeddings,
            workspaces: Mutex::new(Vec::new()),
        })
    }

    /// Runs packed texts (see [`super::encoder::Encoder::forward`]); returns the last hidden
    /// state `[sum(lens), hidden]`.
    pub fn forward(&self, ids: &[u32], lens: &[usize]) -> Result<Vec<f32>> {
        if lens.iter().any(|&l| l > self.max_positions) {
            candle_core::bail!("a text is longer than {} positions", self.max_positions);
        }
        let mut ws = self
            .workspaces
            .lock()
            .ok()
            .and_then(|mut w| w.pop())
            .unwrap_or_default();
        let out = self.words.with(|words| self.run(&mut ws, words, ids, lens));
        if let Ok(mut kept) = self.workspaces.lock()
            && kept.len() < KEPT_WORKSPACES
        {
            kept.push(ws);
        }
        out
    }

    fn run(&self, ws: &mut Workspace, words: &[f32], ids: &[u32], lens: &[usize]) -> Result<Vec<f32>> {
        let vocab = words.len() / self.hidden;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            candle_core::bail!("token id {bad} outside the vocabulary ({vocab})");
        }
        let (h, rows, iw) = (self.hidden, ids.len(), self.intermediate);
        ws.fit(rows, h, iw);
        let Workspace { x, y, qkv, ctx, inter } = ws;
        let (x, y, qkv, ctx, inter) = (
            &mut x[..rows * h],
            &mut y[..rows * h],
            &mut qkv[..rows * 3 * h],
            &mut ctx[..rows * h],
            &mut inter[..rows * iw],
        );

        let mut starts = Vec::with_capacity(lens.len());
        let mut r = 0;
        for &len in lens {
            starts.push(r);
            for p in 0..len {
                let (word, pos) = (ids[r] as usize * h, p * h);
                let dst = &mut y[r * h..(r + 1) * h];
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = words[word + i] + self.positions[pos + i] + self.token_type[i];
                }
                r += 1;
            }
        }
        layer_norm(y, x, &self.norm, h);

        for layer in &self.layers {
            layer.qkv.forward(x, qkv);
            attention(qkv, lens, &starts, self.heads, h, ctx);
            layer.attn_out.forward(ctx, y);
            add_assign(y, x);
            layer_norm(y, x, &layer.attn_norm, h);
            layer.intermediate.forward(x, inter);
            kernels::gelu_in_place(inter);
            layer.output.forward(inter, y);
            add_assign(y, x);
            layer_norm(y, x, &layer.out_norm, h);
        }
        Ok(x.to_vec())
    }
}

/// `y += x` (the residual).
fn add_assign(y: &mut [f32], x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += x;
    }
}

/// Rows per layer-norm task: enough work to amortise a rayon hand-off.
const NORM_ROWS: usize = 32;

/// `x ← norm(y)` row by row.
fn layer_norm(y: &[f32], x: &mut [f32], norm: &Norm, width: usize) {
    let p = kernels::NormParams {
        gamma: &norm.gamma,
        beta: &norm.beta,
        eps: norm.eps,
    };
    let task = |(y, x): (&[f32], &mut [f32])| kernels::layer_norm_rows(y, x, &p);
    if y.len() > NORM_ROWS * width {
        y.par_chunks(NORM_ROWS * width)
            .zip(x.par_chunks_mut(NORM_ROWS * width))
            .for_each(task);
    } else {
        task((y, x));
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The context buffer, shared by attention tasks that write disjoint (rows, head) blocks.
#[derive(Clone, Copy)]
struct Ctx(*mut f32);
// SAFETY: every task writes only its own text's rows × its own head's columns.
unsafe impl Send for Ctx {}
// SAFETY: as above.
unsafe impl Sync for Ctx {}

/// Self-attention of every text (its own rows only) and head: `ctx ← softmax(QKᵀ)V`.
/// `starts[i]` is text `i`'s first row.
fn attention(qkv: &[f32], lens: &[usize], starts: &[usize], heads: usize, hidden: usize, ctx: &mut [f32]) {
    let rows: usize = lens.iter().sum();
    assert!(ctx.len() >= rows * hidden && qkv.len() >= rows * 3 * hidden);
    let out = Ctx(ctx.as_mut_ptr());
    let task = |t: usize| {
        let (text, head) = (t / heads, t % heads);
        let job = Head {
            qkv,
            row0: starts[text],
            len: lens[text],
            head,
            hd: hidden / heads,
            hidden,
            out,
        };
        SCRATCH.with_borrow_mut(|scratch| job.run(scratch));
    };
    let tasks = lens.len() * heads;
    // Short texts: a task is a few microseconds, so hand them out in groups.
    let min = (64 / lens.iter().max().copied().unwrap_or(1)).clamp(1, heads);
    (0..tasks).into_par_iter().with_min_len(min).for_each(task);
}

/// One head of one text.
struct Head<'a> {
    qkv: &'a [f32],
    row0: usize,
    len: usize,
    head: usize,
    hd: usize,
    hidden: usize,
    out: Ctx,
}

impl Head<'_> {
    fn run(&self, scratch: &mut Vec<f32>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features `run_avx2` is compiled for were just detected.
            return unsafe { self.run_avx2(scratch) };
        }
        self.body(scratch)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self, scratch: &mut Vec<f32>) {
        self.body(scratch)
    }

    /// Kᵀ and V copied out contiguously, then per query row: scores against Kᵀ (one
    /// contiguous multiply-add per dimension), softmax, weighted sum of V rows.
    #[inline(always)]
    fn body(&self, scratch: &mut Vec<f32>) {
        let (len, hd, w) = (self.len, self.hd, 3 * self.hidden);
        scratch.clear();
        scratch.resize(hd * len + len * hd + len, 0.0);
        let (kt, rest) = scratch.split_at_mut(hd * len);
        let (v, scores) = rest.split_at_mut(len * hd);
        let (qo, ko, vo) = (
            self.head * hd,
            self.hidden + self.head * hd,
            2 * self.hidden + self.head * hd,
        );
        let rows = &self.qkv[self.row0 * w..(self.row0 + len) * w];
        for (j, row) in rows.chunks_exact(w).enumerate() {
            for (d, k) in row[ko..ko + hd].iter().enumerate() {
                kt[d * len + j] = *k;
            }
            v[j * hd..(j + 1) * hd].copy_from_slice(&row[vo..vo + hd]);
        }
        for (i, row) in rows.chunks_exact(w).enumerate() {
            let q = &row[qo..qo + hd];
            scores.fill(0.0);
            for (d, &qd) in q.iter().enumerate() {
                for (s, k) in scores.iter_mut().zip(&kt[d * len..(d + 1) * len]) {
                    *s += qd * k;
                }
            }
            kernels::softmax_row(scores);
            // SAFETY: row `row0 + i`, columns `qo..qo + hd` of the context belong to this task
            // alone (`attention` checked the buffer holds every row).
            let dst = unsafe { std::slice::from_raw_parts_mut(self.out.0.add((self.row0 + i) * self.hidden + qo), hd) };
            dst.fill(0.0);
            for (p, vr) in scores.iter().zip(v.chunks_exact(hd)) {
                for (o, x) in dst.iter_mut().zip(vr) {
                    *o += p * x;
                }
            }
        }
    }
}
