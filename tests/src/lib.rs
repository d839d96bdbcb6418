//! Shared helpers for the black-box system tests.
pub mod browser;
pub mod daemon;
pub mod escpos;
pub mod load;
pub mod mosquitto;
pub mod powercut;
pub mod rig;
pub mod serial;
pub mod site;
