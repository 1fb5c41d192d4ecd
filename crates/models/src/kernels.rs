//! Element-wise kernels the encoders run in place on Candle's CPU buffers or on host buffers.
//!
//! Candle's own `gelu_erf` calls libm's scalar `erff` per element and allocates a new tensor; on
//! the encoder's widest activation (tokens × 1536) that was ~10% of a forward pass. These kernels
//! fuse the bias add with the activation and use branch-free approximations the compiler
//! vectorises (max error ~1e-7, below f32 rounding of the model's own outputs).

use candle_core::{CpuStorage, InplaceOp1, Layout, Result, Tensor};

/// `e^x` for `x` in f32 range, branch-free (Cody–Waite reduction + degree-6 polynomial).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// GELU with the exact (erf) form BERT uses, erf from Abramowitz & Stegun 7.1.26.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_72, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let erf = (1.0 - poly * exp(-z * z)).copysign(x);
    0.5 * x * (1.0 + erf)
}

/// `e^x` on 16 lanes (same reduction and polynomial as [`exp`]; `scalef` applies 2ⁿ).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0)), _mm512_set1_ps(88.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// [`gelu`] on 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn gelu_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_72, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let t = _mm512_div_ps(
        _mm512_set1_ps(1.0),
        _mm512_fmadd_ps(_mm512_set1_ps(0.327_591_1), z, _mm512_set1_ps(1.0)),
    );
    let mut poly = _mm512_set1_ps(A[4]);
    for a in [A[3], A[2], A[1], A[0]] {
        poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(a));
    }
    poly = _mm512_mul_ps(poly, t);
    let e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z)));
    // erf(|x|/√2) = 1 − poly·e; gelu = 0.5·x·(1 + sign(x)·erf) = 0.5·x + 0.5·|x|·erf.
    let erf = _mm512_fnmadd_ps(poly, e, _mm512_set1_ps(1.0));
    let half = _mm512_set1_ps(0.5);
    _mm512_fmadd_ps(_mm512_mul_ps(half, _mm512_abs_ps(x)), erf, _mm512_mul_ps(half, x))
}

/// Runs a kernel compiled for AVX2+FMA when the CPU has them (the crate's baseline is SSE2), so
/// the loops vectorise 8 wide without building for one CPU.
macro_rules! dispatch {
    ($kernel:ident($data:expr, $arg:expr => $ty:ty)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            fn wide(data: &mut [f32], arg: $ty) {
                $kernel(data, arg)
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU features `wide` was compiled for were just detected.
                unsafe { wide($data, $arg) }
            } else {
                $kernel($data, $arg)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        $kernel($data, $arg)
    }};
}

/// Lanes of the manual reductions: enough independent accumulators for 8-wide vectors.
const LANES: usize = 8;

#[inline(always)]
fn bias_gelu_rows(data: &mut [f32], bias: &[f32]) {
    for row in data.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = gelu(*v + b);
        }
    }
}

#[inline(always)]
fn softmax_rows(data: &mut [f32], width: usize) {
    for row in data.chunks_exact_mut(width) {
        // Lane-wise max and sum: a single running value would serialise (f32 adds are not
        // reassociated by the compiler).
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (m, v) in lanes.iter_mut().zip(c) {
                *m = if *v > *m { *v } else { *m };
            }
        }
        let mut max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        max = lanes.iter().fold(max, |m, v| m.max(*v));
        for v in row.iter_mut() {
            *v = exp(*v - max);
        }
        let mut sums = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (s, v) in sums.iter_mut().zip(c) {
                *s += v;
            }
        }
        let sum = sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

#[inline(always)]
fn gelu_rows_plain(data: &mut [f32], _: ()) {
    for v in data.iter_mut() {
        *v = gelu(*v);
    }
}

/// Elements per GELU task: enough work to amortise a rayon hand-off.
const GELU_CHUNK: usize = 16 * 1024;

/// `x ← gelu(x)` in place on a host buffer (the int8 encoder's intermediate activations, whose
/// bias the dense layer already added).
pub(crate) fn gelu_in_place(data: &mut [f32]) {
    use rayon::prelude::*;
    if data.len() > 2 * GELU_CHUNK {
        data.par_chunks_mut(GELU_CHUNK)
            .for_each(|c| dispatch!(gelu_rows_plain(c, () => ())));
    } else {
        dispatch!(gelu_rows_plain(data, () => ()));
    }
}

/// Softmax of one row in place; inlined into callers compiled for wider vectors.
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32]) {
    let width = row.len();
    softmax_rows(row, width)
}

/// Layer-norm parameters, for [`layer_norm_rows`].
pub(crate) struct NormParams<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
}

