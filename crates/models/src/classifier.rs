//! BERT sequence-classification checkpoints (Hugging Face `BertForSequenceClassification`): the
//! encoder, the `[CLS]` pooler (dense + tanh) and a linear classifier, with labels from
//! `config.json`'s `id2label`. Used by the domain signal when `classifier.checkpoint` is set.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::{BatchModel, ModelError, SentenceEncoder, Worker};
use llmsoup_config::{EmbeddingConfig, Precision};

/// Labels as `config.json` stores them: `{"0": "math", "1": "law", ...}`.
#[derive(Deserialize)]
struct Labels {
    id2label: BTreeMap<String, String>,
}

/// A loaded checkpoint.
pub struct SequenceClassifier {
    encoder: SentenceEncoder,
    /// Pooler `[hidden, hidden]` in `[in, out]` layout, and its bias.
    pooler: (Tensor, Tensor),
    /// Classifier `[hidden, labels]` in `[in, out]` layout, and its bias.
    classifier: (Tensor, Tensor),
    labels: Vec<Arc<str>>,
}

fn err(what: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Load(format!("{what}: {e}"))
}

impl SequenceClassifier {
    /// Loads `config.json` (with `id2label`), `tokenizer.json` and `model.safetensors` from `dir`;
    /// the encoder's dense layers run in `precision` (see `embedding.precision`).
    pub fn load(
        dir: &Path,
        max_tokens: usize,
        device: candle_core::Device,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let encoder = SentenceEncoder::load_with(dir, max_tokens, device.clone(), precision)?;
        let config = std::fs::read(dir.join("config.json")).map_err(|e| err("reading config.json", e))?;
        let labels: Labels = serde_json::from_slice(&config).map_err(|e| err("config.json id2label", e))?;
        let mut indexed: Vec<(usize, String)> = labels
            .id2label
            .into_iter()
            .map(|(i, l)| {
                i.parse()
                    .map(|i| (i, l))
                    .map_err(|e| err("config.json id2label key", e))
            })
            .collect::<Result<_, _>>()?;
        indexed.sort();
        if indexed.is_empty() || indexed.iter().enumerate().any(|(want, (i, _))| *i != want) {
            return Err(ModelError::Load("config.json id2label must number labels 0..n".into()));
        }
        let labels: Vec<Arc<str>> = indexed.into_iter().map(|(_, l)| l.to_lowercase().into()).collect();
        // Only the two head layers are read here (the encoder read its own part).
        let weights = super::weights::FileWeights::open(&dir.join("model.safetensors"))?;
        let vb = candle_nn::VarBuilder::from_backend(Box::new(weights), DType::F32, device.clone());
        let dense = |name: &str, outputs: usize| -> Result<(Tensor, Tensor), ModelError> {
            let vb = vb.pp(name);
            let t = (|| {
                let w = vb.get((outputs, encoder.dim), "weight")?;
                Ok::<_, candle_core::Error>((w.t()?.contiguous()?, vb.get(outputs, "bias")?))
            })()
            .map_err(|e| err(name, e))?;
            Ok(t)
        };
        let pooler = dense("bert.pooler.dense", encoder.dim).or_else(|_| dense("pooler.dense", encoder.dim))?;
        let classifier = dense("classifier", labels.len())?;
        Ok(SequenceClassifier {
            encoder,
            pooler,
            classifier,
            labels,
        })
    }

    /// The labels, in output order (lower-cased).
    pub fn labels(&self) -> &[Arc<str>] {
        &self.labels
    }

    /// Label probabilities for each text, in one forward pass.
    pub fn probabilities(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let (hidden, lens) = self.encoder.hidden(texts)?;
        let dim = self.encoder.dim;
        let mut cls = Vec::with_capacity(lens.len() * dim);
        let mut start = 0;
        for len in &lens {
            cls.extend_from_slice(&hidden[start * dim..(start + 1) * dim]);
            start += len;
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let x = Tensor::from_vec(cls, (lens.len(), dim), self.encoder.device())?;
            let pooled = x.matmul(&self.pooler.0)?.broadcast_add(&self.pooler.1)?.tanh()?;
            let logits = pooled.matmul(&self.classifier.0)?.broadcast_add(&self.classifier.1)?;
            candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()
        };
        run().map_err(|e| ModelError::Inference(format!("classifier head: {e}")))
    }
}

impl BatchModel for SequenceClassifier {
    fn run(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.probabilities(texts)
    }
}

/// A running checkpoint and its labels.
type Loaded = (Worker, Vec<Arc<str>>);

/// A checkpoint loaded lazily on first use and run on its own inference threads.
pub struct TextClassifier {
    dir: String,
    settings: EmbeddingConfig,
    worker: OnceCell<Result<Loaded, ModelError>>,
}

impl TextClassifier {
    /// A classifier for the checkpoint in `dir` (nothing is loaded yet); batching, queue and
    /// window come from the embedding settings.
    pub fn new(dir: String, settings: EmbeddingConfig) -> Self {
        TextClassifier {
            dir,
            settings,
            worker: OnceCell::new(),
        }
    }

    async fn worker(&self) -> Result<&Loaded, ModelError> {
        let (dir, settings) = (self.dir.clone(), self.settings.clone());
        let result = self
            .worker
            .get_or_init(|| async move {
                let start = move || {
                    let path = super::resolve(&dir)?;
                    let model = super::load_logged("classifier checkpoint", &path, || {
                        SequenceClassifier::load(&path, settings.max_tokens, super::device(), settings.precision)
                    })?;
                    let labels = model.labels().to_vec();
                    let worker = Worker::spawn(Arc::new(model), labels.len(), &settings)?;
                    Ok((worker, labels))
                };
                match tokio::task::spawn_blocking(start).await {
                    Ok(r) => r,
                    Err(e) => Err(ModelError::Load(format!("loader panicked: {e}"))),
                }
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "classifier checkpoint unavailable; domain rules that need it report no match");
        }
        result.as_ref().map_err(Clone::clone)
    }

    /// The best label of `text` and its probability, with every label's probability.
    pub async fn classify(&self, text: &str) -> Result<(Arc<str>, f32), ModelError> {
        let (worker, labels) = self.worker().await?;
        let probs = worker.run(vec![text.to_string()]).await?.pop().unwrap_or_default();
        probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, p)| (labels[i].clone(), *p))
            .ok_or_else(|| ModelError::Inference("classifier returned no probabilities".into()))
    }
}
