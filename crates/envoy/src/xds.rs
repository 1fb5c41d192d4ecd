//! Reload that reaches Envoy: the bootstrap split into a static part, which Envoy starts with,
//! and xDS resources that Envoy reads from files in a directory and re-reads when one is replaced
//! (filesystem subscriptions: `path_config_source` with `watched_directory`; a file is replaced
//! by writing a temporary file beside it and renaming it over the old one, which is atomic, and
//! is the event Envoy watches for).
//!
//! What a reload may change lives in the files, each through the xDS API that applies it without
//! draining anything:
//! - routes (`routes.yaml`, RDS): a new route table applies to the next request on every open
//!   connection; requests in flight keep the table they started with;
//! - clusters (`clusters.yaml`, CDS): providers and fallback chains; unchanged clusters are
//!   skipped by Envoy (it compares their hashes), a removed one drains its connections;
//! - provider credentials (`secret-<name>.yaml`, one SDS resource per file, as Envoy's SDS wants),
//!   still an env var or file that Envoy reads, never the key itself;
//! - the HTTP filters whose configuration holds models or tokens (`filter-<name>.yaml`, ECDS):
//!   the client-auth Lua step (token hashes), the fail-open Lua step (model table), the wasm
//!   filter (its plugin config: tokens, models). A new filter configuration is used by the next
//!   filter chain instantiation, i.e. the next request; the listener is not touched, so no
//!   connection is drained.
//!
//! The bootstrap keeps the listener (address, filter chain order, the ext_proc, rate limit and
//! router filters, local replies), the sidecar cluster and the admin interface: a change there
//! (a `gateway.*` key, `server.grpc_token`, budgets turned on or off) needs an Envoy restart, which
//! [`changes`] names.
//!
//! `llmsoup envoy-config --xds-dir DIR` writes the bootstrap and the files (and a manifest of its
//! render options); `llmsoup serve` given the same directory rewrites the files after each reload
//! with the same renderer, so both always produce the same files for the same config.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use llmsoup_config::{AttachMode, Config};

use crate::{CLIENT_AUTH_FILTER, RenderOptions, SIDECAR_CLUSTER, bootstrap, to_yaml};

/// The manifest `envoy-config` leaves in the directory: the render options that are not part of
/// the llmsoup config (`--mode`, `--wasm`), so `serve` renders the same resources.
pub const MANIFEST: &str = "llmsoup-render.json";
/// The route table (RDS).
pub const ROUTES_FILE: &str = "routes.yaml";
/// Provider and fallback-chain clusters (CDS).
pub const CLUSTERS_FILE: &str = "clusters.yaml";
/// Name of the route configuration the listener asks RDS for.
const ROUTE_CONFIG: &str = "llmsoup";
/// Prefix of the per-secret files (SDS).
const SECRET_PREFIX: &str = "secret-";
/// Prefix of the per-filter files (ECDS).
const FILTER_PREFIX: &str = "filter-";

/// The fail-open Lua step (ext_proc mode, `failure_mode: open`).
const FAIL_OPEN_FILTER: &str = "envoy.filters.http.lua";
/// The llmsoup wasm filter (wasm mode).
const WASM_FILTER: &str = "envoy.filters.http.wasm";

/// HTTP filters whose configuration a reload changes (models, tokens), with what they hold, for
/// the messages of [`changes`]. They are discovered through ECDS.
const DYNAMIC_FILTERS: [(&str, &str); 3] = [
    (CLIENT_AUTH_FILTER, "client tokens"),
    (FAIL_OPEN_FILTER, "fail-open model table"),
    (WASM_FILTER, "wasm filter config: tokens, models"),
];

const ROUTE_CONFIGURATION_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const EXTENSION_CONFIG_TYPE: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const GENERIC_CREDENTIAL_TYPE: &str =
    "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic";

/// A config rendered for a directory: the bootstrap and the resources of its files.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: String,
    ca_bundle: String,
    bootstrap: Value,
    secrets: Vec<Value>,
    clusters: Vec<Value>,
    filters: Vec<Value>,
    routes: Value,
}

