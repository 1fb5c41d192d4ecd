//! Int8 dense layers (`embedding.precision: int8`, and `auto` on CPUs without AMX), with one
//! kernel per instruction set, picked at run time:
//!
//! | kernel | CPUs | multiply-adds per instruction |
//! |---|---|---|
//! | `avx512vnni` | Intel Ice Lake+, AMD Zen 4+ | 64 (`vpdpbusd` zmm) |
//! | `avxvnni` | Intel Alder Lake+, AMD Zen 5 | 32 (`vpdpbusd` ymm) |
//! | `avx2` | every x86-64 since Haswell / Zen 1 | 32 per 3 (`vpmaddubsw` + `vpmaddwd` + add) |
//! | `dotprod` | ARMv8.2+ with the dot product extension (Graviton 2+, Ampere Altra, Apple M1+) | 16 (`sdot`) |
//! | `neon` | every ARM64 | 16 per 4 (`smull` + `smull2` + `addp` + `sadalp`) |
//!
//! Weights are quantised once at load, symmetric per output column. Inputs are quantised on the
//! fly, symmetric per block of 32 inputs of a row (as ggml's Q8_0): BERT's activations have a few
//! outlier channels, and one scale per row let them squeeze every other channel into a handful of
//! levels (cosine 0.989 to f32 on short texts); with a scale per block an outlier costs only its
//! own block, and every path stays within cosine 0.995 of f32. Integer sums are exact within a
//! block and converted to f32 between blocks. The weights take a quarter of the f32 memory
//! traffic, which is what bounds short prompts, and an integer instruction does 2–4× the
//! multiply-adds of an f32 FMA of the same width.
//!
//! Saturation: `vpdpbusd` multiplies u8 by i8, so its kernels shift the inputs by 128 and take
//! the shift back out per column. `vpmaddubsw` adds two u8×i8 products into a *saturating* i16,
//! which a shifted input (up to 255·127·2) would overflow; the AVX2 kernel multiplies |x| by the
//! weight carrying x's sign (`vpsignb`), so both factors stay within 127 and a pair within
//! 2·127² < 2¹⁵: exact, with full 8-bit inputs. NEON multiplies i8 by i8 into i16 directly
//! (a pair within 2·127² too); `sdot` multiplies i8 by i8 into i32.
//!
//! `sdot` is emitted with inline assembly: its Rust intrinsic (`vdotq_s32`) is not stable yet,
//! and the instruction is only reached after `is_aarch64_feature_detected!("dotprod")`.
//!
//! `LLMSOUP_INT8_KERNEL` (one of the names above) forces a kernel the CPU has, so tests and
//! benchmarks cover every path a machine offers; an unknown or unsupported name is ignored
//! with a warning.

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows computed together, so each weight load serves several rows.
const ROWS: usize = 4;
/// Groups of 4 inputs per activation-scale block (32 inputs).
const BLOCK_GROUPS: usize = 8;

/// One int8 kernel, named after the instructions it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `vpdpbusd` on 512-bit registers.
    Avx512Vnni,
    /// `vpdpbusd` on 256-bit registers (VEX encoding).
    AvxVnni,
    /// `vpmaddubsw` + `vpmaddwd` (AVX2).
    Avx2,
    /// `sdot` (ARMv8.2 dot product extension, `FEAT_DotProd`).
    Dotprod,
    /// `smull` + `sadalp` (ARMv8 NEON, every ARM64 CPU).
    Neon,
}

/// The environment variable that forces a kernel (tests, benchmarks).
pub const KERNEL_ENV: &str = "LLMSOUP_INT8_KERNEL";

