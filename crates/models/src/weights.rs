//! Model weights read from a `.safetensors` file one tensor at a time, with positioned reads.
//!
//! Candle's memory-mapped loader copies every tensor out of the mapping, and the mapped pages it
//! touched stay resident until the whole model is built: loading MiniLM briefly held the 90 MB
//! file twice, which set the sidecar's peak RSS. Reading each tensor straight into its own buffer
//! keeps only what the encoder still holds (the file's pages live in the kernel's page cache,
//! which is not the process's memory), and backends that re-lay weights out (AMX bf16, int8)
//! free each f32 tensor as soon as it is converted.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use serde::Deserialize;

use super::ModelError;

/// The header must fit in memory comfortably; real ones are a few KB to a few MB.
const MAX_HEADER: u64 = 100 << 20;

/// One tensor's entry in the header.
#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

struct Entry {
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

/// A `.safetensors` file opened for tensor-by-tensor reads (a Candle `VarBuilder` backend).
pub struct FileWeights {
    file: File,
    tensors: HashMap<String, Entry>,
}

fn dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "U32" => DType::U32,
        "U8" => DType::U8,
        _ => return None,
    })
}

impl FileWeights {
    /// Opens `path` and validates its header: known dtypes, byte ranges that match the shapes
    /// and lie inside the file.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let bad = |what: String| ModelError::Load(format!("{}: {what}", path.display()));
        let file = File::open(path).map_err(|e| bad(e.to_string()))?;
        let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        let mut n = [0u8; 8];
        file.read_exact_at(&mut n, 0)
            .map_err(|e| bad(format!("reading the header size: {e}")))?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER || 8 + n > len {
            return Err(bad(format!("header size {n} does not fit the file ({len} bytes)")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact_at(&mut header, 8)
            .map_err(|e| bad(format!("reading the header: {e}")))?;
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
        let data = 8 + n;
        let mut tensors = HashMap::with_capacity(raw.len());
        for (name, value) in raw {
            if name == "__metadata__" {
                continue;
            }
            let e: RawEntry = serde_json::from_value(value).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            let Some(dt) = dtype(&e.dtype) else {
                // Kept out of the index: asking for it reports it missing, loading others works.
                continue;
            };
            let [s, t] = e.data_offsets;
            let bytes = e.shape.iter().product::<usize>() as u64 * dt.size_in_bytes() as u64;
            if t < s || t - s != bytes || data + t > len {
                return Err(bad(format!("tensor `{name}` has an inconsistent byte range")));
            }
            tensors.insert(
                name,
                Entry {
                    dtype: dt,
                    shape: e.shape,
                    start: data + s,
                    end: data + t,
                },
            );
        }
        Ok(FileWeights { file, tensors })
    }

    fn read(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        let len = (e.end - e.start) as usize;
        let shape = Shape::from(e.shape.clone());
        #[cfg(target_endian = "little")]
        if e.dtype == DType::F32 {
            // Read straight into the f32 buffer the tensor will own: no byte copy to convert.
            let mut v = vec![0f32; len / 4];
            // SAFETY: an f32 buffer viewed as its `len` bytes; every bit pattern is a valid f32,
            // and the file stores little-endian f32 like this target.
            let bytes = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), len) };
            self.file.read_exact_at(bytes, e.start)?;
            return Tensor::from_vec(v, shape, dev);
        }
        let mut bytes = vec![0u8; len];
        self.file.read_exact_at(&mut bytes, e.start)?;
        Tensor::from_raw_buffer(&bytes, e.dtype, shape.dims(), dev)
    }
}

impl candle_nn::var_builder::SimpleBackend for FileWeights {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.read(name, dev)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            }
            .bt());
        }
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same tensors as Candle's own loader, and malformed files are load errors, not panics.
    #[test]
    fn reads_what_candle_reads_and_rejects_bad_files() {
        let dir = std::env::temp_dir().join(format!("llmsoup-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let a = Tensor::arange(0f32, 12., &Device::Cpu)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let b = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
        candle_core::safetensors::save(
            &HashMap::from([("a".to_string(), a.clone()), ("b".to_string(), b)]),
            &path,
        )
        .unwrap();
        let w = FileWeights::open(&path).unwrap();
        let vb = candle_nn::VarBuilder::from_backend(Box::new(w), DType::F32, Device::Cpu);
        let got = vb.get((3, 4), "a").unwrap();
        assert_eq!(got.to_vec2::<f32>().unwrap(), a.to_vec2::<f32>().unwrap());
        assert!(vb.get((4, 3), "a").is_err(), "shape is checked");
        assert!(vb.contains_tensor("b") && !vb.contains_tensor("c"));
        assert!(vb.get(3, "c").is_err());

        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 4);
        std::fs::write(&path, &bytes).unwrap();
        assert!(FileWeights::open(&path).is_err(), "truncated data");
        std::fs::write(&path, [0xffu8; 16]).unwrap();
        assert!(FileWeights::open(&path).is_err(), "absurd header size");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
