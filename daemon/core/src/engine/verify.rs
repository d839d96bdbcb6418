//! Consistency: the views loaded from a store against the state rebuilt from its log and the
//! live state.

use super::{Engine, LoadedState, State};
use crate::catalog::Catalog;
use crate::domain::EventRecord;
use serde::Serialize;
use std::sync::Arc;

/// Checks a store's consistency: the views loaded from it must equal the state rebuilt from
/// its log, the live state (if given) must equal both, and the invariants must hold. Returns
/// every problem found (empty when consistent).
pub fn verify_consistency<I>(
    catalog: &Catalog,
    loaded: LoadedState,
    log: I,
    live: Option<&State>,
) -> Vec<String>
where
    I: IntoIterator<Item = EventRecord>,
{
    let mut problems = Vec::new();
    let from_views = Engine::from_loaded(Arc::new(catalog.clone()), loaded).state;
    match State::replay(catalog, log) {
        Err(e) => problems.push(e),
        Ok(replayed) => {
            problems.extend(diff_states("views", &from_views, "log", &replayed));
        }
    }
    if let Some(live) = live {
        problems.extend(diff_states("memory", live, "views", &from_views));
    }
    if let Err(found) = from_views.check_invariants() {
        problems.extend(found);
    }
    problems
}

fn diff_states(a_name: &str, a: &State, b_name: &str, b: &State) -> Vec<String> {
    let mut out = Vec::new();
    if a.day != b.day || a.last_seq != b.last_seq || a.clock != b.clock {
        out.push(format!(
            "{a_name} at day {:?} event {} clock {} but {b_name} at day {:?} event {} clock {}",
            a.day, a.last_seq, a.clock, b.day, b.last_seq, b.clock
        ));
    }
    for (name, x, y) in [
        ("tickets", json_of(&a.tickets), json_of(&b.tickets)),
        ("desks", json_of(&a.desks), json_of(&b.desks)),
        ("bookings", json_of(&a.bookings), json_of(&b.bookings)),
        ("counters", json_of(&a.counters), json_of(&b.counters)),
        ("stats", json_of(&a.stats), json_of(&b.stats)),
        ("alarms", json_of(&a.alarms), json_of(&b.alarms)),
    ] {
        if x != y {
            out.push(format!(
                "{name} differ between {a_name} and {b_name}: {x} vs {y}"
            ));
        }
    }
    out
}

fn json_of<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
