//! The embedding model and the built-in classifier: `embedding:`, `classifier:`.

use super::*;

/// Settings of the built-in domain classifier (14 MMLU-Pro categories).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Probability the best category needs; below it the label is `other`.
    #[serde(default = "default_classifier_threshold")]
    pub threshold: f32,
    /// A BERT sequence-classification checkpoint (Hugging Face `BertForSequenceClassification`:
    /// a directory with `config.json` naming its labels in `id2label`, `tokenizer.json` and
    /// `model.safetensors`, or a hub id) used instead of the built-in head; domain rules match
    /// its labels by name or through `mmlu_categories`.
    #[serde(default)]
    pub checkpoint: Option<String>,
}

fn default_classifier_threshold() -> f32 {
    0.3
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            threshold: default_classifier_threshold(),
            checkpoint: None,
        }
    }
}

/// The sentence encoder behind embedding signals (loaded lazily, on first use).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// A directory holding `config.json`, `tokenizer.json` and `model.safetensors` (default:
    /// `$LLMSOUP_MODEL_DIR`, else `.cache/models/all-MiniLM-L6-v2` where `make models` puts it), or
    /// a Hugging Face id such as
    /// `sentence-transformers/all-MiniLM-L6-v2` (downloaded through hf-hub when online).
    #[serde(default = "default_embedding_model")]
    pub model: String,
    /// Longest input in tokens; longer texts keep their head and tail (default 128: a prompt's
    /// first and last sentences carry its intent, and the cost grows with this window).
    #[serde(default = "default_embedding_max_tokens")]
    pub max_tokens: usize,
    /// Most texts per forward pass when concurrent requests are batched.
    #[serde(default = "default_embedding_batch")]
    pub batch_size: usize,
    /// Inference threads taking forward passes off the queue (each pass is spread over
    /// `threads` cores; a second worker helps only on big machines).
    #[serde(default = "one")]
    pub workers: usize,
    /// Cores one forward pass is spread over (a pool shared by the workers, apart from the
    /// async runtime's threads). Default: the cores this process may use — the cgroup CPU quota
    /// in a container, so a 2-core pod gets 2 —, at most 16.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Bounded inference queue; when full, model signals report no match instead of waiting.
    #[serde(default = "default_embedding_queue")]
    pub queue: usize,
    /// Query embeddings cached (LRU).
    #[serde(default = "default_embedding_cache")]
    pub cache_entries: u64,
    /// How many matching embedding rules are reported (best first), as vLLM Semantic Router.
    #[serde(default = "one")]
    pub top_k: usize,
    /// Numeric precision of the encoder's dense layers: `auto` (default: the fastest path of
    /// this CPU — bf16 on AMX, else int8, else f32), `f32` (exact), `bf16` (AMX tiles, f32
    /// accumulation; within cosine 0.9999 of f32), `int8` (AVX-512 VNNI, AVX-VNNI, AVX2 or NEON;
    /// within cosine 0.995 of f32). Unsupported → f32 + warning.
    #[serde(default)]
    pub precision: Precision,
    /// Long prompts: signals that must see all of a prompt (`jailbreak`) also embed windows of
    /// about this many tokens of it, besides the head + tail window every signal shares.
    #[serde(default = "default_chunk_tokens")]
    pub chunk_tokens: usize,
    /// Most windows embedded per long prompt (bounds the cost; beyond it, windows with an
    /// injection cue first, then spread evenly). 0: head + tail only.
    #[serde(default = "default_max_chunks")]
    pub max_chunks: usize,
}

/// Numeric precision of the encoder's dense layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bf16 where the CPU has AMX tiles, else int8 where it has an int8 kernel, else f32.
    #[default]
    Auto,
    /// 32-bit floats.
    F32,
    /// bf16 weights and inputs on AMX tiles, f32 accumulation.
    Bf16,
    /// 8-bit integer weights and activations (AVX-512 VNNI, AVX-VNNI, AVX2 or NEON).
    Int8,
}

/// `$LLMSOUP_MODEL_DIR` when set (the container image sets it), else where `make models` puts it.
fn default_embedding_model() -> String {
    std::env::var("LLMSOUP_MODEL_DIR").unwrap_or_else(|_| ".cache/models/all-MiniLM-L6-v2".into())
}
fn default_embedding_max_tokens() -> usize {
    128
}
fn default_embedding_batch() -> usize {
    16
}
fn default_embedding_queue() -> usize {
    256
}
fn default_embedding_cache() -> u64 {
    4096
}
fn default_chunk_tokens() -> usize {
    64
}
fn default_max_chunks() -> usize {
    16
}
fn one() -> usize {
    1
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        EmbeddingConfig {
            model: default_embedding_model(),
            max_tokens: default_embedding_max_tokens(),
            batch_size: default_embedding_batch(),
            workers: 1,
            threads: None,
            queue: default_embedding_queue(),
            cache_entries: default_embedding_cache(),
            top_k: 1,
            precision: Precision::Auto,
            chunk_tokens: default_chunk_tokens(),
            max_chunks: default_max_chunks(),
        }
    }
}
