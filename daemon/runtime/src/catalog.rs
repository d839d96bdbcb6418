//! The catalog: the core's plain master data ([`leitsystem_core::catalog`], re-exported here)
//! and [`from_config`], which builds it from a validated config.

pub use leitsystem_core::catalog::*;

use crate::clock::{Calendar, MINUTE};
use crate::config::Config;
use crate::domain::{DepartmentId, DeskId, ServiceId};

/// Builds the catalog from a config that passed validation.
pub fn from_config(config: &Config) -> Result<Catalog, crate::clock::CalendarError> {
    let p = &config.policy;
    let minutes = |v: &serde_spanned::Spanned<i64>| *v.get_ref() * MINUTE;
    let policy = Policy {
        checkin_early: minutes(&p.checkin_early_minutes),
        checkin_late: minutes(&p.checkin_late_minutes),
        late_arrival: p.late_arrival,
        appointment_due_before: minutes(&p.appointment_due_before_minutes),
        walk_in_max_wait: minutes(&p.walk_in_max_wait_minutes),
        named_desk_grace: minutes(&p.named_desk_grace_minutes),
        no_show_requeue_delay: minutes(&p.no_show_requeue_delay_minutes),
        max_calls: u32::try_from(*p.max_calls.get_ref()).unwrap_or(1).max(1),
        repeat_next_within: *p.repeat_next_within_seconds.get_ref() * 1_000,
        clock_jump: *p.clock_jump_seconds.get_ref() * 1_000,
        personal_data_retention_days: u32::try_from(*p.personal_data_retention_days.get_ref())
            .unwrap_or(0),
    };
    let departments = config
        .departments
        .iter()
        .map(|d| {
            let id = DepartmentId::new(d.id.get_ref().clone());
            (
                id.clone(),
                Department {
                    id,
                    name: d.name.clone(),
                    waiting_area: d.waiting_area.clone(),
                },
            )
        })
        .collect();
    let services = config
        .services
        .iter()
        .map(|s| {
            let id = ServiceId::new(s.id.get_ref().clone());
            (
                id.clone(),
                Service {
                    id,
                    department: DepartmentId::new(s.department.get_ref().clone()),
                    prefix: s.prefix.get_ref().clone(),
                    name: s.name.clone(),
                    expected: *s.expected_minutes.get_ref() * MINUTE,
                    documents: s.documents.clone(),
                },
            )
        })
        .collect();
    let desks = config
        .desks
        .iter()
        .map(|d| {
            let id = DeskId::new(d.id.get_ref().clone());
            (
                id.clone(),
                Desk {
                    id,
                    label: d.label.clone(),
                    department: DepartmentId::new(d.department.get_ref().clone()),
                    services: d
                        .services
                        .iter()
                        .map(|s| ServiceId::new(s.get_ref().clone()))
                        .collect(),
                },
            )
        })
        .collect();
    Ok(Catalog {
        site_id: config.site.id.get_ref().clone(),
        town: config.site.town.clone(),
        site_name: config.site.name.clone(),
        time_zone: config.site.time_zone.get_ref().clone(),
        calendar: Calendar::new(config.site.time_zone.get_ref())?,
        policy,
        departments,
        services,
        desks,
        ticket: crate::ticket::layout_from_config(&config.ticket),
        token_keys: {
            let mut ring = crate::token::KeyRing::new();
            for key in &config.tokens.keys {
                // Validated with the config; a key that fails here is left out.
                let _ = ring.insert_hex(
                    u8::try_from(*key.id.get_ref()).unwrap_or(0),
                    key.public_key.get_ref(),
                );
            }
            ring
        },
        accept_unsigned: config.tokens.accept_unsigned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_builds_the_catalog_the_engine_tests_use() {
        let config = Config::demo().unwrap_or_else(|e| panic!("{e}"));
        let from_toml = from_config(&config).unwrap_or_else(|e| panic!("{e}"));
        let in_code = leitsystem_core::testing::demo_catalog();
        assert_eq!(format!("{from_toml:#?}"), format!("{in_code:#?}"));
    }
}
