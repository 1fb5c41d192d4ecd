//! Int8 dense layers for CPUs with AVX-512 VNNI (`embedding.precision: int8`).
//!
//! Weights are quantised once at load, symmetric per output column; each input row is quantised
//! on the fly (symmetric, shifted to unsigned for `vpdpbusd`, which multiplies u8 by i8 and sums
//! groups of four into i32 lanes). One instruction does 64 multiply-adds where an f32 FMA does
//! 16, and the weights take a quarter of the memory traffic — what bounds short prompts.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output columns per register (16 i32 lanes).
const LANES: usize = 16;
/// Rows computed together, so each weight load serves several rows.
const ROWS: usize = 4;
/// Column blocks computed together, so each input broadcast serves several blocks.
const BLOCKS: usize = 3;

/// Whether this CPU can run the int8 kernels.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A dense layer `y = x·Wᵀ + b` with int8 weights.
pub struct QuantLinear {
    inputs: usize,
    outputs: usize,
    /// Inputs rounded up to a multiple of 4 (one `vpdpbusd` group).
    groups: usize,
    /// `[outputs/16][groups][16][4]` i8: each 64-byte load is 16 columns × 4 inputs.
    weights: Vec<i8>,
    /// Per-column dequantisation scale.
    scales: Vec<f32>,
    /// Per-column sum of quantised weights × 128, to undo the unsigned shift of the inputs.
    shift: Vec<i32>,
    bias: Vec<f32>,
}

impl QuantLinear {
    /// Quantises a PyTorch-layout `[outputs, inputs]` row-major weight and its bias.
    pub fn new(weight: &[f32], bias: &[f32], inputs: usize, outputs: usize) -> Self {
        assert_eq!(weight.len(), inputs * outputs);
        assert_eq!(bias.len(), outputs);
        assert!(outputs.is_multiple_of(LANES), "outputs must be a multiple of {LANES}");
        let groups = inputs.div_ceil(4);
        let mut weights = vec![0i8; outputs * groups * 4];
        let mut scales = vec![0f32; outputs];
        let mut shift = vec![0i32; outputs];
        for o in 0..outputs {
            let row = &weight[o * inputs..(o + 1) * inputs];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            scales[o] = scale;
            let (block, lane) = (o / LANES, o % LANES);
            let mut sum = 0i32;
            for (i, v) in row.iter().enumerate() {
                let q = (v / scale).round().clamp(-127.0, 127.0) as i8;
                sum += i32::from(q);
                let (g, j) = (i / 4, i % 4);
                weights[((block * groups + g) * LANES + lane) * 4 + j] = q;
            }
            shift[o] = sum * 128;
        }
        QuantLinear {
            inputs,
            outputs,
            groups,
            weights,
            scales,
            shift,
            bias: bias.to_vec(),
        }
    }