/// Renders `config` for the xDS directory `dir`, as Envoy will see it (paths in the bootstrap
/// and in the clusters' SDS sources are `dir` as given: Envoy resolves them, so a relative one is
/// relative to Envoy's working directory).
pub fn render(config: &Config, opts: &RenderOptions, dir: &str) -> anyhow::Result<Bundle> {
    anyhow::ensure!(!dir.is_empty(), "the xDS directory must not be empty");
    let dir = if dir.len() > 1 { dir.trim_end_matches('/') } else { dir };
    let mut b = bootstrap(config, opts, true)?;
    let source = |file: &str| config_source(dir, file);

    let statics = b["static_resources"].take();
    let mut listener = statics["listeners"][0].clone();
    let hcm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
    let mut routes = hcm
        .as_object_mut()
        .and_then(|o| o.shift_remove("route_config"))
        .context("the listener has a route table")?;
    hcm["rds"] = json!({"route_config_name": ROUTE_CONFIG, "config_source": source(ROUTES_FILE)});
    routes["name"] = json!(ROUTE_CONFIG);
    let routes = with_type(ROUTE_CONFIGURATION_TYPE, routes);

    let mut filters = Vec::new();
    if let Some(Value::Array(chain)) = hcm.get_mut("http_filters") {
        for f in chain.iter_mut() {
            let name = f["name"].as_str().unwrap_or_default().to_string();
            if !DYNAMIC_FILTERS.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let typed = f
                .as_object_mut()
                .and_then(|o| o.shift_remove("typed_config"))
                .context("a filter without typed_config")?;
            let type_url = typed["@type"].clone();
            f["config_discovery"] = json!({
                "config_source": source(&filter_file(&name)),
                "type_urls": [type_url],
            });
            filters.push(json!({"@type": EXTENSION_CONFIG_TYPE, "name": name, "typed_config": typed}));
        }
    }

    let mut static_clusters = Vec::new();
    let mut clusters = Vec::new();
    for mut c in statics["clusters"].as_array().cloned().unwrap_or_default() {
        if c["name"] == SIDECAR_CLUSTER {
            static_clusters.push(c);
        } else {
            sds_credentials(&mut c, &source);
            clusters.push(with_type(CLUSTER_TYPE, c));
        }
    }
    let secrets = statics["secrets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|s| with_type(SECRET_TYPE, s))
        .collect();

    let mut out = serde_json::Map::new();
    // Every xDS client needs a node identity, even one that only reads files.
    out.insert("node".into(), json!({"id": "llmsoup-gateway", "cluster": "llmsoup"}));
    if let Value::Object(rest) = b {
        out.extend(rest.into_iter().filter(|(k, _)| k != "static_resources"));
    }
    out.insert(
        "static_resources".into(),
        json!({"listeners": [listener], "clusters": static_clusters}),
    );
    out.insert("dynamic_resources".into(), json!({"cds_config": source(CLUSTERS_FILE)}));
    Ok(Bundle {
        dir: dir.to_string(),
        ca_bundle: config.gateway.ca_bundle.clone(),
        bootstrap: Value::Object(out),
        secrets,
        clusters,
        filters,
        routes,
    })
}

fn with_type(type_url: &str, resource: Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("@type".into(), json!(type_url));
    if let Value::Object(o) = resource {
        out.extend(o);
    }
    Value::Object(out)
}

fn config_source(dir: &str, file: &str) -> Value {
    json!({
        "path_config_source": {"path": join(dir, file), "watched_directory": {"path": dir}},
        "resource_api_version": "V3",
    })
}

fn join(dir: &str, file: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{file}")
    } else {
        format!("{dir}/{file}")
    }
}