impl Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Kernel; 5] = [
        Kernel::Avx512Vnni,
        Kernel::AvxVnni,
        Kernel::Avx2,
        Kernel::Dotprod,
        Kernel::Neon,
    ];

    /// The name `LLMSOUP_INT8_KERNEL` and the logs use.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Vnni => "avx512vnni",
            Kernel::AvxVnni => "avxvnni",
            Kernel::Avx2 => "avx2",
            Kernel::Dotprod => "dotprod",
            Kernel::Neon => "neon",
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Kernel::Avx512Vnni => has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
                Kernel::AvxVnni => has!("avx2") && has!("fma") && has!("avxvnni"),
                Kernel::Avx2 => has!("avx2") && has!("fma"),
                Kernel::Dotprod | Kernel::Neon => false,
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            use std::arch::is_aarch64_feature_detected as has;
            match self {
                Kernel::Dotprod => has!("neon") && has!("dotprod"),
                Kernel::Neon => has!("neon"),
                Kernel::Avx512Vnni | Kernel::AvxVnni | Kernel::Avx2 => false,
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let _ = self;
            false
        }
    }

    /// Every kernel this CPU can run, fastest first.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.supported()).collect()
    }

    /// The kernel to use: `LLMSOUP_INT8_KERNEL` when it names one this CPU has, else the
    /// fastest this CPU has; `None` when it has none (the encoder then runs f32).
    pub fn select() -> Option<Kernel> {
        if let Ok(name) = std::env::var(KERNEL_ENV) {
            match Kernel::ALL.into_iter().find(|k| k.name() == name) {
                Some(k) if k.supported() => return Some(k),
                _ => tracing::warn!(
                    "{KERNEL_ENV}={name}: not an int8 kernel this CPU has ({:?}); using the fastest",
                    Kernel::available().iter().map(|k| k.name()).collect::<Vec<_>>()
                ),
            }
        }
        Kernel::available().into_iter().next()
    }

    /// Output columns per register block (i32 lanes of the kernel's vectors).
    fn lanes(self) -> usize {
        match self {
            Kernel::Avx512Vnni => 16,
            Kernel::AvxVnni | Kernel::Avx2 => 8,
            Kernel::Dotprod | Kernel::Neon => 4,
        }
    }

    /// Whether inputs are shifted into u8 (the `vpdpbusd` kernels) rather than kept signed.
    fn shifted(self) -> bool {
        matches!(self, Kernel::Avx512Vnni | Kernel::AvxVnni)
    }
}

/// A dense layer `y = x·Wᵀ + b` with int8 weights.
pub struct QuantLinear {
    kernel: Kernel,
    inputs: usize,
    outputs: usize,
    /// Inputs rounded up to a multiple of 32, in 32-bit groups of four (zero padding).
    groups: usize,
    /// Activation-scale blocks per row (`groups / BLOCK_GROUPS`).
    blocks: usize,
    /// `[outputs/lanes][groups][lanes][4]` i8: one vector load is `lanes` columns × 4 inputs.
    weights: Vec<i8>,
    /// Per-column dequantisation scale.
    scales: Vec<f32>,
    /// Per (column block, input block, column) sum of quantised weights × 128, to undo the
    /// unsigned shift of the inputs (empty for kernels with signed inputs).
    #[cfg_attr(
        not(target_arch = "x86_64"),
        expect(dead_code, reason = "only the x86 `vpdpbusd` kernels shift their inputs")
    )]
    shift: Vec<i32>,
    bias: Vec<f32>,
}

/// Per-call buffers: quantised inputs and their scales.
struct Quantised {
    /// 4 input bytes per u32, `groups` per row.
    packed: Vec<u32>,
    /// `blocks` per row.
    scales: Vec<f32>,
}

impl QuantLinear {
    /// Quantises a PyTorch-layout `[outputs, inputs]` row-major weight and its bias for
    /// `kernel` (which the caller checked is [`Kernel::supported`]).
    pub fn new(weight: &[f32], bias: &[f32], inputs: usize, outputs: usize, kernel: Kernel) -> Self {
        assert_eq!(weight.len(), inputs * outputs);
        assert_eq!(bias.len(), outputs);
        let lanes = kernel.lanes();
        assert!(outputs.is_multiple_of(lanes), "outputs must be a multiple of {lanes}");
        let groups = inputs.div_ceil(4 * BLOCK_GROUPS) * BLOCK_GROUPS;
        let blocks = groups / BLOCK_GROUPS;
        let mut weights = vec![0i8; outputs * groups * 4];
        let mut scales = vec![0f32; outputs];
        let mut shift = if kernel.shifted() {
            vec![0i32; outputs * blocks]
        } else {
            Vec::new()
        };
        for o in 0..outputs {
            let row = &weight[o * inputs..(o + 1) * inputs];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            scales[o] = scale;
            let (cb, lane) = (o / lanes, o % lanes);
            for (i, v) in row.iter().enumerate() {
                let q = (v / scale).round().clamp(-127.0, 127.0) as i8;
                let (g, j) = (i / 4, i % 4);
                weights[((cb * groups + g) * lanes + lane) * 4 + j] = q;
                if kernel.shifted() {
                    shift[(cb * blocks + g / BLOCK_GROUPS) * lanes + lane] += i32::from(q) * 128;
                }
            }
        }
        QuantLinear {
            kernel,
            inputs,
            outputs,
            groups,
            blocks,
            weights,
            scales,
            shift,
            bias: bias.to_vec(),
        }
    }

