//! The BERT forward pass for CPUs with AMX: dense layers on bf16 tiles ([`super::amx`]), and
//! everything between them as fused AVX-512 kernels over buffers reused from pass to pass.
//!
//! With the dense layers on AMX, what used to be noise dominates: per-head attention calls,
//! tensor copies, page faults from fresh allocations, single-threaded element-wise passes. So
//! here each activation lives in one workspace buffer that survives the pass; bias, residual and
//! GELU run in the dense layers' store; layer norms write both the f32 activation (for the next
//! residual) and its bf16 copy (the next dense layer's input); attention runs one task per
//! (text, head) on rayon's pool, writing bf16 context rows straight into the next input.

use std::sync::Mutex;

use candle_core::Result;
use candle_transformers::models::bert::Config;
use rayon::prelude::*;

use std::arch::x86_64::*;

use super::amx::{AmxLinear, Bf16Buf, Output, bf16x16, padded_rows, padded_width};
use super::checkpoint::{EmbeddingWeights, LayerSource, Table};

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
    qkv: AmxLinear,
    attn_out: AmxLinear,
    attn_norm: Norm,
    intermediate: AmxLinear,
    output: AmxLinear,
    out_norm: Norm,
}

fn linear((w, b): &(candle_core::Tensor, candle_core::Tensor)) -> Result<AmxLinear> {
    let (outputs, inputs) = w.dims2()?;
    Ok(AmxLinear::new(
        &w.flatten_all()?.to_vec1()?,
        &b.to_vec1::<f32>()?,
        inputs,
        outputs,
    ))
}

/// Activations of one forward pass, kept for the next (grown, never shrunk below the last).
#[derive(Default)]
struct Workspace {
    /// `[rows, hidden]` f32: the running hidden state.
    x: Vec<f32>,
    /// `[rows, hidden]` f32: dense outputs + residual, before their layer norm.
    y: Vec<f32>,
    /// `[padded rows, hidden]` bf16: `x` as the next dense layer's input.
    xb: Bf16Buf,
    /// `[rows, 3·hidden]` f32: queries, keys, values.
    qkv: Vec<f32>,
    /// `[padded rows, hidden]` bf16: attention context, the output projection's input.
    ctxb: Bf16Buf,
    /// `[padded rows, intermediate]` bf16: GELU activations, the output layer's input.
    interb: Bf16Buf,
}

impl Workspace {
    fn fit(&mut self, rows: usize, hidden: usize, inter: usize) {
        let padded = padded_rows(rows);
        let grow_f32 = |v: &mut Vec<f32>, n: usize| {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        };
        // bf16 buffers: padding rows and columns must hold finite values (zero at first).
        grow_f32(&mut self.x, rows * hidden);
        grow_f32(&mut self.y, rows * hidden);
        grow_f32(&mut self.qkv, rows * 3 * hidden);
        self.xb.grow(padded * padded_width(hidden));
        self.ctxb.grow(padded * padded_width(hidden));
        self.interb.grow(padded * padded_width(inter));
    }
}

/// Workspaces kept between passes (one per concurrent caller; usually one worker thread).
const KEPT_WORKSPACES: usize = 4;

/// The encoder on AMX tiles.
pub struct AmxEncoder {
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

impl AmxEncoder {
    /// Whether this model's shapes fit the kernels (widths in whole 16-lane vectors).
    pub fn fits(c: &Config) -> bool {
        let heads = c.num_attention_heads.max(1);
        c.hidden_size.is_multiple_of(16)
            && c.intermediate_size.is_multiple_of(16)
            && (c.hidden_size / heads).is_multiple_of(16)
    }