/// Every credential a cluster injects (the provider's own injector, and a chain's per-provider
/// ones) names its secret; here it also says where the secret comes from: its SDS file.
fn sds_credentials(v: &mut Value, source: &impl Fn(&str) -> Value) {
    match v {
        Value::Object(o) => {
            if o.get("@type").and_then(Value::as_str) == Some(GENERIC_CREDENTIAL_TYPE)
                && let Some(Value::Object(credential)) = o.get_mut("credential")
                && let Some(name) = credential.get("name").and_then(Value::as_str)
            {
                let file = secret_file(name);
                credential.insert("sds_config".into(), source(&file));
            }
            for child in o.values_mut() {
                sds_credentials(child, source);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|child| sds_credentials(child, source)),
        _ => {}
    }
}

/// A resource name as a file name: ASCII letters, digits, `.`, `_` and `-` kept, every other
/// byte as `~XX`, so two names never share a file.
fn file_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            let _ = write!(out, "~{b:02x}");
        }
    }
    out
}

fn secret_file(name: &str) -> String {
    format!("{SECRET_PREFIX}{}.yaml", file_safe(name))
}

fn filter_file(name: &str) -> String {
    format!("{FILTER_PREFIX}{}.yaml", file_safe(name))
}

fn name_of(v: &Value) -> &str {
    v["name"].as_str().unwrap_or_default()
}

/// The files of one subscription: a `DiscoveryResponse` with its resources.
fn resources_file(resources: &[Value], ca_bundle: &str) -> anyhow::Result<String> {
    let yaml = serde_yaml::to_string(&json!({"resources": resources})).context("rendering YAML")?;
    let header = "# xDS resources rendered by llmsoup (`envoy-config --xds-dir`, rewritten by `serve` on reload); \
                  edit the llmsoup config instead.\n";
    Ok(format!("{header}{}", yaml.replace("__CA_BUNDLE__", ca_bundle)))
}

impl Bundle {
    /// The bootstrap Envoy starts with (`envoy -c`), as YAML.
    pub fn bootstrap_yaml(&self) -> anyhow::Result<String> {
        to_yaml(&self.bootstrap, &self.ca_bundle)
    }

    /// The directory the bootstrap points at, as given.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// Every file (name in the directory, contents), in the order they must be written: what a
    /// resource refers to exists before it (secrets before the clusters that inject them,
    /// clusters before the routes that send to them).
    pub fn files(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.files_keeping(None)
    }

    /// [`Bundle::files`], with the clusters of `previous` that this bundle drops still in the
    /// clusters file: routes that Envoy has not yet replaced may still send to them.
    fn files_keeping(&self, previous: Option<&Bundle>) -> anyhow::Result<Vec<(String, String)>> {
        let mut files = Vec::new();
        for s in &self.secrets {
            files.push((
                secret_file(name_of(s)),
                resources_file(std::slice::from_ref(s), &self.ca_bundle)?,
            ));
        }
        let mut clusters = self.clusters.clone();
        if let Some(prev) = previous {
            clusters.extend(
                prev.clusters
                    .iter()
                    .filter(|old| !self.clusters.iter().any(|c| name_of(c) == name_of(old)))
                    .cloned(),
            );
        }
        files.push((CLUSTERS_FILE.to_string(), resources_file(&clusters, &self.ca_bundle)?));
        for f in &self.filters {
            files.push((
                filter_file(name_of(f)),
                resources_file(std::slice::from_ref(f), &self.ca_bundle)?,
            ));
        }
        files.push((
            ROUTES_FILE.to_string(),
            resources_file(std::slice::from_ref(&self.routes), &self.ca_bundle)?,
        ));
        Ok(files)
    }

