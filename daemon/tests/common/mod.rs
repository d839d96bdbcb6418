//! Test helpers: the core's engine test support (`leitsystem_core::testing`: the demo catalog
//! built in code, no TOML, and `Sim`, an engine driven at chosen local times).

#![allow(unused_imports)]

pub use leitsystem_core::testing::*;
