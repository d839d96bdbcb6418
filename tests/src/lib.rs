//! Shared helpers for the black-box system tests.
pub mod browser;
pub mod daemon;
pub mod escpos;
pub mod load;
pub mod mosquitto;
pub mod powercut;
pub mod serial;
pub mod site;