    /// Writes the files into `dir` (where this process sees the directory Envoy watches), each
    /// one atomically and only when its contents changed, then removes the secret files of
    /// providers that are gone. With `previous` (the bundle Envoy was last given), clusters this
    /// bundle drops are kept until [`Bundle::write`] runs again without it: write with the
    /// previous bundle first, then again without once Envoy had time to take the new routes.
    /// Returns whether anything was written.
    pub fn write(&self, dir: &Path, previous: Option<&Bundle>) -> anyhow::Result<bool> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let files = self.files_keeping(previous)?;
        let mut wrote = false;
        for (name, contents) in &files {
            wrote |= write_atomically(&dir.join(name), contents)?;
        }
        if previous.is_none() {
            let keep: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(SECRET_PREFIX) && name.ends_with(".yaml") && !keep.contains(&name) {
                    std::fs::remove_file(entry.path())
                        .with_context(|| format!("removing {}", entry.path().display()))?;
                    wrote = true;
                }
            }
        }
        Ok(wrote)
    }

    /// Whether `previous` had clusters this bundle drops (then a second [`Bundle::write`] without
    /// `previous` removes them).
    pub fn drops_clusters_of(&self, previous: &Bundle) -> bool {
        previous
            .clusters
            .iter()
            .any(|old| !self.clusters.iter().any(|c| name_of(c) == name_of(old)))
    }
}

/// Replaces `path` with `contents` by a rename (the move Envoy watches for), unless it already
/// holds exactly that. Returns whether it wrote.
fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == contents.as_bytes()) {
        return Ok(false);
    }
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("xds");
    let tmp = path.with_file_name(format!(".{file}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(true)
}

/// What `envoy-config` recorded in the directory ([`MANIFEST`]).
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// Its `--mode` and `--wasm`.
    pub opts: RenderOptions,
    /// The bootstrap it rendered (what Envoy was started with, if it was started from it), so a
    /// sidecar started later can tell when its config needs a new one.
    pub bootstrap: Option<String>,
}

/// Records the render options and the bootstrap in `dir` ([`MANIFEST`]), for [`read_manifest`].
pub fn write_manifest(dir: &Path, opts: &RenderOptions, bootstrap: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let manifest = json!({
        "mode": opts.mode.map(|m| match m {
            AttachMode::ExtProc => "ext_proc",
            AttachMode::Wasm => "wasm",
        }),
        "wasm_path": opts.wasm_path,
        "bootstrap": bootstrap,
    });
    let text = serde_json::to_string_pretty(&manifest).context("manifest")? + "\n";
    write_atomically(&dir.join(MANIFEST), &text).map(|_| ())
}

/// What `envoy-config` recorded in `dir`, if it did.
pub fn read_manifest(dir: &Path) -> anyhow::Result<Option<Manifest>> {
    let path: PathBuf = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let mode = match v["mode"].as_str() {
        None => None,
        Some("ext_proc") => Some(AttachMode::ExtProc),
        Some("wasm") => Some(AttachMode::Wasm),
        Some(other) => anyhow::bail!("{}: unknown mode `{other}`", path.display()),
    };
    Ok(Some(Manifest {
        opts: RenderOptions {
            mode,
            wasm_path: v["wasm_path"].as_str().map(str::to_string),
        },
        bootstrap: v["bootstrap"].as_str().map(str::to_string),
    }))
}

/// What Envoy, started with the bootstrap `running` (YAML, as rendered), would need a restart for
/// to run `new`: empty when `new`'s bootstrap is the same.
pub fn restart_needed(running: &str, new: &Bundle) -> anyhow::Result<Vec<String>> {
    let new_yaml = new.bootstrap_yaml()?;
    if running == new_yaml {
        return Ok(Vec::new());
    }
    let old: Value = serde_yaml::from_str(running).context("the recorded bootstrap is not YAML")?;
    let now: Value = serde_yaml::from_str(&new_yaml).context("rendered bootstrap")?;
    Ok(bootstrap_changes(&old, &now))
}

/// What differs between two renderings, as Envoy would need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Parts of the bootstrap (listener, static filters, the sidecar cluster, admin): only a
    /// restart of Envoy with a new bootstrap applies them.
    pub bootstrap: Vec<String>,
    /// Routes, clusters, secrets and filter configurations: the files apply them.
    pub resources: Vec<String>,
}

impl Changes {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.bootstrap.is_empty() && self.resources.is_empty()
    }
}