#[inline(always)]
fn layer_norm_plain(x: &mut [f32], (y, p): (&[f32], &NormParams<'_>)) {
    let n = p.gamma.len();
    for (y, x) in y.chunks_exact(n).zip(x.chunks_exact_mut(n)) {
        let mut sums = [0f32; LANES];
        let mut chunks = y.chunks_exact(LANES);
        for c in &mut chunks {
            for (s, v) in sums.iter_mut().zip(c) {
                *s += v;
            }
        }
        let mean = (sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()) / n as f32;
        let mut vars = [0f32; LANES];
        let mut chunks = y.chunks_exact(LANES);
        for c in &mut chunks {
            for (s, v) in vars.iter_mut().zip(c) {
                *s += (v - mean) * (v - mean);
            }
        }
        let var = (vars.iter().sum::<f32>() + chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>())
            / n as f32;
        let rstd = 1.0 / (var + p.eps).sqrt();
        for (((x, y), g), b) in x.iter_mut().zip(y).zip(p.gamma).zip(p.beta) {
            *x = (y - mean) * rstd * g + b;
        }
    }
}

/// `x ← layer_norm(y)` row by row (rows of `gamma.len()`), on host buffers.
pub(crate) fn layer_norm_rows(y: &[f32], x: &mut [f32], p: &NormParams<'_>) {
    dispatch!(layer_norm_plain(x, (y, p) => (&[f32], &NormParams<'_>)));
}

/// `x ← gelu(x + bias)` row by row, in place.
struct BiasGelu<'a> {
    bias: &'a [f32],
}

impl InplaceOp1 for BiasGelu<'_> {
    fn name(&self) -> &'static str {
        "llmsoup-bias-gelu"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("bias-gelu: expected f32")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("bias-gelu: expected a contiguous tensor")
        };
        dispatch!(bias_gelu_rows(&mut data[start..end], self.bias => &[f32]));
        Ok(())
    }
}

/// `gelu(x + bias)` for a contiguous f32 matrix `x`: in place on the CPU, Candle's ops elsewhere.
pub fn bias_gelu(x: Tensor, bias: &Tensor, bias_host: &[f32]) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.inplace_op1(&BiasGelu { bias: bias_host })?;
        Ok(x)
    } else {
        x.broadcast_add(bias)?.gelu_erf()
    }
}

/// `x ← softmax(x)` over each row of the last dimension, in place.
struct Softmax {
    width: usize,
}

impl InplaceOp1 for Softmax {
    fn name(&self) -> &'static str {
        "llmsoup-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("softmax: expected f32")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("softmax: expected a contiguous tensor")
        };
        dispatch!(softmax_rows(&mut data[start..end], self.width => usize));
        Ok(())
    }
}

/// Softmax over the last dimension of a contiguous f32 tensor: in place on the CPU.
pub fn softmax_last_dim(x: Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        let width = x.dims().last().copied().unwrap_or(1).max(1);
        x.inplace_op1(&Softmax { width })?;
        Ok(x)
    } else {
        candle_nn::ops::softmax_last_dim(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm() {
        let mut worst: f32 = 0.0;
        for i in -8000..=8000 {
            let x = i as f32 / 100.0;
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 2e-6, "worst relative error {worst}");
    }

    #[test]
    fn gelu_matches_erf_form() {
        // Reference: 0.5·x·(1 + erf(x/√2)) with f64 erf via a high-precision series.
        fn erf64(x: f64) -> f64 {
            // Maclaurin series converges quickly for |x| < 3; beyond, erf is 1 to f32 precision.
            if x.abs() > 4.0 {
                return x.signum();
            }
            let (mut term, mut sum, x2) = (x, x, x * x);
            for n in 1..200 {
                term *= -x2 / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        for i in -600..=600 {
            let x = i as f64 / 100.0;
            let want = 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2));
            let got = gelu(x as f32) as f64;
            assert!((got - want).abs() < 5e-6, "gelu({x}) = {got}, want {want}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_gelu_matches_scalar() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        use std::arch::x86_64::*;
        for i in -4000..4000 {
            let xs: [f32; 16] = std::array::from_fn(|l| (i * 16 + l as i32) as f32 / 3000.0);
            let mut got = [0f32; 16];
            // SAFETY: avx512f detected above; 16-lane loads/stores on 16-element arrays.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), gelu_avx512(_mm512_loadu_ps(xs.as_ptr()))) };
            for (x, g) in xs.iter().zip(got) {
                assert!(
                    (g - gelu(*x)).abs() <= 2e-6 * (1.0 + x.abs()),
                    "gelu({x}) = {g} vs {}",
                    gelu(*x)
                );
            }
        }
    }
}