    /// Quantises the rows of `x`, symmetric per block of 32 inputs: shifted into u8 for the
    /// `vpdpbusd` kernels, signed for the others (padding inputs quantise to zero either way),
    /// packed 4 bytes per u32.
    fn quantise(&self, x: &[f32], rows: usize) -> Quantised {
        // Rounded as `trunc(y + 128.5)` (positive, so truncation rounds half up without a libm
        // call); the signed kernels flip the top bit back: `u ^ 0x80` is `u − 128` as i8.
        let (flip, pad) = if self.kernel.shifted() { (0, 128u8) } else { (0x80, 0) };
        let mut packed = vec![0u32; rows * self.groups];
        let mut scales = vec![0f32; rows * self.blocks];
        let mut bytes = [pad; 4 * 4 * BLOCK_GROUPS];
        let block = 4 * BLOCK_GROUPS;
        for ((row, dst), s) in x
            .chunks_exact(self.inputs)
            .zip(packed.chunks_exact_mut(self.groups))
            .zip(scales.chunks_exact_mut(self.blocks))
        {
            for ((chunk, dst), s) in row.chunks(block).zip(dst.chunks_exact_mut(BLOCK_GROUPS)).zip(s) {
                let max = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                *s = scale;
                let inv = 1.0 / scale;
                let bytes = &mut bytes[..block];
                bytes.fill(pad);
                for (b, v) in bytes.iter_mut().zip(chunk) {
                    *b = (((v * inv).clamp(-127.0, 127.0) + 128.5) as u8) ^ flip;
                }
                for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                    *d = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        Quantised { packed, scales }
    }

    /// `out = x·Wᵀ + b` for `x` row-major `[rows, inputs]`; `out` is `[rows, outputs]`.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        let rows = x.len() / self.inputs;
        assert_eq!(x.len(), rows * self.inputs);
        assert_eq!(out.len(), rows * self.outputs);
        let q = self.quantise(x, rows);
        let work = |(chunk, out): (usize, &mut [f32])| {
            let first = chunk * ROWS;
            let n = (rows - first).min(ROWS);
            let (packed, scales) = (
                &q.packed[first * self.groups..],
                &q.scales[first * self.blocks..(first + n) * self.blocks],
            );
            // SAFETY: a `QuantLinear` is only built for a kernel the CPU supports (the caller
            // checks `Kernel::supported`); every kernel reads `n` rows of `groups` packed inputs
            // and writes `n` rows of `outputs`, which the slices hold.
            unsafe {
                match self.kernel {
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx512Vnni => self.kernel_avx512vnni(packed, scales, n, out),
                    #[cfg(target_arch = "x86_64")]
                    Kernel::AvxVnni => self.kernel_avxvnni(packed, scales, n, out),
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2 => self.kernel_avx2(packed, scales, n, out),
                    #[cfg(target_arch = "aarch64")]
                    Kernel::Dotprod => self.kernel_dotprod(packed, scales, n, out),
                    #[cfg(target_arch = "aarch64")]
                    Kernel::Neon => self.kernel_neon(packed, scales, n, out),
                    #[allow(unreachable_patterns)]
                    _ => unreachable!("int8 kernel {:?} built for another architecture", self.kernel),
                }
            }
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
    unsafe fn kernel_avx512vnni(&self, packed: &[u32], row_scales: &[f32], n: usize, out: &mut [f32]) {
        /// Column blocks computed together, so each input broadcast serves several blocks.
        const CB: usize = 3;
        const LANES: usize = 16;
        let cblocks = self.outputs / LANES;
        let cblock_len = self.groups * LANES * 4;
        let mut cb = 0;
        while cb < cblocks {
            let nb = (cblocks - cb).min(CB);
            let mut facc = [[_mm512_setzero_ps(); CB]; ROWS];
            for ib in 0..self.blocks {
                // ROWS × CB independent accumulators hide vpdpbusd's latency.
                let mut acc = [[_mm512_setzero_si512(); CB]; ROWS];
                for g in ib * BLOCK_GROUPS..(ib + 1) * BLOCK_GROUPS {
                    let mut wv = [_mm512_setzero_si512(); CB];
                    for (c, w) in wv.iter_mut().enumerate().take(nb) {
                        // SAFETY: column block `cb + c` holds `groups` 64-byte groups.
                        *w = unsafe {
                            _mm512_loadu_si512(self.weights.as_ptr().add((cb + c) * cblock_len + g * LANES * 4).cast())
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
                    // SAFETY: 16 lanes of this (column block, input block)'s shift sums.
                    let shift = unsafe {
                        _mm512_loadu_si512(self.shift.as_ptr().add(((cb + c) * self.blocks + ib) * LANES).cast())
                    };
                    for r in 0..n {
                        let s = _mm512_set1_ps(row_scales[r * self.blocks + ib]);
                        let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][c], shift));
                        facc[r][c] = _mm512_fmadd_ps(exact, s, facc[r][c]);
                    }
                }
            }
            for c in 0..nb {
                let col = (cb + c) * LANES;
                // SAFETY: 16 contiguous lanes within the per-column vectors.
                let (scale, bias) = unsafe {
                    (
                        _mm512_loadu_ps(self.scales.as_ptr().add(col)),
                        _mm512_loadu_ps(self.bias.as_ptr().add(col)),
                    )
                };
                for (r, row) in facc.iter().enumerate().take(n) {
                    let y = _mm512_fmadd_ps(row[c], scale, bias);
                    // SAFETY: row `r` of `out` has `outputs` columns; `col + 16 <= outputs`.
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(r * self.outputs + col), y) };
                }
            }
            cb += nb;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avxvnni")]
    unsafe fn kernel_avxvnni(&self, packed: &[u32], row_scales: &[f32], n: usize, out: &mut [f32]) {
        const CB: usize = 3;
        const LANES: usize = 8;
        let cblocks = self.outputs / LANES;
        let cblock_len = self.groups * LANES * 4;
        let mut cb = 0;
        while cb < cblocks {
            let nb = (cblocks - cb).min(CB);
            let mut facc = [[_mm256_setzero_ps(); CB]; ROWS];
            for ib in 0..self.blocks {
                // 12 accumulators + 3 weights + 1 input: the 16 ymm registers.
                let mut acc = [[_mm256_setzero_si256(); CB]; ROWS];
                for g in ib * BLOCK_GROUPS..(ib + 1) * BLOCK_GROUPS {
                    let mut wv = [_mm256_setzero_si256(); CB];
                    for (c, w) in wv.iter_mut().enumerate().take(nb) {
                        // SAFETY: column block `cb + c` holds `groups` 32-byte groups.
                        *w = unsafe {
                            _mm256_loadu_si256(self.weights.as_ptr().add((cb + c) * cblock_len + g * LANES * 4).cast())
                        };
                    }
                    for (r, row) in acc.iter_mut().enumerate().take(n) {
                        let xv = _mm256_set1_epi32(packed[r * self.groups + g] as i32);
                        for (a, w) in row.iter_mut().zip(&wv).take(nb) {
                            *a = _mm256_dpbusd_avx_epi32(*a, xv, *w);
                        }
                    }
                }
                for c in 0..nb {
                    // SAFETY: 8 lanes of this (column block, input block)'s shift sums.
                    let shift = unsafe {
                        _mm256_loadu_si256(self.shift.as_ptr().add(((cb + c) * self.blocks + ib) * LANES).cast())
                    };
                    for r in 0..n {
                        let s = _mm256_set1_ps(row_scales[r * self.blocks + ib]);
                        let exact = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r][c], shift));
                        facc[r][c] = _mm256_fmadd_ps(exact, s, facc[r][c]);
                    }
                }
            }
            // SAFETY: as in `store_avx2`.
            unsafe { self.store_avx2(&facc, cb, nb, n, out) };
            cb += nb;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_avx2(&self, packed: &[u32], row_scales: &[f32], n: usize, out: &mut [f32]) {
        const CB: usize = 3;
        const LANES: usize = 8;
        let cblocks = self.outputs / LANES;
        let cblock_len = self.groups * LANES * 4;
        let ones = _mm256_set1_epi16(1);
        let mut cb = 0;
        while cb < cblocks {
            let nb = (cblocks - cb).min(CB);
            let mut facc = [[_mm256_setzero_ps(); CB]; ROWS];
            for ib in 0..self.blocks {
                let mut acc = [[_mm256_setzero_si256(); CB]; ROWS];
                for g in ib * BLOCK_GROUPS..(ib + 1) * BLOCK_GROUPS {
                    let mut wv = [_mm256_setzero_si256(); CB];
                    for (c, w) in wv.iter_mut().enumerate().take(nb) {
                        // SAFETY: column block `cb + c` holds `groups` 32-byte groups.
                        *w = unsafe {
                            _mm256_loadu_si256(self.weights.as_ptr().add((cb + c) * cblock_len + g * LANES * 4).cast())
                        };
                    }
                    for (r, row) in acc.iter_mut().enumerate().take(n) {
                        let xv = _mm256_set1_epi32(packed[r * self.groups + g] as i32);
                        // |x| · (w with x's sign) = x · w, both factors within ±127: no saturation.
                        let ax = _mm256_abs_epi8(xv);
                        for (a, w) in row.iter_mut().zip(&wv).take(nb) {
                            let pairs = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(*w, xv));
                            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(pairs, ones));
                        }
                    }
                }
                for r in 0..n {
                    let s = _mm256_set1_ps(row_scales[r * self.blocks + ib]);
                    for c in 0..nb {
                        facc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][c]), s, facc[r][c]);
                    }
                }
            }
            // SAFETY: as in `store_avx2`.
            unsafe { self.store_avx2(&facc, cb, nb, n, out) };
            cb += nb;
        }
    }

    /// `out ← acc · column scale + bias` for `nb` blocks of 8 columns from `cb`, `n` rows.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_avx2<const B: usize>(
        &self,
        facc: &[[__m256; B]; ROWS],
        cb: usize,
        nb: usize,
        n: usize,
        out: &mut [f32],
    ) {
        for c in 0..nb {
            let col = (cb + c) * 8;
            // SAFETY: 8 contiguous lanes within the per-column vectors (`col + 8 <= outputs`).
            let (scale, bias) = unsafe {
                (
                    _mm256_loadu_ps(self.scales.as_ptr().add(col)),
                    _mm256_loadu_ps(self.bias.as_ptr().add(col)),
                )
            };
            for (r, row) in facc.iter().enumerate().take(n) {
                let y = _mm256_fmadd_ps(row[c], scale, bias);
                // SAFETY: row `r` of `out` has `outputs` columns; `col + 8 <= outputs`.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(r * self.outputs + col), y) };
            }
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn kernel_neon(&self, packed: &[u32], row_scales: &[f32], n: usize, out: &mut [f32]) {
        // SAFETY: this function runs with NEON, all `dot_neon` needs.
        let dot = |acc, x, w| unsafe { dot_neon(acc, x, w) };
        // SAFETY: as for `neon_tiles`.
        unsafe { self.neon_tiles(packed, row_scales, n, out, dot) }
    }

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn kernel_dotprod(&self, packed: &[u32], row_scales: &[f32], n: usize, out: &mut [f32]) {
        // SAFETY: `QuantLinear::new` is only given `Kernel::Dotprod` on a CPU with `dotprod`
        // (`Kernel::supported`), which `sdot` needs.
        let dot = |acc, x, w| unsafe { sdot(acc, x, w) };
        // SAFETY: as for `neon_tiles`.
        unsafe { self.neon_tiles(packed, row_scales, n, out, dot) }
    }

    /// The tiling both ARM64 kernels share: `ROWS` rows × `CB` blocks of 4 columns, integer sums
    /// per 32-input block, `dot(acc, x, w)` adding the 4 inputs of `x` (repeated in each 32-bit
    /// lane) times the 4 columns' weights in `w` (4 bytes per column) to the 4 i32 lanes.
    ///
    /// # Safety
    /// `packed` holds `n` rows of `groups` inputs and `out` `n` rows of `outputs` columns.
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn neon_tiles(
        &self,
        packed: &[u32],
        row_scales: &[f32],
        n: usize,
        out: &mut [f32],
        dot: impl Fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t,
    ) {
        /// Column blocks computed together: 16 accumulators, 4 weights, 1 input and
        /// `dot_neon`'s 3 temporaries fit the 32 vector registers (the float sums, touched once
        /// per 32 inputs, may wait on the stack).
        const CB: usize = 4;
        const LANES: usize = 4;
        let cblocks = self.outputs / LANES;
        let cblock_len = self.groups * LANES * 4;
        let mut cb = 0;
        while cb < cblocks {
            let nb = (cblocks - cb).min(CB);
            let mut facc = [[vdupq_n_f32(0.0); CB]; ROWS];
            for ib in 0..self.blocks {
                let mut acc = [[vdupq_n_s32(0); CB]; ROWS];
                for g in ib * BLOCK_GROUPS..(ib + 1) * BLOCK_GROUPS {
                    let mut wv = [vdupq_n_s8(0); CB];
                    for (c, w) in wv.iter_mut().enumerate().take(nb) {
                        // SAFETY: column block `cb + c` holds `groups` 16-byte groups.
                        *w = unsafe { vld1q_s8(self.weights.as_ptr().add((cb + c) * cblock_len + g * LANES * 4)) };
                    }
                    for (r, row) in acc.iter_mut().enumerate().take(n) {
                        // The row's 4 inputs, repeated for each of the 4 columns.
                        let xv = vreinterpretq_s8_u32(vdupq_n_u32(packed[r * self.groups + g]));
                        for (a, w) in row.iter_mut().zip(&wv).take(nb) {
                            *a = dot(*a, xv, *w);
                        }
                    }
                }
                for r in 0..n {
                    let s = row_scales[r * self.blocks + ib];
                    for c in 0..nb {
                        facc[r][c] = vfmaq_n_f32(facc[r][c], vcvtq_f32_s32(acc[r][c]), s);
                    }
                }
            }
            for c in 0..nb {
                let col = (cb + c) * LANES;
                // SAFETY: 4 contiguous lanes within the per-column vectors.
                let (scale, bias) = unsafe {
                    (
                        vld1q_f32(self.scales.as_ptr().add(col)),
                        vld1q_f32(self.bias.as_ptr().add(col)),
                    )
                };
                for (r, row) in facc.iter().enumerate().take(n) {
                    let y = vfmaq_f32(bias, row[c], scale);
                    // SAFETY: row `r` of `out` has `outputs` columns; `col + 4 <= outputs`.
                    unsafe { vst1q_f32(out.as_mut_ptr().add(r * self.outputs + col), y) };
                }
            }
            cb += nb;
        }
    }
}

/// `acc[c] += Σⱼ x[4c + j]·w[4c + j]` with baseline NEON: columns 0–1 then 2–3, 4 inputs each,
/// as i16 products (|p| ≤ 127²), pairs of inputs (≤ 2·127² < 2¹⁵), then pairs of pairs into the
/// i32 lanes.
///
/// # Safety
/// The CPU has NEON (every ARM64 CPU; the intrinsics still ask their caller to say so).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn dot_neon(acc: int32x4_t, x: int8x16_t, w: int8x16_t) -> int32x4_t {
    // SAFETY: register-only NEON arithmetic; the caller runs with NEON.
    unsafe {
        let lo = vmull_s8(vget_low_s8(x), vget_low_s8(w));
        let hi = vmull_high_s8(x, w);
        vpadalq_s16(acc, vpaddq_s16(lo, hi))
    }
}

