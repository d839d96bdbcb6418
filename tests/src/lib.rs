//! Shared helpers for the black-box system tests.
//!
//! They must never stand in for a real part that can run here (broker, pty, browser, kernel):
//! they start the real one, or fail with a message naming the Debian package to install.
pub mod browser;
pub mod daemon;
pub mod escpos;
pub mod load;
pub mod mosquitto;
pub mod powercut;
pub mod rig;
pub mod serial;
pub mod site;
