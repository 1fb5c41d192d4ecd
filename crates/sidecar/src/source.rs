//! Where the running configuration comes from: the embedded demo config or a file (re-read on
//! SIGHUP by the server).

use std::path::PathBuf;

use anyhow::Context as _;
use llmsoup_config as config;

/// Where the running config came from, for reloads.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// The built-in demo config.
    Embedded,
    /// A file, re-read on SIGHUP.
    File(PathBuf),
}

impl ConfigSource {
    /// Loads and validates the config.
    pub fn load(&self) -> anyhow::Result<config::Config> {
        match self {
            ConfigSource::Embedded => config::load_str(config::DEFAULT_CONFIG).context("embedded default config"),
            ConfigSource::File(p) => {
                let loaded = config::load_file_detailed(p).with_context(|| format!("config file {}", p.display()))?;
                if loaded.shape.is_vsr() {
                    tracing::info!(file = %p.display(), shape = %loaded.shape, "converted a vLLM Semantic Router config");
                }
                for w in &loaded.warnings {
                    tracing::warn!(file = %p.display(), "config: {w}");
                }
                Ok(loaded.config)
            }
        }
    }
}