/// `acc[c] += Σⱼ x[4c + j]·w[4c + j]` in one `sdot` (i8 × i8 into i32: exact).
///
/// # Safety
/// The CPU has the dot product extension (`is_aarch64_feature_detected!("dotprod")`).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn sdot(mut acc: int32x4_t, x: int8x16_t, w: int8x16_t) -> int32x4_t {
    // SAFETY: register-only (no memory, stack or flags); the caller checked the CPU feature.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {x:v}.16b, {w:v}.16b",
            acc = inout(vreg) acc,
            x = in(vreg) x,
            w = in(vreg) w,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Comma-separated kernel names the test CPU must offer (set by `scripts/arm64.sh`).
    const EXPECT_ENV: &str = "LLMSOUP_EXPECT_INT8_KERNELS";

    /// Every kernel this CPU has matches f32 within quantisation error, on shapes with padding
    /// inputs, partial row chunks and partial column blocks.
    #[test]
    fn every_available_kernel_matches_f32_within_quantisation_error() {
        let available = Kernel::available();
        eprintln!("int8 kernels here: {available:?}");
        #[cfg(target_arch = "x86_64")]
        assert!(available.contains(&Kernel::Avx2) || !std::arch::is_x86_feature_detected!("avx2"));
        #[cfg(target_arch = "aarch64")]
        assert!(available.contains(&Kernel::Neon));
        // CI names the kernels its (emulated) CPU must offer, so a runner that lost a feature
        // fails instead of quietly testing fewer kernels.
        if let Ok(expected) = std::env::var(EXPECT_ENV) {
            for name in expected.split(',').filter(|n| !n.is_empty()) {
                assert!(
                    available.iter().any(|k| k.name() == name),
                    "{EXPECT_ENV}: int8 kernel `{name}` is not available here ({available:?})"
                );
            }
        }
        for kernel in available {
            for (inputs, outputs, rows) in [(70, 48, 9), (384, 64, 3), (5, 16, 1), (1536, 32, 5)] {
                check(kernel, inputs, outputs, rows);
            }
        }
    }

    fn check(kernel: Kernel, inputs: usize, outputs: usize, rows: usize) {
        // Deterministic, varied values (no RNG dependency), with the extremes ±max present.
        let w: Vec<f32> = (0..inputs * outputs)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let b: Vec<f32> = (0..outputs).map(|i| i as f32 / 10.0 - 2.0).collect();
        let x: Vec<f32> = (0..rows * inputs)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
            .collect();
        let q = QuantLinear::new(&w, &b, inputs, outputs, kernel);
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
                    "{kernel:?} {inputs}×{outputs} [{r},{o}] {} vs {want}",
                    got[r * outputs + o]
                );
            }
        }
    }

    /// The AVX2 kernel is exact where `vpmaddubsw` would saturate a shifted input: every input
    /// and weight at ±127, the worst case for the i16 pair sums.
    #[test]
    fn extreme_values_do_not_saturate() {
        for kernel in Kernel::available() {
            let (inputs, outputs) = (64, 16);
            let w: Vec<f32> = (0..inputs * outputs)
                .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
                .collect();
            let b = vec![0f32; outputs];
            let x: Vec<f32> = (0..inputs).map(|i| if i % 2 == 0 { -1.0 } else { 1.0 }).collect();
            let q = QuantLinear::new(&w, &b, inputs, outputs, kernel);
            let mut got = vec![0f32; outputs];
            q.forward(&x, &mut got);
            for o in 0..outputs {
                let want: f32 = (0..inputs).map(|i| x[i] * w[o * inputs + i]).sum();
                assert!((got[o] - want).abs() < 1e-3, "{kernel:?} [{o}] {} vs {want}", got[o]);
            }
            let x = vec![1f32; inputs];
            let w = vec![1f32; inputs * outputs];
            let q = QuantLinear::new(&w, &b, inputs, outputs, kernel);
            q.forward(&x, &mut got);
            assert!(
                got.iter().all(|&v| (v - inputs as f32).abs() < 1e-3),
                "{kernel:?}: {got:?}"
            );
        }
    }
}
