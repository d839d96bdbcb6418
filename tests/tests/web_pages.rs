//! The kiosk, clerk console and admin overview, and the `/api/v1` behind them, against the
//! running daemon with sim devices, in a real headless Chromium where a page is involved:
//! every authenticated route answers 401 without a session (taken from the OpenAPI document),
//! logins are rate-limited, a clerk cannot act for another desk, a ticket pulled at the kiosk
//! reaches the wall display within a second of "next" clicked on the clerk page, a refused scan
//! is explained on the kiosk, the admin sees who is in the building (and the evacuation list),
//! and HTML in service or personal names is shown as text everywhere. Screenshots go to
//! `target/test-artifacts/web/`.
//!
//! Why over 600 lines: one scenario per test in headless Chromium (kiosk, clerk, admin, the API's auth); the helpers they share are at the top, and splitting would only scatter them.

use std::time::{Duration, Instant};

use anyhow::Context;
use leitsystem_tests::browser::Browser;
use leitsystem_tests::daemon::{Daemon, artifacts, book_named, device_line};
use leitsystem_tests::site::{Answer, PASSWORD, http, login, session, start, start_with_env};
use serde_json::Value;

#[test]
fn the_api_refuses_anonymous_and_wrong_users_and_rate_limits_logins() -> anyhow::Result<()> {
    let site = start(|t| t)?;
    let url = &site.url;
    let doc = http(url, "GET", "/api/v1/openapi.json", &[], None)?.json()?;
    let paths = doc["paths"].as_object().context("no paths")?;
    let mut checked = 0;
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().context("operations")? {
            let concrete = path
                .replace("{desk}", "1")
                .replace("{action}", "next")
                .replace("{number}", "A-001");
            let full = format!("/api/v1{concrete}");
            let answer = http(url, &method.to_uppercase(), &full, &[], Some("{}"))?;
            if operation["security"] == serde_json::json!([]) {
                assert_ne!(answer.status, 401, "{method} {path} is public");
            } else {
                assert_eq!(answer.status, 401, "{method} {path}: {}", answer.body);
                assert_eq!(answer.json()?["error"], "unauthorized");
                checked += 1;
            }
        }
    }
    assert!(checked >= 14, "only {checked} authenticated routes");
    for page in ["/clerk", "/admin", "/kiosk"] {
        let answer = http(url, "GET", page, &[], None)?;
        assert_eq!(answer.status, 200, "{page}");
        assert!(answer.header("content-security-policy").is_some());
    }

    // A clerk acts for its own desk only; admin routes are not for clerks.
    let clerk = session(url, "platz1")?;
    let cookie = [("Cookie", clerk.as_str())];
    assert_eq!(
        http(url, "GET", "/api/v1/desks/1", &cookie, None)?.status,
        200
    );
    let open = http(url, "POST", "/api/v1/desks/1/open", &cookie, None)?;
    assert_eq!(open.status, 200, "{}", open.body);
    for (method, path) in [
        ("GET", "/api/v1/desks/2"),
        ("POST", "/api/v1/desks/2/open"),
        ("POST", "/api/v1/desks/2/alarm"),
        ("GET", "/api/v1/presence"),
    ] {
        let answer = http(url, method, path, &cookie, None)?;
        assert_eq!(answer.status, 403, "{method} {path}: {}", answer.body);
    }
    // Another origin cannot use the session (CSRF).
    let cross = http(
        url,
        "POST",
        "/api/v1/desks/1/pause",
        &[
            ("Cookie", clerk.as_str()),
            ("Origin", "http://evil.example"),
        ],
        None,
    )?;
    assert_eq!(cross.status, 403, "{}", cross.body);
    let logout = http(url, "POST", "/api/v1/logout", &cookie, None)?;
    assert_eq!(logout.status, 200);
    assert_eq!(
        http(url, "GET", "/api/v1/desks/1", &cookie, None)?.status,
        401
    );

    // Wrong passwords: 401, then locked with 429 and Retry-After, even for the right one.
    for _ in 0..5 {
        assert_eq!(login(url, "chef", "falsch")?.status, 401);
    }
    let locked = login(url, "chef", PASSWORD)?;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!(locked.header("retry-after").is_some());
    Ok(())
}

fn log_in_on_page(browser: &mut Browser, name: &str) -> anyhow::Result<()> {
    browser.fill("#login-name", name)?;
    browser.fill("#login-password", PASSWORD)?;
    browser.click("#login-submit")?;
    Ok(())
}