    /// Converts loaded weights (the caller checked [`super::amx::supported`] and [`Self::fits`]).
    pub fn new(e: EmbeddingWeights, layers: LayerSource<'_>, c: &Config) -> Result<Self> {
        if !Self::fits(c) {
            candle_core::bail!("model widths are not multiples of 16: not supported on AMX");
        }
        let eps = c.layer_norm_eps as f32;
        // One layer at a time, so its f32 tensors are freed before the next is converted.
        let layers = layers
            .layers()
            .map(|w| {
                let w = w?;
                Ok(Layer {
                    qkv: linear(&w.qkv)?,
                    attn_out: linear(&w.attn_out)?,
                    attn_norm: Norm::new(w.attn_norm.clone(), eps)?,
                    intermediate: linear(&w.intermediate)?,
                    output: linear(&w.output)?,
                    out_norm: Norm::new(w.out_norm.clone(), eps)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(AmxEncoder {
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
        let (h, rows) = (self.hidden, ids.len());
        ws.fit(rows, h, self.intermediate);
        let Workspace {
            x,
            y,
            xb,
            qkv,
            ctxb,
            interb,
        } = ws;
        let (x, y, qkv) = (&mut x[..rows * h], &mut y[..rows * h], &mut qkv[..rows * 3 * h]);
        let (xb, ctxb, interb) = (xb.as_mut_slice(), ctxb.as_mut_slice(), interb.as_mut_slice());
        let (hw, iw) = (padded_width(h), padded_width(self.intermediate));

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
        layer_norm(y, x, xb, &self.norm, h, hw);

        for layer in &self.layers {
            layer.qkv.forward(
                xb,
                rows,
                Output::F32 {
                    out: qkv,
                    residual: None,
                },
            );
            attention(qkv, lens, &starts, self.heads, h, ctxb, hw);
            layer.attn_out.forward(
                ctxb,
                rows,
                Output::F32 {
                    out: y,
                    residual: Some(x),
                },
            );
            layer_norm(y, x, xb, &layer.attn_norm, h, hw);
            layer.intermediate.forward(
                xb,
                rows,
                Output::GeluBf16 {
                    out: interb,
                    stride: iw,
                },
            );
            layer.output.forward(
                interb,
                rows,
                Output::F32 {
                    out: y,
                    residual: Some(x),
                },
            );
            layer_norm(y, x, xb, &layer.out_norm, h, hw);
        }
        Ok(x.to_vec())
    }
}

/// Rows per layer-norm task: enough work to amortise a rayon hand-off.
const NORM_ROWS: usize = 32;

/// `x ← norm(y)` row by row, and `xb ←` its bf16 copy (rows of `stride`).
fn layer_norm(y: &[f32], x: &mut [f32], xb: &mut [u16], norm: &Norm, width: usize, stride: usize) {
    let rows = y.len() / width;
    let task = |((y, x), xb): ((&[f32], &mut [f32]), &mut [u16])| {
        for ((y, x), xb) in y
            .chunks_exact(width)
            .zip(x.chunks_exact_mut(width))
            .zip(xb.chunks_exact_mut(stride))
        {
            // SAFETY: the AMX path only runs where AVX-512 was detected (see `amx::supported`).
            unsafe { norm_row(y, x, xb, norm) };
        }
    };
    let xb = &mut xb[..rows * stride];
    if rows > NORM_ROWS {
        y.par_chunks(NORM_ROWS * width)
            .zip(x.par_chunks_mut(NORM_ROWS * width))
            .zip(xb.par_chunks_mut(NORM_ROWS * stride))
            .for_each(task);
    } else {
        task(((y, x), xb));
    }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn norm_row(y: &[f32], x: &mut [f32], xb: &mut [u16], norm: &Norm) {
    let n = y.len();
    debug_assert!(n.is_multiple_of(16) && x.len() == n && xb.len() >= n && norm.gamma.len() == n);
    // SAFETY (whole function): all accesses are 16-lane vectors at offsets below `n`, a
    // multiple of 16, in slices of at least `n` elements.
    unsafe {
        let mut sum = _mm512_setzero_ps();
        for i in (0..n).step_by(16) {
            sum = _mm512_add_ps(sum, _mm512_loadu_ps(y.as_ptr().add(i)));
        }
        let mean = _mm512_set1_ps(_mm512_reduce_add_ps(sum) / n as f32);
        let mut var = _mm512_setzero_ps();
        for i in (0..n).step_by(16) {
            let d = _mm512_sub_ps(_mm512_loadu_ps(y.as_ptr().add(i)), mean);
            var = _mm512_fmadd_ps(d, d, var);
        }
        let rstd = 1.0 / (_mm512_reduce_add_ps(var) / n as f32 + norm.eps).sqrt();
        let rstd = _mm512_set1_ps(rstd);
        for i in (0..n).step_by(16) {
            let d = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(y.as_ptr().add(i)), mean), rstd);
            let v = _mm512_fmadd_ps(
                d,
                _mm512_loadu_ps(norm.gamma.as_ptr().add(i)),
                _mm512_loadu_ps(norm.beta.as_ptr().add(i)),
            );
            _mm512_storeu_ps(x.as_mut_ptr().add(i), v);
            _mm256_storeu_si256(xb.as_mut_ptr().add(i).cast(), bf16x16(v));
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A bf16 destination shared by attention tasks that write disjoint (rows, head) blocks.
#[derive(Clone, Copy)]
struct Ctx(*mut u16);
// SAFETY: every task writes only its own text's rows × its own head's columns.
unsafe impl Send for Ctx {}
// SAFETY: as above.
unsafe impl Sync for Ctx {}

/// Self-attention of every text (its own rows only) and head: `ctxb ← softmax(QKᵀ)V` in bf16.
/// `starts[i]` is text `i`'s first row.
#[allow(clippy::too_many_arguments)]
fn attention(
    qkv: &[f32],
    lens: &[usize],
    starts: &[usize],
    heads: usize,
    hidden: usize,
    ctxb: &mut [u16],
    stride: usize,
) {
    let rows: usize = lens.iter().sum();
    assert!(ctxb.len() >= rows * stride && qkv.len() >= rows * 3 * hidden);
    let out = Ctx(ctxb.as_mut_ptr());
    let task = |t: usize| {
        let (text, head) = (t / heads, t % heads);
        // Kᵀ, V and score rows of one head, kept per thread (bounded by the longest text).
        // SAFETY: AVX-512 is present on AMX CPUs; the task reads rows of its text inside
        // `qkv` and writes its (rows, head) block of `ctxb`, both checked above.
        SCRATCH.with_borrow_mut(|scratch| unsafe {
            attend(
                qkv,
                starts[text],
                lens[text],
                head,
                hidden / heads,
                hidden,
                scratch,
                out,
                stride,
            )
        });
    };
    let tasks = lens.len() * heads;
    // Short texts: a task is a few microseconds, so hand them out in groups.
    let min = (64 / lens.iter().max().copied().unwrap_or(1)).clamp(1, heads);
    (0..tasks).into_par_iter().with_min_len(min).for_each(task);
}

/// One head of one text: Kᵀ and V copied out contiguously (in `scratch`), then four query rows
/// at a time — scores against Kᵀ, softmax, weighted sum of V — written as bf16. Blocking rows
/// lets each K or V load feed four FMAs, with enough independent accumulators to hide latency.
#[target_feature(enable = "avx512f,avx512bw")]
#[allow(clippy::too_many_arguments)]
fn attend(
    qkv: &[f32],
    row0: usize,
    len: usize,
    head: usize,
    hd: usize,
    hidden: usize,
    scratch: &mut Vec<f32>,
    out: Ctx,
    stride: usize,
) {
    let w = 3 * hidden;
    let lp = len.next_multiple_of(16);
    scratch.clear();
    scratch.resize(hd * lp + len * hd + ROWS * lp, 0.0);
    let (kt, rest) = scratch.split_at_mut(hd * lp);
    let (v, scores) = rest.split_at_mut(len * hd);
    let (qo, ko, vo) = (head * hd, hidden + head * hd, 2 * hidden + head * hd);
    for j in 0..len {
        let row = &qkv[(row0 + j) * w..(row0 + j + 1) * w];
        for (d, x) in row[ko..ko + hd].iter().enumerate() {
            kt[d * lp + j] = *x;
        }
        v[j * hd..(j + 1) * hd].copy_from_slice(&row[vo..vo + hd]);
    }
    let head = Head {
        q: qkv[row0 * w + qo..].as_ptr(),
        w,
        kt,
        v,
        len,
        lp,
        hd,
        out: Ctx(unsafe { out.0.add(row0 * stride + qo) }),
        stride,
    };
    let mut i = 0;
    // SAFETY: `attention` checked the buffers; rows `i..i + R` are inside this text.
    unsafe {
        while i + ROWS <= len {
            head.rows::<ROWS>(i, scores);
            i += ROWS;
        }
        while i < len {
            head.rows::<1>(i, scores);
            i += 1;
        }
    }
}

/// Query rows attended together.
const ROWS: usize = 4;

/// One head of one text, laid out for [`attend`].
struct Head<'a> {
    /// This text's first query row (rows are `w` apart).
    q: *const f32,
    w: usize,
    /// `[hd][lp]`: keys transposed, zero past `len`.
    kt: &'a [f32],
    /// `[len][hd]`: values.
    v: &'a [f32],
    len: usize,
    lp: usize,
    hd: usize,
    /// This text's first output row at this head's columns (rows are `stride` apart).
    out: Ctx,
    stride: usize,
}

impl Head<'_> {
    /// Rows `i..i + R`: scores, softmax and context; `scores` holds `R` rows of `lp`.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn rows<const R: usize>(&self, i: usize, scores: &mut [f32]) {
        let (lp, hd, len) = (self.lp, self.hd, self.len);
        // SAFETY (whole function): vectors are read inside `kt` (hd × lp), `v` (len × hd),
        // `scores` (R × lp) and query rows i..i + R; outputs go to rows i..i + R of this head.
        unsafe {
            let q: [*const f32; R] = std::array::from_fn(|r| self.q.add((i + r) * self.w));
            let mut jb = 0;
            while jb < lp {
                // Two column blocks when there are two: 2·R independent accumulators.
                let two = jb + 16 < lp;
                let mut a = [_mm512_setzero_ps(); R];
                let mut b = [_mm512_setzero_ps(); R];
                for d in 0..hd {
                    let k0 = _mm512_loadu_ps(self.kt.as_ptr().add(d * lp + jb));
                    let k1 = if two {
                        _mm512_loadu_ps(self.kt.as_ptr().add(d * lp + jb + 16))
                    } else {
                        _mm512_setzero_ps()
                    };
                    for r in 0..R {
                        let x = _mm512_set1_ps(*q[r].add(d));
                        a[r] = _mm512_fmadd_ps(x, k0, a[r]);
                        b[r] = _mm512_fmadd_ps(x, k1, b[r]);
                    }
                }
                for r in 0..R {
                    _mm512_storeu_ps(scores.as_mut_ptr().add(r * lp + jb), a[r]);
                    if two {
                        _mm512_storeu_ps(scores.as_mut_ptr().add(r * lp + jb + 16), b[r]);
                    }
                }
                jb += if two { 32 } else { 16 };
            }
            let mut inv = [0f32; R];
            for (r, inv) in inv.iter_mut().enumerate() {
                let row = scores.as_mut_ptr().add(r * lp);
                let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
                for jb in (0..lp).step_by(16) {
                    m = _mm512_mask_max_ps(m, live(len, jb), m, _mm512_loadu_ps(row.add(jb)));
                }
                let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
                let mut sum = _mm512_setzero_ps();
                for jb in (0..lp).step_by(16) {
                    let e = super::kernels::exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(row.add(jb)), max));
                    let e = _mm512_maskz_mov_ps(live(len, jb), e);
                    sum = _mm512_add_ps(sum, e);
                    _mm512_storeu_ps(row.add(jb), e);
                }
                *inv = 1.0 / _mm512_reduce_add_ps(sum);
            }
            let mut blk = 0;
            while blk < hd {
                let two = blk + 16 < hd;
                let mut a = [_mm512_setzero_ps(); R];
                let mut b = [_mm512_setzero_ps(); R];
                for j in 0..len {
                    let v0 = _mm512_loadu_ps(self.v.as_ptr().add(j * hd + blk));
                    let v1 = if two {
                        _mm512_loadu_ps(self.v.as_ptr().add(j * hd + blk + 16))
                    } else {
                        _mm512_setzero_ps()
                    };
                    for r in 0..R {
                        let p = _mm512_set1_ps(*scores.get_unchecked(r * lp + j));
                        a[r] = _mm512_fmadd_ps(p, v0, a[r]);
                        b[r] = _mm512_fmadd_ps(p, v1, b[r]);
                    }
                }
                for r in 0..R {
                    let dst = self.out.0.add((i + r) * self.stride + blk);
                    let s = _mm512_set1_ps(inv[r]);
                    _mm256_storeu_si256(dst.cast(), bf16x16(_mm512_mul_ps(a[r], s)));
                    if two {
                        _mm256_storeu_si256(dst.add(16).cast(), bf16x16(_mm512_mul_ps(b[r], s)));
                    }
                }
                blk += if two { 32 } else { 16 };
            }
        }
    }
}

/// Lanes of the 16-column block at `jb` that hold real keys (`j < len`).
#[inline(always)]
fn live(len: usize, jb: usize) -> __mmask16 {
    if jb + 16 <= len {
        u16::MAX
    } else {
        ((1u32 << (len - jb)) - 1) as u16
    }
}
