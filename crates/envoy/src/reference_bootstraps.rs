//! The reference bootstraps in `envoy/` are exactly what the renderer makes of the shipped config
//! (`config/llmsoup.yaml` with its environment defaults), in both attach modes. A change to the
//! renderer or the shipped config that is not reflected there fails here; `make envoy-configs`
//! (which runs this test with `LLMSOUP_BLESS=1`) rewrites them.

use std::path::PathBuf;

use llmsoup_config::{AttachMode, DEFAULT_CONFIG, load_str_with_env};

use super::{RenderOptions, render};

/// Where `make wasm` puts the filter, relative to the repository root (where `make run` starts
/// Envoy).
const WASM: &str = "target/wasm/wasm32-unknown-unknown/wasm/llmsoup_filter.wasm";

fn reference(file: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../envoy")).join(file)
}

#[test]
fn reference_bootstraps_are_what_the_renderer_makes_of_the_shipped_config() {
    // Environment defaults only, so the result does not depend on who runs it.
    let config = load_str_with_env(DEFAULT_CONFIG, &|_| None).expect("the shipped config loads");
    let bless = std::env::var_os("LLMSOUP_BLESS").is_some();
    for (file, mode, wasm) in [
        ("envoy-ext-proc.yaml", AttachMode::ExtProc, None),
        ("envoy-wasm.yaml", AttachMode::Wasm, Some(WASM.to_string())),
    ] {
        let rendered = render(
            &config,
            &RenderOptions {
                mode: Some(mode),
                wasm_path: wasm,
            },
        )
        .expect("renders");
        let path = reference(file);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &rendered).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            continue;
        }
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `make envoy-configs`", path.display()));
        assert!(
            committed == rendered,
            "{} drifted from what `llmsoup envoy-config` renders; run `make envoy-configs` and review the diff",
            path.display()
        );
    }
}
