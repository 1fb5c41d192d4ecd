//! llmsoup's development tools. The library is the fake provider the demo and the end-to-end
//! tests run (`llmsoup mock-upstream`) and the Rasch fit the training programs share; the examples are the load benchmarks (`make bench`) and
//! the training programs of the built-in classifier heads (`make train-domain`,
//! `make train-jailbreak`).
//!
//! The fake provider depends on no llmsoup crate, on purpose: it shares no code with what it
//! tests.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod mock_upstream;
pub mod rasch;