#[test]
fn kiosk_clerk_display_and_admin_in_chromium() -> anyhow::Result<()> {
    let evil_service = "<img src=x onerror=alert(1)>Ausweis";
    let evil_name = "<script>alert(2)</script>Erika <b>Mustermann</b>";
    let site = start(|t| {
        t.replace(
            "name = { de = \"Personalausweis und Reisepass\"",
            &format!("name = {{ de = \"{evil_service}\""),
        )
    })?;
    let (url, daemon) = (&site.url, &site.daemon);
    let out = artifacts("web")?;
    let mut browser = Browser::start()?;

    // The wall display, open all along.
    browser.use_page("display");
    browser.open(&format!("{url}/display"), 1280, 720)?;
    browser.wait_text("body", "Bürgerbüro", 5_000)?;

    // Kiosk: pull a ticket by touching the service.
    browser.use_page("kiosk");
    browser.open(&format!("{url}/kiosk"), 1280, 800)?;
    browser.wait_text("#services", "Ausweis", 5_000)?;
    browser.screenshot(&out.join("kiosk-start.png"))?;
    browser.click("button[data-service=ausweis]")?;
    browser.wait_text("#result-number", "A-001", 2_000)?;
    browser.wait_text("#result-area", "Wartebereich", 1_000)?;
    browser.screenshot(&out.join("kiosk-ticket.png"))?;
    browser.click("#result-back")?;

    // A refused scan is explained in plain words.
    let answer = device_line(site.scanner, "NO-SUCH-BOOKING")?;
    eprintln!("scanner: {answer}");
    browser.wait_text("#result-headline", "Diesen Termin kennen wir nicht", 3_000)?;
    browser.wait_text("#result-advice", "Please ask at the reception desk", 1_000)?;
    assert_eq!(browser.eval("document.body.dataset.result")?, "refused");
    browser.screenshot(&out.join("kiosk-refused.png"))?;

    // An appointment checked in by scan, with HTML in the personal name.
    book_named(daemon, "BK-7", "fuehrerschein", Some(evil_name))?;
    device_line(site.scanner, "BK-7")?;
    browser.wait_text("#result-number", "F-001", 3_000)?;
    browser.wait_text("#result-headline", "Willkommen", 1_000)?;

    // Clerk: log in, open the desk, click "next": the display shows A-001 within a second.
    browser.use_page("clerk");
    browser.open(&format!("{url}/clerk"), 1280, 900)?;
    log_in_on_page(&mut browser, "platz1")?;
    browser.wait_text("#desk-label", "Platz 1", 5_000)?;
    browser.click("button[data-action=open]")?;
    browser.wait_text("#mode", "open", 2_000)?;
    let started = Instant::now();
    browser.click("button[data-action=next]")?;
    browser.use_page("display");
    browser.wait_text("#current-call .ticket", "A-001", 1_000)?;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    browser.use_page("clerk");
    browser.wait_text("#visitor-ticket", "A-001", 2_000)?;
    browser.wait_text("#visitor-documents", "Passfoto", 1_000)?;
    let service = browser.text("#visitor-service")?.unwrap_or_default();
    assert!(service.contains(evil_service), "{service}");
    // The silent alarm needs the confirm step.
    browser.click("#alarm")?;
    browser.click("#alarm-yes")?;
    browser.wait_text("#alarm-done", "Alarm", 2_000)?;
    browser.eval("window.scrollTo(0, 0)")?;
    browser.screenshot(&out.join("clerk.png"))?;

    // Admin: presence with the personal name as text, evacuation list, the alarm.
    browser.use_page("admin");
    browser.open(&format!("{url}/admin"), 1400, 1000)?;
    log_in_on_page(&mut browser, "chef")?;
    browser.wait_text("#presence", "F-001", 5_000)?;
    browser.wait_text("#presence", "A-001", 1_000)?;
    let presence = browser.text("#presence")?.unwrap_or_default();
    assert!(presence.contains(evil_name), "{presence}");
    browser.wait_text("#alarms", "Platz 1", 5_000)?;
    browser.wait_text("#stats", "Ausweis", 1_000)?;
    browser.screenshot(&out.join("admin.png"))?;
    let admin = session(url, "chef")?;
    let evacuation = http(
        url,
        "GET",
        "/api/v1/presence/evacuation",
        &[("Cookie", admin.as_str())],
        None,
    )?;
    assert_eq!(evacuation.status, 200);
    assert!(evacuation.body.contains("F-001") && evacuation.body.contains("Mustermann"));
    assert!(evacuation.body.contains("A-001"), "{}", evacuation.body);

    // No script ran anywhere; no markup was created from data.
    for page in ["kiosk", "clerk", "admin", "display"] {
        browser.use_page(page);
        assert_eq!(
            browser.eval("document.querySelectorAll('main img, main script, main b, #evacuation-print img, #evacuation-print b').length")?,
            0,
            "{page}"
        );
    }
    let (dialogs, errors) = browser.dialogs_and_errors()?;
    assert_eq!((dialogs, errors), (0, Vec::<String>::new()));

    // The alarm and the name never reach the public display.
    let display = http(url, "GET", "/api/v1/display", &[], None)?.body;
    for private in ["Mustermann", "alarm", "BK-7"] {
        assert!(
            !display.contains(private),
            "{private} on the display: {display}"
        );
    }
    Ok(())
}

/// Debian's libfaketime (package `libfaketime`, which `tests/run` installs with `faketime`).
fn libfaketime() -> anyhow::Result<std::path::PathBuf> {
    for entry in std::fs::read_dir("/usr/lib")?.flatten() {
        let candidate = entry.path().join("faketime/libfaketime.so.1");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "libfaketime.so.1 not found under /usr/lib/*/faketime: install Debian's package \
         libfaketime (tests/run installs it with the package faketime)"
    )
}

fn state(daemon: &Daemon) -> anyhow::Result<leitsystem::control::StateView> {
    leitsystem_tests::daemon::request(daemon, &leitsystem::control::ControlRequest::State)?
        .state
        .context("no state in the answer")
}

fn ticket_state(view: &leitsystem::control::StateView, number: &str) -> String {
    view.tickets
        .iter()
        .find(|t| t.number.as_str() == number)
        .map_or_else(|| "missing".to_string(), |t| t.state.name().to_string())
}

/// Waits (10 s at most) until the page hides the element with id `id` (a notice that ended).
fn wait_hidden(browser: &mut Browser, id: &str) -> anyhow::Result<()> {
    leitsystem_tests::daemon::wait_for(
        &format!("the page to hide #{id}"),
        Duration::from_secs(10),
        || {
            let hidden = browser.eval(&format!("document.getElementById('{id}').hidden"))?;
            Ok((hidden == true).then_some(()))
        },
    )
}

