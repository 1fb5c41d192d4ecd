//! Helpers for tests here and in the crates above: the real all-MiniLM-L6-v2 (`make models`),
//! never random weights, and a small classifier checkpoint built from it.

use std::path::PathBuf;

use llmsoup_config::EmbeddingConfig;

use crate::{SentenceEncoder, candle_core};

/// The model directory; tests that need it fail in CI when it is missing, skip elsewhere.
pub fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LLMSOUP_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../.cache/models/all-MiniLM-L6-v2"
            ))
        });
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing: run `make models`",
        dir.display()
    );
    eprintln!("skipping: {} missing (run `make models`)", dir.display());
    None
}

/// Embedding settings that load the model in `dir`.
pub fn settings(dir: &std::path::Path) -> EmbeddingConfig {
    EmbeddingConfig {
        model: dir.display().to_string(),
        ..EmbeddingConfig::default()
    }
}

/// Writes a real `BertForSequenceClassification` checkpoint built from MiniLM: the encoder's
/// weights under `bert.`, an identity pooler, and a nearest-centroid classifier whose rows are
/// the pooled `[CLS]` states of a few labelled example prompts. Deterministic, no random weights.
pub fn write_classifier_checkpoint(minilm: &std::path::Path, out: &std::path::Path) {
    use candle_core::{Device, Tensor};
    let examples: [(&str, &[&str]); 3] = [
        (
            "Math",
            &[
                "Solve the equation 3x + 7 = 22 for x.",
                "What is the derivative of x squared times sine of x?",
                "Prove that there are infinitely many prime numbers.",
            ],
        ),
        (
            "Law",
            &[
                "Is a verbal contract legally binding in court?",
                "What are the elements of negligence in tort law?",
                "Can my landlord evict me without notice under the lease?",
            ],
        ),
        (
            "Health",
            &[
                "What are the symptoms of type 2 diabetes?",
                "How much ibuprofen can an adult take safely for a fever?",
                "What causes high blood pressure and how is it treated?",
            ],
        ),
    ];
    std::fs::create_dir_all(out).unwrap();
    let enc = SentenceEncoder::load(minilm, 128, Device::Cpu).unwrap();
    let mut rows = Vec::new();
    for (_, texts) in &examples {
        let (hidden, lens) = enc.hidden(texts).unwrap();
        let mut centroid = vec![0f32; enc.dim];
        let mut start = 0;
        for len in lens {
            for (c, v) in centroid.iter_mut().zip(&hidden[start * enc.dim..(start + 1) * enc.dim]) {
                *c += v.tanh();
            }
            start += len;
        }
        let norm = centroid.iter().map(|v| v * v).sum::<f32>().sqrt();
        rows.extend(centroid.iter().map(|v| 20.0 * v / norm));
    }
    let dev = Device::Cpu;
    let mut tensors: std::collections::HashMap<String, Tensor> =
        candle_core::safetensors::load(minilm.join("model.safetensors"), &dev)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (format!("bert.{k}"), v))
            .collect();
    tensors.insert(
        "bert.pooler.dense.weight".into(),
        Tensor::eye(enc.dim, candle_core::DType::F32, &dev).unwrap(),
    );
    tensors.insert(
        "bert.pooler.dense.bias".into(),
        Tensor::zeros(enc.dim, candle_core::DType::F32, &dev).unwrap(),
    );
    tensors.insert(
        "classifier.weight".into(),
        Tensor::from_vec(rows, (examples.len(), enc.dim), &dev).unwrap(),
    );
    tensors.insert(
        "classifier.bias".into(),
        Tensor::zeros(examples.len(), candle_core::DType::F32, &dev).unwrap(),
    );
    candle_core::safetensors::save(&tensors, out.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(minilm.join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    config["id2label"] = examples
        .iter()
        .enumerate()
        .map(|(i, (l, _))| (i.to_string(), serde_json::json!(l)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    std::fs::copy(minilm.join("tokenizer.json"), out.join("tokenizer.json")).unwrap();
}
