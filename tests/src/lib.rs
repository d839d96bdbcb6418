//! Shared helpers for the black-box system tests.
pub mod daemon;
pub mod escpos;
pub mod load;
pub mod powercut;
