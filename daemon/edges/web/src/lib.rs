//! `leitsystem-web`: the web edge. [`web`] serves the pages (wall display with its WebSocket,
//! kiosk, clerk, admin), `/healthz` and `/metrics`; [`api`] is the `/api/v1` JSON API behind
//! [`auth`] (logins and sessions). One server, one crate: the pages are the API's clients and
//! share its sessions, so they are one edge (see ARCHITECTURE.md).
//!
//! Builds on the runtime and never on another edge; it reads device health and the sync's
//! state from the runtime's status boards.

pub mod api;
pub mod auth;
pub mod web;