/// The daemon's wall clock is moved by libfaketime (an offset file read on every reading; the
/// monotonic clock stays true), as a bad NTP server or a Pi without a real-time clock would.
#[test]
fn a_clock_jump_is_held_until_an_admin_confirms_it_and_a_jump_back_undoes_itself()
-> anyhow::Result<()> {
    use leitsystem::domain::Command;
    use leitsystem_tests::daemon::{execute, walk_in};
    let lib = libfaketime()?;
    let clock_dir = tempfile::tempdir()?;
    let offset = clock_dir.path().join("offset");
    std::fs::write(&offset, "+0\n")?;
    let (lib, offset_path) = (lib.display().to_string(), offset.display().to_string());
    let site = start_with_env(
        |t| t,
        &[
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME_TIMESTAMP_FILE", offset_path.as_str()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )?;
    let (url, daemon) = (&site.url, &site.daemon);
    let set_offset = |text: &str| std::fs::write(&offset, format!("{text}\n"));
    let healthz = || -> anyhow::Result<Value> { http(url, "GET", "/healthz", &[], None)?.json() };

    assert_eq!(walk_in(daemon, "ausweis")?, "A-001");
    assert_eq!(walk_in(daemon, "ausweis")?, "A-002");
    leitsystem_tests::daemon::open_and_call_next(daemon, "1")?;
    let today = state(daemon)?.day.context("no day")?;

    // The clock jumps a day ahead: the day stays, A-001 stays called, the numbers go on.
    set_offset("+1d")?;
    assert_eq!(
        walk_in(daemon, "ausweis")?,
        "A-003",
        "the jump closed the day"
    );
    let view = state(daemon)?;
    assert_eq!(view.day.as_deref(), Some(today.as_str()));
    assert_eq!(ticket_state(&view, "A-001"), "called");
    let hold = view.clock_hold.context("no clock hold in the state")?;
    assert!(
        (86_340..=86_460).contains(&hold.offset_seconds()),
        "offset {}",
        hold.offset_seconds()
    );
    let health = healthz()?;
    assert_eq!(health["status"], "clock_jump_held", "{health}");
    assert_eq!(health["clock"]["held"], true, "{health}");

    // ... and back by itself: nothing to confirm, nothing closed.
    set_offset("+0")?;
    assert_eq!(walk_in(daemon, "ausweis")?, "A-004");
    let view = state(daemon)?;
    assert!(view.clock_hold.is_none(), "{:?}", view.clock_hold);
    assert_eq!(ticket_state(&view, "A-001"), "called");
    assert_eq!(healthz()?["status"], "ok");
    let refused = execute(daemon, Command::ConfirmClock)
        .err()
        .context("confirm-clock without a jump was accepted")?;
    assert!(refused.to_string().contains("no_clock_jump"), "{refused}");

    // Ahead again; this time the admin confirms on /admin, and the day closes then.
    set_offset("+1d")?;
    assert_eq!(walk_in(daemon, "ausweis")?, "A-005");
    let mut browser = Browser::start()?;
    browser.open(&format!("{url}/admin"), 1400, 900)?;
    log_in_on_page(&mut browser, "chef")?;
    // The notice shows the wall clock's (tomorrow's) time.
    let tomorrow = jiff::civil::Date::strptime("%Y-%m-%d", &today)?.tomorrow()?;
    browser.wait_text(
        "#clock-wall",
        &tomorrow.strftime("%d.%m.%Y").to_string(),
        10_000,
    )?;
    assert_eq!(
        browser.eval("document.getElementById('clock-section').hidden")?,
        false
    );
    browser.screenshot(&artifacts("web")?.join("admin-clock-jump.png"))?;
    assert_eq!(state(daemon)?.day.as_deref(), Some(today.as_str()));
    browser.click("#clock-confirm")?;
    let rolled = leitsystem_tests::daemon::wait_for(
        "the day to roll after the confirmation",
        Duration::from_secs(10),
        || {
            let view = state(daemon)?;
            Ok((view.day.as_deref() != Some(today.as_str())).then_some(view))
        },
    )?;
    assert!(rolled.clock_hold.is_none());
    assert!(rolled.tickets.is_empty(), "{:?}", rolled.tickets);
    assert_eq!(walk_in(daemon, "ausweis")?, "A-001", "a new day's numbers");
    wait_hidden(&mut browser, "clock-section")?;
    let health = healthz()?;
    assert_eq!(health["status"], "ok", "{health}");
    Ok(())
}

/// `[clock] require_synchronised` on a clock that is not synchronised (the flag file of
/// systemd-timesyncd is missing): the day does not start. A scan is refused on the kiosk in
/// plain words, `/healthz` answers 503 `clock_unsynchronised` with the reason, and /admin
/// shows the notice with the system clock's time; the admin's "start the day" there makes
/// the day run (a walk-in gets A-001) and the notice go.
#[test]
fn an_unsynchronised_clock_keeps_the_day_closed_until_the_admin_starts_it_on_the_admin_page()
-> anyhow::Result<()> {
    let flag_dir = tempfile::tempdir()?;
    let flag = flag_dir.path().join("synchronized");
    let site = start(|t| {
        t.replace(
            "[clock]\nrequire_synchronised = false\n",
            &format!(
                "[clock]\nrequire_synchronised = true\nsynchronised_when = \"{}\"\n",
                flag.display()
            ),
        )
    })?;
    let (url, daemon) = (&site.url, &site.daemon);
    let healthz = http(url, "GET", "/healthz", &[], None)?;
    assert_eq!(healthz.status, 503, "{}", healthz.body);
    let health = healthz.json()?;
    assert_eq!(health["status"], "clock_unsynchronised", "{health}");
    let reason = health["clock"]["unsynchronised"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains(&flag.display().to_string()), "{health}");

    let out = artifacts("web")?;
    let mut browser = Browser::start()?;
    browser.use_page("kiosk");
    browser.open(&format!("{url}/kiosk"), 1280, 800)?;
    browser.wait_text("#services", "ID card", 5_000)?;
    device_line(site.scanner, "DEMO-1")?;
    browser.wait_text(
        "#result-headline",
        "Die Anmeldung ist gerade nicht möglich",
        3_000,
    )?;
    browser.wait_text("#result-advice", "Please ask at the reception desk", 1_000)?;

    browser.use_page("admin");
    browser.open(&format!("{url}/admin"), 1400, 900)?;
    log_in_on_page(&mut browser, "chef")?;
    let today = jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::get("Europe/Berlin")?)
        .date();
    let today = today.strftime("%d.%m.%Y").to_string();
    browser.wait_text("#sync-day", &today, 10_000)?;
    browser.wait_text("#sync-wall", &today, 1_000)?;
    assert_eq!(
        browser.eval("document.getElementById('sync-section').hidden")?,
        false
    );
    browser.screenshot(&out.join("admin-clock-unsynchronised.png"))?;
    assert!(
        leitsystem_tests::daemon::walk_in(daemon, "ausweis").is_err(),
        "a walk-in was accepted before the day started"
    );

    browser.click("#sync-confirm")?;
    wait_hidden(&mut browser, "sync-section")?;
    assert_eq!(
        leitsystem_tests::daemon::walk_in(daemon, "ausweis")?,
        "A-001"
    );
    let healthz = http(url, "GET", "/healthz", &[], None)?;
    assert_eq!(healthz.status, 200, "{}", healthz.body);
    assert_eq!(healthz.json()?["status"], "ok");
    Ok(())
}

/// Today's alarms are a view kept by the engine: an alarm raised at a desk is still listed on
/// `/api/v1/alarms` after 20,001 later events (the list used to re-read only the last 20,001
/// log entries) and after a restart.
#[test]
fn an_alarm_stays_listed_after_twenty_thousand_later_events_and_a_restart() -> anyhow::Result<()> {
    use leitsystem::control::{ControlClient, ControlRequest};
    use leitsystem::domain::{Command, DeskId};
    let site = start(|t| t)?;
    let url = site.url.clone();
    let clerk = session(&url, "platz1")?;
    let raised = http(
        &url,
        "POST",
        "/api/v1/desks/1/alarm",
        &[("Cookie", clerk.as_str())],
        Some("{}"),
    )?;
    assert_eq!(raised.status, 200, "{}", raised.body);
    let alarms = |url: &str| -> anyhow::Result<Vec<Value>> {
        let admin = session(url, "chef")?;
        let answer = http(
            url,
            "GET",
            "/api/v1/alarms",
            &[("Cookie", admin.as_str())],
            None,
        )?;
        anyhow::ensure!(answer.status == 200, "{}", answer.body);
        Ok(answer.json()?["alarms"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    };
    let listed = alarms(&url)?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["desk"], "1");
    let alarm_seq = listed[0]["seq"].as_u64().context("no seq")?;

    // 20,001 later events: four clients open and pause a desk each, in parallel.
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = ["1", "2", "3", "4"]
            .into_iter()
            .map(|desk| {
                let socket = site.daemon.socket.clone();
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut client = ControlClient::connect(&socket)?;
                    for i in 0..5_001 {
                        let desk = DeskId::new(desk);
                        let command = if i % 2 == 0 {
                            Command::OpenDesk { desk }
                        } else {
                            Command::PauseDesk { desk }
                        };
                        let answer = client.request(&ControlRequest::Execute {
                            request_id: None,
                            command,
                        })?;
                        anyhow::ensure!(answer.ok, "{:?}", answer.error);
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(())
    })?;
    eprintln!("20,004 desk events in {:?}", started.elapsed());
    let last_seq = state(&site.daemon)?.last_seq;
    assert!(last_seq > alarm_seq + 20_001, "only up to seq {last_seq}");
    let listed = alarms(&url)?;
    assert_eq!(
        listed.len(),
        1,
        "the alarm vanished from the list: {listed:?}"
    );
    assert_eq!(listed[0]["seq"].as_u64(), Some(alarm_seq));

    // ... and after a restart (the view is in the store).
    let _site = site.restart()?;
    let listed = alarms(&url)?;
    assert_eq!(listed.len(), 1, "lost in the restart: {listed:?}");
    assert_eq!(listed[0]["seq"].as_u64(), Some(alarm_seq));
    Ok(())
}

/// A clerk parks a visitor (documents missing), serves the next one, then puts the parked
/// visitor back in line with the button on the clerk page: the next "Next" calls them again,
/// on the clerk page and on the wall display.
#[test]
fn park_resume_and_next_from_the_clerk_page_in_chromium() -> anyhow::Result<()> {
    use leitsystem_tests::daemon::walk_in;
    let site = start(|t| t)?;
    let (url, daemon) = (&site.url, &site.daemon);
    assert_eq!(walk_in(daemon, "ausweis")?, "A-001");
    assert_eq!(walk_in(daemon, "ausweis")?, "A-002");
    let mut browser = Browser::start()?;
    browser.use_page("display");
    browser.open(&format!("{url}/display"), 1280, 720)?;
    browser.wait_text("body", "Bürgerbüro", 5_000)?;
    browser.use_page("clerk");
    browser.open(&format!("{url}/clerk"), 1280, 900)?;
    log_in_on_page(&mut browser, "platz1")?;
    browser.wait_text("#desk-label", "Platz 1", 5_000)?;
    browser.click("button[data-action=open]")?;
    browser.wait_text("#mode", "open", 5_000)?;

    browser.click("button[data-action=next]")?;
    browser.wait_text("#visitor-ticket", "A-001", 5_000)?;
    browser.click("button[data-action=start]")?;
    browser.wait_text("#visitor-state", "serving", 5_000)?;
    browser.click("button[data-action=park]")?;
    browser.wait_text("#parked", "A-001", 5_000)?;
    browser.click("button[data-action=next]")?;
    browser.wait_text("#visitor-ticket", "A-002", 5_000)?;
    browser.click("button[data-action=start]")?;
    browser.wait_text("#visitor-state", "serving", 5_000)?;
    browser.screenshot(&artifacts("web")?.join("clerk-parked.png"))?;

    browser.click("#parked button.resume[data-ticket=A-001]")?;
    leitsystem_tests::daemon::wait_for("the resume button to go", Duration::from_secs(5), || {
        let buttons = browser.eval("document.querySelectorAll('#parked button').length")?;
        Ok((buttons == 0).then_some(()))
    })?;
    browser.click("button[data-action=next]")?;
    browser.wait_text("#visitor-ticket", "A-001", 5_000)?;
    browser.use_page("display");
    browser.wait_text("#current-call .ticket", "A-001", 5_000)?;
    browser.wait_text("#current-call", "Platz 1", 1_000)?;

    let view = state(daemon)?;
    assert_eq!(ticket_state(&view, "A-002"), "done");
    assert_eq!(ticket_state(&view, "A-001"), "called");
    let calls = leitsystem_tests::daemon::all_events(daemon)?
        .iter()
        .filter(|r| {
            matches!(&r.event, leitsystem::domain::Event::TicketCalled { ticket, .. }
                if ticket.as_str() == "A-001")
        })
        .count();
    assert_eq!(
        calls, 2,
        "A-001 is called once before parking and once after resuming"
    );
    Ok(())
}

/// A visitor checks in with a signed code before the website's booking arrived (offline
/// first); when the booking of the same version arrives with the visitor's name, the name is
/// on the evacuation list (the vouched booking used to stay, nameless).
#[test]
fn a_booking_arriving_after_its_signed_check_in_puts_the_name_on_the_evacuation_list()
-> anyhow::Result<()> {
    use leitsystem::domain::{BookingId, ServiceId};
    use leitsystem::token::{TokenClaims, generate_key, sign};
    let (key, public) = generate_key(&mut rand::rng());
    let site = start(|t| {
        let t = t.replace("[tokens]\naccept_unsigned = true\n", "");
        format!("{t}\n[tokens]\nkeys = [{{ id = 3, public_key = \"{public}\" }}]\n")
    })?;
    let (url, daemon) = (&site.url, &site.daemon);
    let now = jiff::Zoned::now().in_tz("Europe/Berlin")?;
    let claims = TokenClaims {
        key_id: 3,
        booking: BookingId::new("BK-VOUCHED"),
        service: ServiceId::new("meldung"),
        day: now.date(),
        slot_minute: u16::try_from(i32::from(now.hour()) * 60 + i32::from(now.minute()))?,
        version: 1,
    };
    let token = sign(&claims, "musterstadt-rathaus", &key)?;
    let answer = device_line(site.scanner, &token)?;
    eprintln!("scanner: {answer}");
    let ticket =
        leitsystem_tests::daemon::wait_for("the signed check-in", Duration::from_secs(10), || {
            Ok(state(daemon)?.tickets.first().map(|t| t.number.to_string()))
        })?;
    let admin = session(url, "chef")?;
    let evacuation = || -> anyhow::Result<String> {
        let answer = http(
            url,
            "GET",
            "/api/v1/presence/evacuation",
            &[("Cookie", admin.as_str())],
            None,
        )?;
        anyhow::ensure!(answer.status == 200, "{}", answer.body);
        Ok(answer.body)
    };
    let before = evacuation()?;
    assert!(before.contains(&ticket), "{before}");
    assert!(!before.contains("Ada Lovelace"), "{before}");

    // The website's booking, same version, with the name.
    book_named(daemon, "BK-VOUCHED", "meldung", Some("Ada Lovelace"))?;
    let after = evacuation()?;
    let line = after
        .lines()
        .find(|l| l.contains(&ticket))
        .with_context(|| format!("{ticket} left the list:\n{after}"))?;
    assert!(
        line.contains("Ada Lovelace"),
        "no name on the evacuation list:\n{after}"
    );
    Ok(())
}

/// An idempotency key makes a retry have one effect; the same key for another command is
/// refused (it used to answer with the first command's outcome, as if the second were done),
/// also after a restart.
#[test]
fn an_idempotency_key_reused_for_another_command_is_refused() -> anyhow::Result<()> {
    let site = start(|t| t)?;
    let url = site.url.clone();
    let clerk = session(&url, "platz1")?;
    let post = |url: &str, cookie: &str, action: &str| -> anyhow::Result<Answer> {
        http(
            url,
            "POST",
            &format!("/api/v1/desks/1/{action}"),
            &[("Cookie", cookie), ("Idempotency-Key", "retry-7")],
            Some("{}"),
        )
    };
    let mode = |daemon: &Daemon| -> anyhow::Result<String> {
        let view = state(daemon)?;
        let desk = view
            .desks
            .iter()
            .find(|d| d.id.as_str() == "1")
            .context("no desk 1")?;
        Ok(format!("{:?}", desk.mode))
    };
    assert_eq!(post(&url, &clerk, "open")?.status, 200);
    let retry = post(&url, &clerk, "open")?;
    assert_eq!(retry.status, 200, "{}", retry.body);
    let other = post(&url, &clerk, "pause")?;
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(
        other.json()?["error"],
        "idempotency_key_reused",
        "{}",
        other.body
    );
    assert_eq!(mode(&site.daemon)?, "Open");

    let site = site.restart()?;
    let daemon = &site.daemon;
    let clerk = session(&url, "platz1")?;
    let other = post(&url, &clerk, "pause")?;
    assert_eq!(other.status, 409, "after the restart: {}", other.body);
    assert_eq!(post(&url, &clerk, "open")?.status, 200);
    assert_eq!(mode(daemon)?, "Open");
    Ok(())
}

/// Polls a JavaScript expression of the current page until it equals `expected`.
fn wait_eval(
    browser: &mut Browser,
    js: &str,
    expected: Value,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let value = browser.eval(js)?;
        if value == expected {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "{js} is {value}, not {expected}, after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn clerk_and_kiosk_pages_show_a_daemon_crash_and_recover_without_a_reload() -> anyhow::Result<()> {
    let site = start(|t| t)?;
    let url = site.url.clone();
    let out = artifacts("web")?;
    let mut browser = Browser::start()?;
    browser.use_page("clerk");
    browser.open(&format!("{url}/clerk"), 1280, 800)?;
    log_in_on_page(&mut browser, "platz1")?;
    browser.wait_text("#desk-label", "Platz 1", 5_000)?;
    browser.click("button[data-action=open]")?;
    browser.wait_text("#mode", "geöffnet", 3_000)?;
    browser.eval("window.notReloaded = true")?;
    browser.use_page("kiosk");
    browser.open(&format!("{url}/kiosk"), 1280, 800)?;
    browser.wait_text("#services", "Keine Wartezeit", 5_000)?;
    browser.eval("window.notReloaded = true")?;

    let site = site.kill9_and_restart(|| {
        browser.use_page("clerk");
        wait_eval(
            &mut browser,
            "document.body.dataset.online",
            "no".into(),
            Duration::from_secs(10),
        )?;
        browser.wait_text("#online", "Verbindung unterbrochen", 1_000)?;
        assert_eq!(
            browser.eval("document.querySelector('button[data-action=next]').disabled")?,
            true
        );
        browser.screenshot(&out.join("clerk-daemon-down.png"))?;
        browser.use_page("kiosk");
        wait_eval(
            &mut browser,
            "document.body.dataset.online",
            "no".into(),
            Duration::from_secs(10),
        )?;
        assert_eq!(
            browser.eval("document.getElementById('offline').hidden")?,
            false
        );
        browser.wait_text("#offline", "Bitte wenden Sie sich an den Empfang", 1_000)?;
        assert_eq!(
            browser.eval("document.querySelector('button[data-service=meldung]').disabled")?,
            true,
            "the kiosk takes taps while the daemon is down"
        );
        browser.screenshot(&out.join("kiosk-daemon-down.png"))?;
        Ok(())
    })?;
    // Meanwhile somebody pulled a number elsewhere: the kiosk's counts follow by themselves.
    leitsystem_tests::daemon::walk_in(&site.daemon, "meldung")?;

    browser.use_page("kiosk");
    wait_eval(
        &mut browser,
        "document.body.dataset.online",
        "yes".into(),
        Duration::from_secs(15),
    )?;
    browser.wait_text("button[data-service=meldung]", "1 wartend", 10_000)?;
    assert_eq!(
        browser.eval("document.getElementById('offline').hidden")?,
        true
    );
    browser.click("button[data-service=ausweis]")?;
    browser.wait_text("#result-number", "A-001", 3_000)?;
    assert_eq!(browser.eval("window.notReloaded === true")?, true);

    // The clerk's login survived the crash: "next" works without logging in again.
    browser.use_page("clerk");
    wait_eval(
        &mut browser,
        "document.body.dataset.online",
        "yes".into(),
        Duration::from_secs(15),
    )?;
    browser.click("button[data-action=next]")?;
    browser.wait_text("#visitor-ticket", "M-001", 3_000)?;
    assert_eq!(browser.text("#action-message")?.unwrap_or_default(), "");
    assert_eq!(browser.eval("window.notReloaded === true")?, true);
    browser.screenshot(&out.join("clerk-recovered.png"))?;
    let (dialogs, errors) = browser.dialogs_and_errors()?;
    assert_eq!((dialogs, errors), (0, Vec::<String>::new()));
    Ok(())
}

#[test]
fn a_clerk_whose_session_ended_gets_the_login_back_and_then_the_console() -> anyhow::Result<()> {
    let site = start(|t| t)?;
    let url = site.url.clone();
    let mut browser = Browser::start()?;
    browser.use_page("clerk");
    browser.open(&format!("{url}/clerk"), 1280, 800)?;
    log_in_on_page(&mut browser, "platz1")?;
    browser.wait_text("#desk-label", "Platz 1", 5_000)?;
    browser.eval("window.notReloaded = true")?;
    // The session ends behind the page's back (as a logout in another tab does): the
    // server closes the console's socket, and the page asks for the login again.
    browser.eval("fetch('/api/v1/logout', {method: 'POST'}).then(() => true)")?;
    browser.wait_text("#login-message", "Bitte erneut anmelden", 15_000)?;
    assert_eq!(
        browser.eval("document.getElementById('console').hidden")?,
        true
    );
    log_in_on_page(&mut browser, "platz1")?;
    wait_eval(
        &mut browser,
        "document.getElementById('console').hidden",
        false.into(),
        Duration::from_secs(5),
    )?;
    browser.click("button[data-action=open]")?;
    browser.wait_text("#mode", "geöffnet", 3_000)?;
    assert_eq!(browser.eval("window.notReloaded === true")?, true);
    Ok(())
}

#[test]
fn every_page_shows_the_sites_time_even_in_a_browser_set_to_another_zone() -> anyhow::Result<()> {
    let site = start(|t| t)?;
    let url = site.url.clone();
    let mut browser = Browser::start()?;
    // The site's wall time now and a minute ago (the minute may turn during the test).
    let site_times = || -> anyhow::Result<Vec<String>> {
        let now = jiff::Zoned::now().in_tz("Europe/Berlin")?;
        let before = now.checked_sub(jiff::Span::new().minutes(1))?;
        Ok([now, before]
            .iter()
            .map(|t| format!("{:02}:{:02}", t.hour(), t.minute()))
            .collect())
    };
    // New York is 6 hours from Berlin all year (the DST switches differ by a few weeks: 5 then).
    browser.use_page("display");
    browser.open_in_zone(&format!("{url}/display"), 1280, 720, "America/New_York")?;
    wait_eval(
        &mut browser,
        "document.body.dataset.online",
        "yes".into(),
        Duration::from_secs(10),
    )?;
    let browser_clock = browser.eval(
        "new Intl.DateTimeFormat('de-DE', {hour: '2-digit', minute: '2-digit'}).format(new Date())",
    )?;
    let clock = browser.text("#clock")?.unwrap_or_default();
    let expected = site_times()?;
    assert!(
        expected.contains(&clock),
        "the wall clock reads {clock} (browser's own: {browser_clock}), the site's time is {expected:?}"
    );

    browser.use_page("clerk");
    browser.open_in_zone(&format!("{url}/clerk"), 1280, 800, "UTC")?;
    log_in_on_page(&mut browser, "platz1")?;
    browser.wait_text("#desk-label", "Platz 1", 5_000)?;
    leitsystem_tests::daemon::walk_in(&site.daemon, "meldung")?;
    browser.click("button[data-action=open]")?;
    browser.wait_text("#mode", "geöffnet", 3_000)?;
    browser.click("button[data-action=next]")?;
    browser.wait_text("#visitor-ticket", "M-001", 3_000)?;
    let state = browser.text("#visitor-state")?.unwrap_or_default();
    let expected = site_times()?;
    assert!(
        expected
            .iter()
            .any(|t| state.contains(&format!("called {t}"))),
        "the clerk sees '{state}', the site's time is {expected:?}"
    );
    Ok(())
}

/// Regression: refusals reached the clerk as the engine's English ("desk '1' is paused, open
/// it first"), states as `called`/`serving`, every button was active on a closed desk, the
/// forward list offered desks that cannot take the service, and at 1280×720 the silent alarm
/// was below the fold.
#[test]
fn the_clerk_console_offers_what_fits_and_explains_refusals_in_both_languages() -> anyhow::Result<()>
{
    let site = start(|t| t)?;
    let url = site.url.clone();
    let mut browser = Browser::start()?;
    browser.open(&format!("{url}/clerk"), 1280, 720)?;
    log_in_on_page(&mut browser, "platz1")?;
    browser.wait_text("#mode", "geschlossen", 5_000)?;
    let disabled = |browser: &mut Browser, action: &str| -> anyhow::Result<bool> {
        Ok(browser
            .eval(&format!(
                "document.querySelector('button[data-action={action}]').disabled"
            ))?
            .as_bool()
            .unwrap_or(false))
    };
    for action in [
        "next", "recall", "start", "finish", "no_show", "park", "pause",
    ] {
        assert!(
            disabled(&mut browser, action)?,
            "'{action}' is offered at a closed desk"
        );
    }
    assert!(!disabled(&mut browser, "open")?, "'open' is not offered");

    // Open, "next" with nobody waiting: told so, in German and English.
    browser.click("button[data-action=open]")?;
    browser.wait_text("#mode", "geöffnet", 3_000)?;
    assert!(!disabled(&mut browser, "next")?);
    browser.click("button[data-action=next]")?;
    browser.wait_text("#action-message", "Im Moment wartet niemand", 3_000)?;
    browser.wait_text("#action-message", "Nobody is waiting", 1_000)?;

    // A visitor for ID cards: called (in words), and forwarded only to desks 2 and 4 (desk 3
    // does not handle ID cards).
    leitsystem_tests::daemon::walk_in(&site.daemon, "ausweis")?;
    browser.click("button[data-action=next]")?;
    browser.wait_text("#visitor-state", "aufgerufen · called", 3_000)?;
    assert!(!disabled(&mut browser, "start")?);
    let targets = browser.eval(
        "Array.from(document.querySelectorAll('#forward-target option')).map((o) => o.textContent).join('|')",
    )?;
    let targets = targets.as_str().unwrap_or_default();
    assert!(
        targets.contains("Platz 2") && targets.contains("Platz 4") && !targets.contains("Platz 3"),
        "forward targets: {targets}"
    );
    assert!(
        !targets.contains("Personalausweis"),
        "forwarding to its own service: {targets}"
    );
    browser.click("button[data-action=start]")?;
    browser.wait_text("#visitor-state", "in Bearbeitung · serving", 3_000)?;
    assert!(disabled(&mut browser, "start")?, "'start' while serving");
    assert!(!disabled(&mut browser, "finish")?);
    browser.screenshot(&artifacts("web")?.join("clerk-serving-1280x720.png"))?;
    // With a visitor and the documents to bring on screen, the alarm is still in view.
    let alarm_bottom = browser.eval(
        "(() => { const r = document.getElementById('alarm').getBoundingClientRect(); \
         return r.height > 0 ? r.bottom : 99999; })()",
    )?;
    assert!(
        alarm_bottom.as_f64().unwrap_or(f64::MAX) <= 720.0,
        "the silent alarm is below the fold at 1280×720 (bottom at {alarm_bottom})"
    );

    // The engine's refusals carry words a clerk can act on (what the console shows).
    let clerk = session(&url, "platz1")?;
    let cookie = [("Cookie", clerk.as_str())];
    let again = http(&url, "POST", "/api/v1/desks/1/start", &cookie, None)?;
    assert_eq!(again.status, 409, "{}", again.body);
    let text = again.json()?["text"].clone();
    assert!(
        text["de"]
            .as_str()
            .unwrap_or_default()
            .contains("A-001 ist in Bearbeitung")
            && text["en"]
                .as_str()
                .unwrap_or_default()
                .contains("A-001 is being served"),
        "{text}"
    );
    assert_eq!(
        http(&url, "POST", "/api/v1/desks/1/finish", &cookie, None)?.status,
        200
    );
    assert_eq!(
        http(&url, "POST", "/api/v1/desks/1/pause", &cookie, None)?.status,
        200
    );
    let paused = http(&url, "POST", "/api/v1/desks/1/next", &cookie, None)?;
    let text = paused.json()?["text"].clone();
    assert!(
        text["de"].as_str().unwrap_or_default().contains("Pause")
            && text["de"].as_str().unwrap_or_default().contains("„Öffnen“")
            && text["en"].as_str().unwrap_or_default().contains("paused"),
        "{text}"
    );
    browser.wait_text("#mode", "Pause", 3_000)?;
    assert!(
        disabled(&mut browser, "next")?,
        "'next' is offered at a paused desk"
    );
    Ok(())
}

/// Regression: a silent alarm was one more line on `/admin` (no sound, no banner), and the
/// printed evacuation list had no site, no date, no grouping by place and the dark header
/// band.
#[test]
fn a_silent_alarm_sounds_on_the_admin_page_and_the_evacuation_list_prints_by_place()
-> anyhow::Result<()> {
    let site = start(|t| t)?;
    let url = site.url.clone();
    let daemon = &site.daemon;
    book_named(daemon, "BK-EVAC", "meldung", Some("Erika Mustermann"))?;
    device_line(site.scanner, "BK-EVAC")?;
    leitsystem_tests::daemon::walk_in(daemon, "ausweis")?;
    leitsystem_tests::daemon::walk_in(daemon, "ausweis")?;
    leitsystem_tests::daemon::open_and_call_next(daemon, "1")?;

    let mut browser = Browser::start()?;
    browser.open(&format!("{url}/admin"), 1280, 800)?;
    log_in_on_page(&mut browser, "chef")?;
    browser.wait_text("#presence", "Mustermann", 5_000)?;
    let banner_shown = "!document.getElementById('alarm-banner').hidden";
    assert_eq!(browser.eval(banner_shown)?, Value::Bool(false));

    // A clerk raises the silent alarm: banner and sound within a refresh, repeating.
    let clerk = session(&url, "platz1")?;
    let alarm = http(
        &url,
        "POST",
        "/api/v1/desks/1/alarm",
        &[("Cookie", clerk.as_str())],
        None,
    )?;
    assert_eq!(alarm.status, 200, "{}", alarm.body);
    browser.wait_text("#alarm-banner", "Platz 1", 5_000)?;
    assert_eq!(browser.eval(banner_shown)?, Value::Bool(true));
    let banner_top =
        browser.eval("document.getElementById('alarm-banner').getBoundingClientRect().top")?;
    assert!(
        banner_top.as_f64().unwrap_or(f64::MAX) < 200.0,
        "banner at {banner_top}"
    );
    let sounds = |browser: &mut Browser| -> anyhow::Result<u64> {
        Ok(browser
            .eval("Number(document.body.dataset.alarmSounds || 0)")?
            .as_u64()
            .unwrap_or(0))
    };
    std::thread::sleep(Duration::from_millis(2_500));
    let sounded = sounds(&mut browser)?;
    assert!(sounded >= 2, "the alarm sounded {sounded} times in 2.5 s");
    browser.screenshot(&artifacts("web")?.join("admin-silent-alarm.png"))?;

    // Acknowledged: quiet, and still quiet after a reload. The acknowledgement is the
    // engine's, for everyone: the alarm list says who and when.
    browser.click("#alarm-ack")?;
    let admin = session(&url, "chef")?;
    let acknowledged_by =
        leitsystem_tests::daemon::wait_for("the acknowledgement", Duration::from_secs(5), || {
            let listed = http(
                &url,
                "GET",
                "/api/v1/alarms",
                &[("Cookie", admin.as_str())],
                None,
            )?;
            let alarms: Value = serde_json::from_str(&listed.body)?;
            Ok(alarms["alarms"][0]["acknowledged_by"]
                .as_str()
                .map(str::to_string))
        })?;
    assert_eq!(acknowledged_by, "web:chef");
    browser.wait_text("#alarms", "quittiert", 5_000)?;
    browser.screenshot(&artifacts("web")?.join("admin-silent-alarm-acknowledged.png"))?;
    assert_eq!(browser.eval(banner_shown)?, Value::Bool(false));
    let after_ack = sounds(&mut browser)?;
    std::thread::sleep(Duration::from_millis(4_500));
    assert_eq!(
        sounds(&mut browser)?,
        after_ack,
        "still sounding after acknowledge"
    );
    assert_eq!(browser.eval(banner_shown)?, Value::Bool(false));
    browser.eval("window.location.reload()")?;
    browser.wait_text("#presence", "Mustermann", 5_000)?;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        browser.eval(banner_shown)?,
        Value::Bool(false),
        "the acknowledged alarm is back"
    );

    // On paper: site, date, one block per place with its people; no header band, no buttons.
    browser.emulate_media("print")?;
    let printed = browser.eval(
        "(() => { const visible = (s) => Array.from(document.querySelectorAll(s)).some((e) => \
           e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden'); \
         return { header: visible('header'), buttons: visible('button'), \
           text: document.getElementById('evacuation-print').innerText, \
           places: Array.from(document.querySelectorAll('#evacuation-print h2')).map((h) => h.textContent) }; })()",
    )?;
    browser.screenshot(&artifacts("web")?.join("admin-evacuation-print.png"))?;
    browser.pdf(&artifacts("web")?.join("admin-evacuation-print.pdf"))?;
    assert_eq!(
        printed["header"],
        Value::Bool(false),
        "the header band is printed"
    );
    assert_eq!(
        printed["buttons"],
        Value::Bool(false),
        "buttons are printed"
    );
    let text = printed["text"].as_str().unwrap_or_default();
    let today = jiff::Zoned::now().in_tz("Europe/Berlin")?;
    let date = format!("{:02}.{:02}.{}", today.day(), today.month(), today.year());
    assert!(
        text.contains("Bürgerbüro im Rathaus"),
        "no site on the list: {text}"
    );
    assert!(text.contains(&date), "no date ({date}) on the list: {text}");
    let places: Vec<String> = printed["places"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    assert!(
        places
            .iter()
            .any(|p| p.starts_with("Platz 1") && p.ends_with("(1)")),
        "{places:?}"
    );
    assert!(
        places
            .iter()
            .any(|p| p.starts_with("Wartebereich Erdgeschoss") && p.ends_with("(2)")),
        "{places:?}"
    );
    assert!(text.contains("Erika Mustermann"), "{text}");
    Ok(())
}
