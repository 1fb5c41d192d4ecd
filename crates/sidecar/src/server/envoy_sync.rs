//! Keeps Envoy in step with the sidecar's config. With an xDS directory (`serve --xds-dir` or
//! `gateway.xds_dir`), every config the sidecar loads — at start and on each reload — is rendered
//! by the same renderer as `llmsoup envoy-config --xds-dir` ([`llmsoup_envoy::xds`]) and its
//! files rewritten atomically, so Envoy applies the new routes, clusters, credentials and
//! token/model filter configs without a restart and without draining connections.
//!
//! What Envoy cannot get this way is tracked as *stale*: a change to the bootstrap (only an Envoy
//! restart applies it), every change to models, providers, routes or tokens when there is no
//! directory (the bootstrap holds them inline), and a write that failed. Each is logged loudly
//! when the reload happens and reported by `/ready` until a later config makes it true again.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use llmsoup_config::{AttachMode, Config};
use llmsoup_envoy::RenderOptions;
use llmsoup_envoy::xds::{self, Bundle};

/// How long dropped clusters stay in Envoy's clusters file after the routes that sent to them
/// are gone: Envoy reads the files in the order it sees them, and a route it has not yet
/// replaced must still find its cluster. Well beyond the milliseconds Envoy takes.
pub const PRUNE_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Where the rendered files go.
struct Target {
    /// The directory as this process reaches it.
    dir: PathBuf,
    /// The directory as the bootstrap names it (what Envoy reaches; the same path on a shared
    /// volume).
    rendered: String,
}

/// What Envoy has, and what it lacks.
#[derive(Default)]
struct State {
    /// What the xDS files hold (with a directory).
    applied: Option<Bundle>,
    /// What Envoy does not have of the running config, one line per change.
    stale: Vec<String>,
}

/// The sidecar's view of Envoy's configuration.
pub struct EnvoySync {
    target: Option<Target>,
    opts: RenderOptions,
    /// The config the sidecar started with, rendered: what Envoy's resources were made from when
    /// there is no directory.
    started: Option<Bundle>,
    /// With a directory: the bootstrap Envoy runs, as `envoy-config` recorded it (else as the
    /// config at start renders it).
    running: Option<String>,
    state: Mutex<State>,
}

impl EnvoySync {
    /// No view of Envoy: nothing is written and nothing is ever stale (tests, tools).
    pub fn detached() -> Self {
        EnvoySync {
            target: None,
            opts: RenderOptions::default(),
            started: None,
            running: None,
            state: Mutex::new(State::default()),
        }
    }

    /// The view for a sidecar starting with `config`: with a directory (`dir`, else
    /// `gateway.xds_dir`), its files are written now, with the render options `envoy-config`
    /// recorded there (else the config's own `gateway.mode` and `gateway.wasm_path`), and a
    /// bootstrap that differs from the one `envoy-config` recorded is reported stale at once.
    /// Blocking file I/O. An error (the directory cannot be written, the config cannot be
    /// rendered) is fatal at start: Envoy would never see this config.
    pub fn start(dir: Option<String>, config: &Config) -> anyhow::Result<Self> {
        let Some(rendered) = dir.or_else(|| config.gateway.xds_dir.clone()) else {
            let opts = RenderOptions::default();
            let started = render(config, &opts, None).ok();
            return Ok(EnvoySync {
                target: None,
                opts,
                started,
                running: None,
                state: Mutex::new(State::default()),
            });
        };
        let path = PathBuf::from(&rendered);
        let manifest = xds::read_manifest(&path)?.unwrap_or_default();
        let bundle = render(config, &manifest.opts, Some(&rendered))
            .with_context(|| format!("rendering the Envoy resources for {rendered}"))?;
        bundle
            .write(&path, None)
            .with_context(|| format!("writing the Envoy resources into {rendered}"))?;
        tracing::info!(dir = %rendered, "Envoy resources written; reloads will update them");
        let running = match manifest.bootstrap {
            Some(b) => b,
            None => bundle.bootstrap_yaml()?,
        };
        let sync = EnvoySync {
            target: Some(Target { dir: path, rendered }),
            opts: manifest.opts,
            started: Some(bundle.clone()),
            running: Some(running),
            state: Mutex::new(State::default()),
        };
        let stale = sync.restart_needed(&bundle);
        log_stale(&stale);
        *sync.state.lock().unwrap_or_else(|e| e.into_inner()) = State {
            applied: Some(bundle),
            stale,
        };
        Ok(sync)
    }

    /// What of `new` only a restart of Envoy with a new bootstrap applies.
    fn restart_needed(&self, new: &Bundle) -> Vec<String> {
        let changes = match (&self.running, &self.started) {
            (Some(running), _) => xds::restart_needed(running, new).unwrap_or_else(|e| vec![format!("{e:#}")]),
            (None, Some(started)) => xds::changes(started, new).bootstrap,
            (None, None) => Vec::new(),
        };
        changes
            .into_iter()
            .map(|c| format!("needs an Envoy restart with a new bootstrap: {c}"))
            .collect()
    }

