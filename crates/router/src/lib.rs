//! llmsoup's routing: from a request body to a model and the mutations that send it there.
//!
//! [`request`] parses an OpenAI/Anthropic body into the view the signals need; [`signals`]
//! evaluate it (score rules a calibrated decision uses take their threshold from
//! [`calibration`], the live quantile of recent scores); [`decision`] combines their matches; [`selection`] picks among a decision's
//! models using what [`selection::backends::Backends`] observed and what feedback taught
//! ([`selection::quality`]); [`plugins`] apply a decision's
//! plugins; [`engine`] runs the whole pipeline and is the one entry point front ends call. It
//! returns an [`llmsoup_contract::outcome::Outcome`] and a [`engine::Trace`] of what happened;
//! publishing the trace (metrics, accounting, the decision feed and log) is the caller's job.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod calibration;
pub mod decision;
pub mod engine;
pub mod eval;
pub mod fallback;
pub mod plugins;
pub mod prediction;
pub mod request;
pub mod selection;
pub mod signals;
pub mod window;

/// The configuration crate, as the modules here name it.
pub use llmsoup_config as config;
/// The inference crate, as the modules here name it.
pub use llmsoup_models as models;
