//! Where the running configuration comes from: the embedded demo config or a file (re-read on
//! SIGHUP by the server, and when it changes with `server.watch_config`).

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

/// What identifies one version of a config file: modification time, size and inode (of the
/// file a symlink points to, so a swapped Kubernetes ConfigMap link counts). `None` for the
/// embedded config, or a file that cannot be read now.
pub type Stamp = Option<(std::time::SystemTime, u64, u64)>;

impl ConfigSource {
    /// The file's current [`Stamp`] (a blocking `stat`).
    pub fn stamp(&self) -> Stamp {
        use std::os::unix::fs::MetadataExt as _;
        match self {
            ConfigSource::Embedded => None,
            ConfigSource::File(p) => {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len(), m.ino()))
            }
        }
    }

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