    /// Output width.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `out = x·Wᵀ + b` for `x` row-major `[rows, inputs]`; `out` is `[rows, outputs]`.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        let rows = x.len() / self.inputs;
        assert_eq!(out.len(), rows * self.outputs);
        // Quantise the inputs: per row symmetric, shifted by 128 into u8 (padding quantises to
        // zero), read back 4 bytes per u32.
        let mut bytes = vec![128u8; rows * self.groups * 4];
        let mut row_scales = vec![0f32; rows];
        for (r, (row, dst)) in x
            .chunks_exact(self.inputs)
            .zip(bytes.chunks_exact_mut(self.groups * 4))
            .enumerate()
        {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            row_scales[r] = scale;
            let inv = 1.0 / scale;
            for (d, v) in dst.iter_mut().zip(row) {
                // Positive after the shift, so truncation rounds half up without a libm call.
                *d = ((v * inv).clamp(-127.0, 127.0) + 128.5) as u8;
            }
        }
        let packed: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let work = |(chunk, out): (usize, &mut [f32])| {
            let first = chunk * ROWS;
            let n = (rows - first).min(ROWS);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `QuantLinear` is only built when `supported()` (checked by the encoder);
            // slices are sized by construction and checked above.
            unsafe {
                self.kernel(&packed[first * self.groups..], &row_scales[first..first + n], n, out)
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (n, out);
        };
        use rayon::prelude::*;
        if rows > ROWS {
            out.par_chunks_mut(ROWS * self.outputs).enumerate().for_each(work);
        } else {
            work((0, out));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kernel(&self, packed: &[u32], row_scales: &[f32], n: usize, out: &mut [f32]) {
        let blocks = self.outputs / LANES;
        let block_len = self.groups * LANES * 4;
        let mut block = 0;
        while block < blocks {
            let nb = (blocks - block).min(BLOCKS);
            // ROWS × BLOCKS independent accumulators hide vpdpbusd's latency.
            let mut acc = [[_mm512_setzero_si512(); BLOCKS]; ROWS];
            for g in 0..self.groups {
                let mut wv = [_mm512_setzero_si512(); BLOCKS];
                for (c, w) in wv.iter_mut().enumerate().take(nb) {
                    // SAFETY: block `block + c` holds `groups` 64-byte groups.
                    *w = unsafe {
                        _mm512_loadu_si512(
                            self.weights
                                .as_ptr()
                                .add((block + c) * block_len + g * LANES * 4)
                                .cast(),
                        )
                    };
                }
                for (r, row) in acc.iter_mut().enumerate().take(n) {
                    let xv = _mm512_set1_epi32(packed[r * self.groups + g] as i32);
                    for (a, w) in row.iter_mut().zip(&wv).take(nb) {
                        *a = _mm512_dpbusd_epi32(*a, xv, *w);
                    }
                }
            }
            for c in 0..nb {
                let col = (block + c) * LANES;
                // SAFETY: 16 contiguous lanes within the per-column vectors.
                let (scale, shift, bias) = unsafe {
                    (
                        _mm512_loadu_ps(self.scales.as_ptr().add(col)),
                        _mm512_loadu_si512(self.shift.as_ptr().add(col).cast()),
                        _mm512_loadu_ps(self.bias.as_ptr().add(col)),
                    )
                };
                for (r, row) in acc.iter().enumerate().take(n) {
                    let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(row[c], shift));
                    let y = _mm512_fmadd_ps(exact, _mm512_mul_ps(scale, _mm512_set1_ps(row_scales[r])), bias);
                    // SAFETY: row `r` of `out` has `outputs` columns; `col + 16 <= outputs`.
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(r * self.outputs + col), y) };
                }
            }
            block += nb;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_matches_f32_within_quantisation_error() {
        if !supported() {
            eprintln!("skipping: no AVX-512 VNNI on this CPU");
            return;
        }
        let (inputs, outputs, rows) = (70, 48, 9);
        // Deterministic, varied values (no RNG dependency).
        let w: Vec<f32> = (0..inputs * outputs)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let b: Vec<f32> = (0..outputs).map(|i| i as f32 / 10.0 - 2.0).collect();
        let x: Vec<f32> = (0..rows * inputs)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
            .collect();
        let q = QuantLinear::new(&w, &b, inputs, outputs);
        let mut got = vec![0f32; rows * outputs];
        q.forward(&x, &mut got);
        for r in 0..rows {
            for o in 0..outputs {
                let want: f32 = (0..inputs).map(|i| x[r * inputs + i] * w[o * inputs + i]).sum::<f32>() + b[o];
                // Rounding error grows with the magnitude of the terms, not of their sum.
                let terms: f32 = (0..inputs).map(|i| (x[r * inputs + i] * w[o * inputs + i]).abs()).sum();
                let tolerance = 0.01 * terms;
                assert!(
                    (got[r * outputs + o] - want).abs() < tolerance,
                    "[{r},{o}] {} vs {want}",
                    got[r * outputs + o]
                );
            }
        }
    }
}
