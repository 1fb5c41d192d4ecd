//! Tests on the real all-MiniLM-L6-v2 (`make models`), never random weights.

use std::path::PathBuf;

use super::*;

/// The model directory; tests that need it fail in CI when it is missing, skip elsewhere.
pub(crate) fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LLMSOUP_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../.cache/models/all-MiniLM-L6-v2"
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

pub(crate) fn settings(dir: &std::path::Path) -> EmbeddingConfig {
    EmbeddingConfig {
        model: dir.display().to_string(),
        ..EmbeddingConfig::default()
    }
}

#[test]
fn encoder_embeds_normalised_and_batching_matches_single() {
    let Some(dir) = model_dir() else { return };
    let enc = SentenceEncoder::load(&dir, 256, candle_core::Device::Cpu).unwrap();
    assert_eq!(enc.dim, 384);
    let texts = [
        "How do I get a refund?",
        "a much longer sentence about the weather in Paris in the spring",
        "hi",
    ];
    let batch = enc.embed(&texts).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let single = &enc.embed(&[t]).unwrap()[0];
        let norm: f32 = single.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        // Padding inside a batch must not change a row.
        assert!(cosine(single, &batch[i]) > 0.9999, "row {i} differs when batched");
    }
}

#[test]
fn similar_texts_are_closer_than_unrelated_ones() {
    let Some(dir) = model_dir() else { return };
    let enc = SentenceEncoder::load(&dir, 256, candle_core::Device::Cpu).unwrap();
    let v = enc
        .embed(&[
            "I want my money back for this order",
            "Can I get a refund on my purchase?",
            "Explain quantum tunnelling",
        ])
        .unwrap();
    let (para, unrelated) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    assert!(
        para > 0.5 && unrelated < 0.2,
        "paraphrase {para}, unrelated {unrelated}"
    );
}

#[test]
fn long_texts_are_windowed_head_and_tail() {
    let Some(dir) = model_dir() else { return };
    let enc = SentenceEncoder::load(&dir, 32, candle_core::Device::Cpu).unwrap();
    let text = format!("refund request {} final question about shipping", "filler ".repeat(500));
    let ids = enc.ids(&text).unwrap();
    assert_eq!(ids.len(), 32);
    let tail = enc.ids("final question about shipping").unwrap();
    // The last tokens of the text survive the window.
    assert_eq!(&ids[ids.len() - tail.len() + 1..], &tail[1..]);
    assert_eq!(enc.embed(&[&text]).unwrap()[0].len(), 384);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedder_is_lazy_cached_and_batches_concurrent_requests() {
    let Some(dir) = model_dir() else { return };
    let e = Arc::new(Embedder::new(settings(&dir)));
    assert!(e.worker.get().is_none(), "nothing loads before first use");
    let texts: Vec<String> = (0..12).map(|i| format!("question number {i} about billing")).collect();
    let handles: Vec<_> = texts
        .iter()
        .map(|t| {
            let (e, t) = (e.clone(), t.clone());
            tokio::spawn(async move { e.embed(&t).await })
        })
        .collect();
    let mut concurrent = Vec::new();
    for h in handles {
        concurrent.push(h.await.unwrap().unwrap());
    }
    let all = e.embed_all(&texts).await.unwrap();
    for (a, b) in concurrent.iter().zip(&all) {
        assert!(cosine(a, b) > 0.9999);
    }
    // Cached: the same Arc comes back.
    let again = e.embed(&texts[0]).await.unwrap();
    assert!(Arc::ptr_eq(&again, &concurrent[0]));
}

#[tokio::test]
async fn missing_model_is_an_error_not_a_panic() {
    let e = Embedder::new(EmbeddingConfig {
        model: "/nonexistent/model-dir".into(),
        ..EmbeddingConfig::default()
    });
    let err = e.embed("hello").await.unwrap_err();
    assert!(matches!(err, ModelError::Load(_)), "{err}");
}

/// The serving encoder (packed batches, fused/transposed weights, in-place kernels) must give
/// the same embeddings as Candle's reference `BertModel` with padding and an attention mask.
#[test]
fn encoder_matches_candle_reference_bert() {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::{BertModel, Config};

    let Some(dir) = model_dir() else { return };
    let enc = SentenceEncoder::load(&dir, 256, Device::Cpu).unwrap();
    let config: Config = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    // SAFETY: read-only mapping of a test fixture nobody writes.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &Device::Cpu) }
        .unwrap();
    let reference = BertModel::load(vb, &config).unwrap();
    let texts = [
        "hi",
        "Prove that the square root of two is irrational, step by step.",
        "Quel est le meilleur itinéraire pour visiter Lyon en deux jours ?",
        &"a long rambling paragraph about databases, indexes and query planners ".repeat(30),
    ];
    let ours = enc.embed(&texts).unwrap();
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| enc.ids(t).unwrap()).collect();
    let width = ids.iter().map(Vec::len).max().unwrap();
    for (i, row) in ids.iter().enumerate() {
        let mut padded = row.clone();
        padded.resize(width, 0);
        let mask: Vec<u32> = (0..width).map(|j| u32::from(j < row.len())).collect();
        let input = Tensor::new(padded.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = Tensor::new(mask.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let hidden = reference
            .forward(&input, &input.zeros_like().unwrap(), Some(&mask))
            .unwrap()
            .squeeze(0)
            .unwrap()
            .narrow(0, 0, row.len())
            .unwrap();
        let mean: Vec<f32> = hidden.mean(0).unwrap().to_vec1().unwrap();
        let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
        let want: Vec<f32> = mean.iter().map(|v| v / norm).collect();
        let cos = cosine(&ours[i], &want);
        assert!(cos > 0.99999, "text {i}: cosine {cos} against the reference BERT");
    }
}
