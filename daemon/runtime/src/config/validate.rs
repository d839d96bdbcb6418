//! The semantic checks of a parsed config: every problem at once, each with its span.

use super::{
    Config, Problem, check_id, check_range, is_valid_id, validate_mqtt, validate_ticket, web,
};
use std::collections::{HashMap, HashSet};
use std::path::Path;

pub(crate) fn validate(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let site = &config.site;
    if !is_valid_id(site.id.get_ref()) {
        out.push((
            site.id.span(),
            format!(
                "site id '{}' must be 1-64 characters of a-z, 0-9, '-' or '_'",
                site.id.get_ref()
            ),
        ));
    }
    if jiff::tz::TimeZone::get(site.time_zone.get_ref()).is_err() {
        out.push((
            site.time_zone.span(),
            format!("unknown time zone '{}'", site.time_zone.get_ref()),
        ));
    }
    if site.data_dir.as_os_str().is_empty() {
        out.push((0..0, "site.data_dir must not be empty".to_string()));
    }

    if let Some(when) = &config.clock.synchronised_when {
        let text = when.get_ref();
        if text != "kernel" && !Path::new(text).is_absolute() {
            out.push((
                when.span(),
                format!(
                    "clock.synchronised_when '{text}' must be \"kernel\" or an absolute path \
                     (e.g. {})",
                    crate::clock::TIMESYNCD_FLAG_FILE
                ),
            ));
        }
    }

    let p = &config.policy;
    check_range(
        "checkin_early_minutes",
        &p.checkin_early_minutes,
        0,
        24 * 60,
        &mut out,
    );
    check_range(
        "checkin_late_minutes",
        &p.checkin_late_minutes,
        0,
        24 * 60,
        &mut out,
    );
    check_range(
        "appointment_due_before_minutes",
        &p.appointment_due_before_minutes,
        0,
        24 * 60,
        &mut out,
    );
    check_range(
        "walk_in_max_wait_minutes",
        &p.walk_in_max_wait_minutes,
        1,
        24 * 60,
        &mut out,
    );
    check_range(
        "named_desk_grace_minutes",
        &p.named_desk_grace_minutes,
        0,
        24 * 60,
        &mut out,
    );
    check_range(
        "no_show_requeue_delay_minutes",
        &p.no_show_requeue_delay_minutes,
        0,
        24 * 60,
        &mut out,
    );
    check_range("max_calls", &p.max_calls, 1, 10, &mut out);
    check_range(
        "print_answer_seconds",
        &config.plugins.print_answer_seconds,
        1,
        3_600,
        &mut out,
    );
    check_range(
        "repeat_next_within_seconds",
        &p.repeat_next_within_seconds,
        0,
        600,
        &mut out,
    );
    check_range(
        "clock_jump_seconds",
        &p.clock_jump_seconds,
        10,
        86_400,
        &mut out,
    );
    check_range(
        "personal_data_retention_days",
        &p.personal_data_retention_days,
        0,
        365,
        &mut out,
    );
    check_range("cache_mib", &config.store.cache_mib, 1, 1024, &mut out);
    check_range(
        "lock_wait_seconds",
        &config.store.lock_wait_seconds,
        0,
        600,
        &mut out,
    );

    validate_ticket(&config.ticket, &mut out);
    if let Some(mqtt) = &config.mqtt {
        validate_mqtt(mqtt, &mut out);
    }
    let mut key_ids = HashSet::new();
    for key in &config.tokens.keys {
        let id = *key.id.get_ref();
        if !(0..=255).contains(&id) {
            out.push((
                key.id.span(),
                format!("token key id {id} is out of range 0..=255"),
            ));
        } else if !key_ids.insert(id) {
            out.push((key.id.span(), format!("token key id {id} given twice")));
        }
        if let Err(e) = crate::token::KeyRing::new().insert_hex(0, key.public_key.get_ref()) {
            out.push((key.public_key.span(), format!("token key {id}: {e}")));
        }
    }

    if config.departments.is_empty() {
        out.push((0..0, "at least one [[department]] is needed".to_string()));
    }
    if config.services.is_empty() {
        out.push((0..0, "at least one [[service]] is needed".to_string()));
    }
    if config.desks.is_empty() {
        out.push((0..0, "at least one [[desk]] is needed".to_string()));
    }

    let mut department_ids = HashSet::new();
    for d in &config.departments {
        check_id("department", &d.id, &mut department_ids, &mut out);
    }

    let mut service_ids = HashSet::new();
    let mut service_department: HashMap<&str, &str> = HashMap::new();
    let mut prefixes: HashMap<String, String> = HashMap::new();
    for s in &config.services {
        check_id("service", &s.id, &mut service_ids, &mut out);
        service_department.insert(s.id.get_ref(), s.department.get_ref());
        if !department_ids.contains(s.department.get_ref()) {
            out.push((
                s.department.span(),
                format!(
                    "service '{}' names department '{}', which does not exist",
                    s.id.get_ref(),
                    s.department.get_ref()
                ),
            ));
        }
        let prefix = s.prefix.get_ref();
        if prefix.is_empty() || prefix.len() > 3 || !prefix.chars().all(|c| c.is_ascii_uppercase())
        {
            out.push((
                s.prefix.span(),
                format!("prefix '{prefix}' must be 1 to 3 capital letters A-Z"),
            ));
        } else if let Some(other) = prefixes.insert(prefix.clone(), s.id.get_ref().clone()) {
            out.push((
                s.prefix.span(),
                format!(
                    "duplicate prefix '{prefix}': services '{other}' and '{}' would issue the same numbers",
                    s.id.get_ref()
                ),
            ));
        }
        check_range("expected_minutes", &s.expected_minutes, 1, 480, &mut out);
    }

    let mut desk_ids = HashSet::new();
    let mut served: HashSet<&str> = HashSet::new();
    for d in &config.desks {
        check_id("desk", &d.id, &mut desk_ids, &mut out);
        if !department_ids.contains(d.department.get_ref()) {
            out.push((
                d.department.span(),
                format!(
                    "desk '{}' names department '{}', which does not exist",
                    d.id.get_ref(),
                    d.department.get_ref()
                ),
            ));
        }
        if d.services.is_empty() {
            out.push((
                d.id.span(),
                format!("desk '{}' serves no service", d.id.get_ref()),
            ));
        }
        for s in &d.services {
            match service_department.get(s.get_ref().as_str()) {
                None => out.push((
                    s.span(),
                    format!(
                        "desk '{}' serves service '{}', which does not exist",
                        d.id.get_ref(),
                        s.get_ref()
                    ),
                )),
                Some(dept) if *dept != d.department.get_ref() => out.push((
                    s.span(),
                    format!(
                        "desk '{}' of department '{}' serves service '{}' of department '{}'",
                        d.id.get_ref(),
                        d.department.get_ref(),
                        s.get_ref(),
                        dept
                    ),
                )),
                Some(_) => {
                    served.insert(s.get_ref());
                }
            }
        }
    }
    let mut device_ids = HashSet::new();
    for d in &config.devices {
        check_id("device", &d.id, &mut device_ids, &mut out);
        if !["scanner", "buttons", "printer", "display"].contains(&d.role.get_ref().as_str()) {
            out.push((
                d.role.span(),
                format!(
                    "device '{}' has role '{}'; roles are scanner, buttons, printer, display",
                    d.id.get_ref(),
                    d.role.get_ref()
                ),
            ));
        }
        if d.plugin.get_ref().trim().is_empty() {
            out.push((
                d.plugin.span(),
                format!("device '{}' names no plugin", d.id.get_ref()),
            ));
        }
        let role = d.role.get_ref().as_str();
        if let Some(terminal) = &d.terminal {
            if !["scanner", "printer"].contains(&role) {
                out.push((
                    terminal.span(),
                    format!(
                        "device '{}' is a {role}; only scanners and printers belong to a terminal",
                        d.id.get_ref()
                    ),
                ));
            } else if role == "scanner"
                && !config.devices.iter().any(|p| {
                    p.role.get_ref() == "printer"
                        && p.terminal.as_ref().map(|t| t.get_ref()) == Some(terminal.get_ref())
                })
            {
                out.push((
                    terminal.span(),
                    format!(
                        "scanner '{}' is at terminal '{}', but no printer is: its tickets could \
                         not be printed",
                        d.id.get_ref(),
                        terminal.get_ref()
                    ),
                ));
            }
        }
        for department in &d.departments {
            if role != "printer" {
                out.push((
                    department.span(),
                    format!(
                        "device '{}' is a {role}; only printers are bound to departments",
                        d.id.get_ref()
                    ),
                ));
            } else if !config
                .departments
                .iter()
                .any(|known| known.id.get_ref() == department.get_ref())
            {
                out.push((
                    department.span(),
                    format!(
                        "printer '{}' is bound to department '{}', which does not exist",
                        d.id.get_ref(),
                        department.get_ref()
                    ),
                ));
            }
        }
        for desk in &d.desks {
            if !desk_ids.contains(desk.get_ref()) {
                out.push((
                    desk.span(),
                    format!(
                        "device '{}' is bound to desk '{}', which does not exist",
                        d.id.get_ref(),
                        desk.get_ref()
                    ),
                ));
            }
        }
    }
    if let Some(web) = &config.web {
        out.extend(web::validate_config(web, &desk_ids));
    }
    for s in &config.services {
        if !served.contains(s.id.get_ref().as_str()) && service_ids.contains(s.id.get_ref()) {
            out.push((
                s.id.span(),
                format!(
                    "no desk serves service '{}': its tickets could never be called",
                    s.id.get_ref()
                ),
            ));
        }
    }
    out
}