/// What Envoy would have to change to go from `old` to `new`.
pub fn changes(old: &Bundle, new: &Bundle) -> Changes {
    let mut c = Changes::default();
    if old.bootstrap != new.bootstrap {
        c.bootstrap = bootstrap_changes(&old.bootstrap, &new.bootstrap);
    }
    let old_routes = old.routes["virtual_hosts"][0]["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new_routes = new.routes["virtual_hosts"][0]["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    by_name(&mut c.resources, "route", &old_routes, &new_routes);
    if c.resources.is_empty() && old.routes != new.routes {
        c.resources.push("route table changed".into());
    }
    by_name(&mut c.resources, "cluster", &old.clusters, &new.clusters);
    by_name(&mut c.resources, "secret", &old.secrets, &new.secrets);
    for (name, what) in DYNAMIC_FILTERS {
        let find = |b: &Bundle| b.filters.iter().find(|f| name_of(f) == name).cloned();
        let verdict = match (find(old), find(new)) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(o), Some(n)) if o != n => "changed",
            _ => continue,
        };
        c.resources.push(format!("filter config {verdict}: {name} ({what})"));
    }
    c
}

/// `kind added: a, b`, `kind removed: ...`, `kind changed: ...` for resources matched by name.
fn by_name(out: &mut Vec<String>, kind: &str, old: &[Value], new: &[Value]) {
    let old: BTreeMap<&str, &Value> = old.iter().map(|v| (name_of(v), v)).collect();
    let new: BTreeMap<&str, &Value> = new.iter().map(|v| (name_of(v), v)).collect();
    let list = |names: Vec<&str>| names.join(", ");
    let added: Vec<&str> = new.keys().filter(|n| !old.contains_key(*n)).copied().collect();
    let removed: Vec<&str> = old.keys().filter(|n| !new.contains_key(*n)).copied().collect();
    let changed: Vec<&str> = new
        .iter()
        .filter(|(n, v)| old.get(*n).is_some_and(|o| o != *v))
        .map(|(n, _)| *n)
        .collect();
    if !added.is_empty() {
        out.push(format!("{kind} added: {}", list(added)));
    }
    if !removed.is_empty() {
        out.push(format!("{kind} removed: {}", list(removed)));
    }
    if !changed.is_empty() {
        out.push(format!("{kind} changed: {}", list(changed)));
    }
}

/// Names what differs in the static part: top-level sections, the listener's settings, each
/// static HTTP filter and static cluster.
fn bootstrap_changes(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["admin", "node", "dynamic_resources"] {
        if old[key] != new[key] {
            out.push(format!("bootstrap `{key}` changed"));
        }
    }
    let listener = |b: &Value| b["static_resources"]["listeners"][0].clone();
    let (mut ol, mut nl) = (listener(old), listener(new));
    let filters = |l: &mut Value| {
        l.pointer_mut("/filter_chains/0/filters/0/typed_config")
            .and_then(Value::as_object_mut)
            .and_then(|o| o.shift_remove("http_filters"))
            .and_then(|f| f.as_array().cloned())
            .unwrap_or_default()
    };
    let (of, nf) = (filters(&mut ol), filters(&mut nl));
    if ol != nl {
        out.push("listener settings changed (gateway.listen, gateway.max_body_bytes, local replies)".into());
    }
    let names = |f: &[Value]| f.iter().map(|v| name_of(v).to_string()).collect::<Vec<_>>();
    let (on, nn) = (names(of.as_slice()), names(nf.as_slice()));
    if on != nn {
        out.push(format!(
            "HTTP filter chain changed: [{}] → [{}]",
            on.join(", "),
            nn.join(", ")
        ));
    } else {
        by_name(&mut out, "HTTP filter", &of, &nf);
    }
    let clusters = |b: &Value| {
        b["static_resources"]["clusters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    by_name(&mut out, "static cluster", &clusters(old), &clusters(new));
    if out.is_empty() {
        out.push("bootstrap changed".into());
    }
    out
}

#[cfg(test)]
#[path = "xds_tests.rs"]
mod tests;