    /// The directory Envoy's files are written to, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.target.as_ref().map(|t| t.dir.as_path())
    }

    /// Brings Envoy to `config` as far as it can: writes the files (keeping dropped clusters for
    /// now), and records and logs what Envoy still lacks. Returns whether [`EnvoySync::prune`]
    /// should run after [`PRUNE_DELAY`]. Blocking file I/O.
    pub fn apply(&self, config: &Config) -> bool {
        if self.target.is_none() && self.started.is_none() {
            // No baseline: detached, or the config at start did not render (this sidecar's Envoy
            // is not rendered by llmsoup, e.g. a DNS `gateway.sidecar_address` behind a gateway
            // controller), so there is nothing to compare with.
            return false;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut stale = Vec::new();
        let mut prune = false;
        match render(config, &self.opts, self.target.as_ref().map(|t| t.rendered.as_str())) {
            Err(e) => stale.push(format!("the config cannot be rendered for Envoy: {e:#}")),
            Ok(new) => {
                stale.extend(self.restart_needed(&new));
                match &self.target {
                    None => {
                        let since_start = self.started.as_ref().map(|s| xds::changes(s, &new)).unwrap_or_default();
                        stale.extend(since_start.resources.iter().map(|c| {
                            format!("not in Envoy (no xDS directory: render and restart, or use --xds-dir): {c}")
                        }));
                    }
                    Some(t) => match new.write(&t.dir, state.applied.as_ref()) {
                        Ok(wrote) => {
                            if wrote {
                                let changes = state
                                    .applied
                                    .as_ref()
                                    .map(|old| xds::changes(old, &new).resources)
                                    .unwrap_or_default();
                                tracing::info!(
                                    dir = %t.rendered,
                                    changes = %changes.join("; "),
                                    "Envoy resources updated"
                                );
                            }
                            prune = state.applied.as_ref().is_some_and(|old| new.drops_clusters_of(old));
                            state.applied = Some(new);
                        }
                        Err(e) => {
                            stale.push(format!("writing the Envoy resources into {} failed: {e:#}", t.rendered));
                            let missing = state
                                .applied
                                .as_ref()
                                .map(|old| xds::changes(old, &new).resources)
                                .unwrap_or_default();
                            stale.extend(missing.into_iter().map(|c| format!("not in Envoy: {c}")));
                        }
                    },
                }
            }
        }
        log_stale(&stale);
        state.stale = stale;
        prune
    }

    /// Rewrites the files without the clusters the last [`EnvoySync::apply`] dropped, and removes
    /// the credentials of providers that are gone. Blocking file I/O.
    pub fn prune(&self) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(t), Some(applied)) = (&self.target, &state.applied)
            && let Err(e) = applied.write(&t.dir, None)
        {
            tracing::warn!(error = format!("{e:#}"), dir = %t.rendered, "removing dropped Envoy clusters failed");
        }
    }

    /// What Envoy does not have of the running config (empty when it has it all).
    pub fn stale(&self) -> Vec<String> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stale.clone()
    }
}

fn log_stale(stale: &[String]) {
    for line in stale {
        tracing::warn!("ENVOY IS NOT RUNNING THE SIDECAR'S CONFIG: {line}");
    }
}

/// Renders `config` with `opts`. Without a directory (only compared, never written) a
/// placeholder stands for the directory, and for a wasm path nobody gave.
fn render(config: &Config, opts: &RenderOptions, dir: Option<&str>) -> anyhow::Result<Bundle> {
    let mut opts = opts.clone();
    if dir.is_none()
        && opts.mode.unwrap_or(config.gateway.mode) == AttachMode::Wasm
        && opts.wasm_path.is_none()
        && config.gateway.wasm_path.is_none()
    {
        opts.wasm_path = Some("llmsoup_filter.wasm".into());
    }
    xds::render(config, &opts, dir.unwrap_or("xds"))
}

#[cfg(test)]
mod tests {
    use llmsoup_config::load_str_with_env;

    use super::*;

    const BASE: &str = "
providers:
  - {name: a, base_url: 'http://127.0.0.1:8001/v1'}
models:
  - {name: m1, provider: a}
auth:
  tokens:
    - {name: t1, sha256: '1111111111111111111111111111111111111111111111111111111111111111'}
";

    fn config(text: &str) -> Config {
        load_str_with_env(text, &|_| None).unwrap()
    }

