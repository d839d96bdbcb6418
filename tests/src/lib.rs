//! Shared helpers for the black-box system tests.
pub mod powercut;
pub mod daemon;
pub mod load;
