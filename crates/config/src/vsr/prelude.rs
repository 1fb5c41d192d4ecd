//! Everything a vSR shape (`flat`, `user`, `canonical`, `categories`) maps with, from one place:
//! the shared decoding context and the signal, decision and endpoint helpers. Only shapes import
//! it, so the helpers themselves never depend on each other through it.

pub(super) use super::common::*;
pub(super) use super::decisions::*;
pub(super) use super::endpoints::*;
pub(super) use super::signals::*;