    fn with_newbie(text: &str) -> String {
        text.replace(
            "models:\n",
            "  - {name: b, base_url: 'http://127.0.0.1:8002/v1', credentials: {file: /run/b}}\nmodels:\n  - {name: newbie, provider: b}\n",
        )
        .replace(
            "tokens:\n",
            "tokens:\n    - {name: t2, sha256: '2222222222222222222222222222222222222222222222222222222222222222'}\n",
        )
    }

    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("llmsoup-envoy-sync-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn serve_writes_what_envoy_config_writes_and_follows_reloads() {
        let dir = tempdir("follow");
        let name = dir.to_str().unwrap().to_string();
        let sync = EnvoySync::start(Some(name.clone()), &config(BASE)).unwrap();
        assert!(sync.stale().is_empty());
        // The same renderer `envoy-config --xds-dir` runs.
        let expected = xds::render(&config(BASE), &RenderOptions::default(), &name).unwrap();
        let mut want = expected.files().unwrap();
        want.sort();
        assert_eq!(files(&dir), want);

        // A reload adding a provider, a model and a token reaches the files, nothing is stale.
        let added = config(&with_newbie(BASE));
        assert!(!sync.apply(&added), "nothing dropped, nothing to prune");
        assert!(sync.stale().is_empty(), "{:?}", sync.stale());
        let on_disk = files(&dir);
        assert!(on_disk.iter().any(|(n, _)| n == "secret-provider_b_credential.yaml"));
        let clusters = &on_disk.iter().find(|(n, _)| n == xds::CLUSTERS_FILE).unwrap().1;
        assert!(clusters.contains("provider_b") && !clusters.contains("/run/b"));
        let routes = &on_disk.iter().find(|(n, _)| n == xds::ROUTES_FILE).unwrap().1;
        assert!(routes.contains("model_newbie"));
        let auth = &on_disk
            .iter()
            .find(|(n, _)| n == "filter-llmsoup.client_auth.yaml")
            .unwrap()
            .1;
        assert!(auth.contains(&"2".repeat(64)));

        // Back again: the dropped cluster stays until the prune, its secret goes with it.
        assert!(sync.apply(&config(BASE)), "a dropped cluster is pruned later");
        let clusters = std::fs::read_to_string(dir.join(xds::CLUSTERS_FILE)).unwrap();
        assert!(clusters.contains("provider_b"), "kept until the routes are gone");
        assert!(
            !std::fs::read_to_string(dir.join(xds::ROUTES_FILE))
                .unwrap()
                .contains("model_newbie")
        );
        sync.prune();
        assert_eq!(files(&dir), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_envoy_cannot_get_is_stale() {
        // No directory: every model, provider or token change is named.
        let sync = EnvoySync::start(None, &config(BASE)).unwrap();
        sync.apply(&config(&with_newbie(BASE)));
        let stale = sync.stale().join("\n");
        assert!(stale.contains("route added: model_newbie"), "{stale}");
        assert!(stale.contains("cluster added: provider_b"), "{stale}");
        assert!(stale.contains("client tokens"), "{stale}");
        sync.apply(&config(BASE));
        assert!(sync.stale().is_empty(), "back to what Envoy runs: {:?}", sync.stale());

        // With a directory, a bootstrap change still needs a restart.
        let dir = tempdir("stale");
        let sync = EnvoySync::start(Some(dir.to_str().unwrap().into()), &config(BASE)).unwrap();
        sync.apply(&config(&format!("{BASE}gateway: {{listen: '127.0.0.1:9999'}}\n")));
        let stale = sync.stale().join("\n");
        assert!(
            stale.contains("needs an Envoy restart") && stale.contains("listener"),
            "{stale}"
        );

        // A directory that cannot be written: the reload's changes are named.
        let file = dir.join(xds::ROUTES_FILE);
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        sync.apply(&config(&with_newbie(BASE)));
        let stale = sync.stale().join("\n");
        assert!(
            stale.contains("failed") && stale.contains("route added: model_newbie"),
            "{stale}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_envoy_llmsoup_does_not_render_is_never_stale() {
        // A gateway controller's Envoy: the sidecar address is a service name, which the
        // renderer refuses; reloads report nothing about Envoy.
        let text = format!("{BASE}gateway: {{sidecar_address: 'llmsoup.llm.svc:50051'}}\n");
        let sync = EnvoySync::start(None, &config(&text)).unwrap();
        sync.apply(&config(&with_newbie(&text)));
        assert!(sync.stale().is_empty(), "{:?}", sync.stale());
    }

    #[test]
    fn the_manifest_gives_serve_the_render_options() {
        let dir = tempdir("manifest");
        let opts = RenderOptions {
            mode: Some(AttachMode::Wasm),
            wasm_path: Some("/opt/llmsoup_filter.wasm".into()),
        };
        xds::write_manifest(&dir, &opts, "# an older bootstrap\n").unwrap();
        let sync = EnvoySync::start(Some(dir.to_str().unwrap().into()), &config(BASE)).unwrap();
        // Envoy was started from another bootstrap than this config's: reported at once.
        assert!(
            sync.stale().iter().any(|l| l.contains("needs an Envoy restart")),
            "{:?}",
            sync.stale()
        );
        assert!(
            std::fs::read_to_string(dir.join("filter-envoy.filters.http.wasm.yaml"))
                .unwrap()
                .contains("/opt/llmsoup_filter.wasm")
        );
        assert!(!dir.join("filter-llmsoup.client_auth.yaml").exists());
        assert_eq!(sync.dir(), Some(dir.as_path()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
