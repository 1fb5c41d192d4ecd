//! The fuzz targets' smoke run for `make test`: every committed corpus input (`fuzz/corpus/`)
//! through the same target bodies the libFuzzer binaries run (`fuzz/src/lib.rs`), then a short
//! deterministic mutation loop per target. It needs neither cargo-fuzz nor an instrumented build;
//! the long runs are `make fuzz`. `LLMSOUP_FUZZ_SMOKE_SECS` bounds each target's loop (default 2).

#[path = "../../../fuzz/src/lib.rs"]
mod harness;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Tokens the mutator splices in (the libFuzzer runs use `fuzz/llmsoup.dict`).
const TOKENS: &[&[u8]] = &[
    b"\"model\"",
    b"\"mod\\u0065l\"",
    b"\"model\":\"auto\",",
    b"\"messages\"",
    b"\"content\"",
    b"\"role\":\"user\"",
    b"\\ud800",
    b"null",
    b"[",
    b"{",
    b"18446744073709551615",
    b"\"usage\":{\"prompt_tokens\":",
    b"\"cached_tokens\"",
    b"\"cache_read_input_tokens\"",
    b"\ndata: ",
    b"\r\n",
    b"${OPENAI_API_KEY}",
    b"$${",
    b"\n  - name: ",
    b"\nmodels:\n",
    b"&a ",
    b"*a",
];

/// xorshift64*: a fixed seed makes every run mutate the same way.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = rng.next() as u8;
            }
            2 => {
                const BYTES: &[u8] = b"\"\\{}[]:,\n\r\x00\xff0-e";
                v.insert(at, BYTES[rng.below(BYTES.len())]);
            }
            3 => {
                let end = (at + 1 + rng.below(8)).min(v.len());
                v.drain(at.min(end)..end);
            }
            4 => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                let copy = v[at.min(end)..end].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, copy);
            }
            5 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            6 => {
                let from = rng.below(other.len() + 1);
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                if let Some(b) = v.get_mut(at) {
                    *b = rng.next() as u8;
                }
            }
        }
    }
    v.truncate(16 * 1024);
    v
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Runs one input; on a failure, saves it where `cargo fuzz run TARGET FILE` can replay it.
fn run(target: &str, f: fn(&[u8]), input: &[u8], origin: &str) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-smoke");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{target}-crash"));
        std::fs::write(&file, input).unwrap();
        panic!(
            "fuzz target {target} failed on {origin}; input saved to {} ({:?})",
            file.display(),
            String::from_utf8_lossy(input)
        );
    }
}

fn smoke(target: &str, f: fn(&[u8]), seed: u64) {
    let inputs = corpus(target);
    assert!(inputs.len() >= 10, "the committed corpus for {target} is missing");
    for (path, input) in &inputs {
        run(target, f, input, &path.display().to_string());
    }
    let budget = Duration::from_secs_f64(
        std::env::var("LLMSOUP_FUZZ_SMOKE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    );
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut done = 0u64;
    // Bounded twice: a fixed number of mutations, and the time budget on a slow CI box.
    while done < 200_000 && started.elapsed() < budget {
        let base = &inputs[rng.below(inputs.len())].1;
        let other = &inputs[rng.below(inputs.len())].1;
        let input = mutate(&mut rng, base, other);
        run(target, f, &input, &format!("mutation {done} (seed {seed:#x})"));
        done += 1;
    }
    eprintln!(
        "{target}: {} corpus inputs, {done} mutations in {:.1?}",
        inputs.len(),
        started.elapsed()
    );
}

#[test]
fn request_parsing() {
    smoke("request", harness::request, 0x5eed_0001);
}

#[test]
fn fail_open_rewrite() {
    smoke("fail_open", harness::fail_open, 0x5eed_0002);
}

#[test]
fn usage_scanner() {
    smoke("usage", harness::usage, 0x5eed_0003);
}

#[test]
fn config_loading() {
    smoke("config", harness::config, 0x5eed_0004);
}
