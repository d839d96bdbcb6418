//! Shared helpers for the black-box system tests.
