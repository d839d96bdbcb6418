//! The wall display and the kiosk at the screen sizes a town hall hangs up (1920×1080,
//! 1280×720 and a portrait 1080×1920), with the longest texts a config has and ten recent
//! calls, in real headless Chromium: every character on screen lies inside its box and the
//! window, long compounds break only at a syllable (a soft hyphen), never mid-word, every
//! service of the waiting table is whole (recent calls go first), the newest recent calls are
//! the ones kept, and a recall's ↻ stays with its number while the desk keeps to the right.
//! The checks read the rendered DOM (character boxes), independent of the page's own fitting;
//! screenshots go to `target/test-artifacts/display-layout/`.

use leitsystem::domain::Command as EngineCommand;
use leitsystem::domain::DeskId;
use leitsystem_tests::browser::Browser;
use leitsystem_tests::daemon::{artifacts, execute, walk_in};
use leitsystem_tests::site::{Site, start};
use serde_json::Value;

/// Problems of what a page shows: characters outside their box (`clip`: the nearest ancestor
/// matching it) or the window, and line breaks between two letters of a word.
const LAYOUT_PROBLEMS: &str = r#"
((clipSelector) => {
  const problems = [];
  const shown = (e) => {
    for (let x = e; x; x = x.parentElement) {
      const s = getComputedStyle(x);
      if (s.display === "none" || s.visibility === "hidden" || x.hidden) return false;
    }
    return true;
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const range = document.createRange();
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent;
    const parent = n.parentElement;
    if (!text.trim() || !parent || !shown(parent)) continue;
    const clip = parent.closest(clipSelector);
    if (!clip) continue;
    const box = clip.getBoundingClientRect();
    let previousTop = null;
    let reported = false;
    for (let i = 0; i < text.length && !reported; i += 1) {
      range.setStart(n, i);
      range.setEnd(n, i + 1);
      // The last box: a character after a soft-hyphen break also reports the hyphen's box
      // at the end of the line before.
      const rect = Array.from(range.getClientRects()).filter((r) => r.width > 0).pop();
      if (!rect) continue;
      const outside = rect.left < box.left - 1 || rect.right > box.right + 1 ||
        rect.top < box.top - 1 || rect.bottom > box.bottom + 1 ||
        rect.left < 0 || rect.top < 0 || rect.right > innerWidth + 1 || rect.bottom > innerHeight + 1;
      if (outside) {
        problems.push(`cut off: "${text}" at "${text.slice(i, i + 12)}"`);
        reported = true;
      }
      const letters = /\p{L}/u.test(text[i]) && i > 0 && /\p{L}/u.test(text[i - 1]);
      if (previousTop !== null && rect.top > previousTop + 2 && letters) {
        problems.push(`broken mid-word: "${text.slice(0, i)}" / "${text.slice(i)}"`);
        reported = true;
      }
      previousTop = rect.top;
    }
  }
  return problems;
})
"#;

/// The demo site with the longest texts a town might configure, five services and no
/// repeat window for "next" (calls follow each other quickly here).
fn long_texts_site() -> anyhow::Result<Site> {
    start(|text| {
        text.replace(
            "name = \"Bürgerbüro im Rathaus\"",
            "name = \"Bürgerbüro im Rathaus Musterstadt-Nord, Erdgeschoss\"",
        )
        .replace(
            "name = { de = \"Führerscheinangelegenheiten\", en = \"Driving licence\" }\nexpected_minutes = 15",
            "name = { de = \"Führerscheinangelegenheiten und internationale Fahrerlaubnisse\", \
             en = \"Driving licences and international driving permits\" }\nexpected_minutes = 32",
        )
        .replace(
            "name = { de = \"Personalausweis und Reisepass\", en = \"ID card and passport\" }",
            "name = { de = \"Personalausweis, Reisepass und Kinderreisepass\", \
             en = \"Identity cards, passports and children's passports\" }",
        )
        .replace(
            "label = { de = \"Platz 4\", en = \"Desk 4\" }",
            "label = { de = \"Platz 4 – Kfz-Zulassungsstelle im Obergeschoss\", \
             en = \"Desk 4 – vehicle registration, upper floor\" }",
        )
        .replace(
            "services = [\"ausweis\", \"meldung\", \"fuehrerschein\"]",
            "services = [\"ausweis\", \"meldung\", \"fuehrerschein\", \"gewerbe\", \"fund\"]",
        )
        .replace("repeat_next_within_seconds = 5", "repeat_next_within_seconds = 0")
            + "\n[[service]]\nid = \"gewerbe\"\ndepartment = \"buergerbuero\"\nprefix = \"G\"\n\
               name = { de = \"Gewerbeanmeldungen und Gaststättenerlaubnisse\", \
               en = \"Business registrations and restaurant licences\" }\nexpected_minutes = 20\n\
               \n[[service]]\nid = \"fund\"\ndepartment = \"buergerbuero\"\nprefix = \"U\"\n\
               name = { de = \"Fundbüro und Beglaubigungen\", \
               en = \"Lost property and certifications\" }\nexpected_minutes = 5\n"
    })
}

fn desk_command(site: &Site, desk: &str, make: fn(DeskId) -> EngineCommand) -> anyhow::Result<()> {
    execute(&site.daemon, make(DeskId::new(desk)))?;
    Ok(())
}

/// Eleven calls (the current one and ten recent, one of them a recall) at four desks, and
/// long waiting lines left behind (one of them over 100 minutes).
fn busy_morning(site: &Site) -> anyhow::Result<()> {
    for service in ["fuehrerschein"; 12] {
        walk_in(&site.daemon, service)?;
    }
    for (service, tickets) in [("ausweis", 4), ("meldung", 4), ("gewerbe", 8), ("fund", 4)] {
        for _ in 0..tickets {
            walk_in(&site.daemon, service)?;
        }
    }
    for desk in ["1", "2", "3", "4"] {
        desk_command(site, desk, |desk| EngineCommand::OpenDesk { desk })?;
    }
    for call in 0..10 {
        let desk = ["1", "2", "4", "3"][call % 4];
        desk_command(site, desk, |desk| EngineCommand::CallNext { desk })?;
        if call == 6 {
            desk_command(site, desk, |desk| EngineCommand::Recall { desk })?;
        }
        desk_command(site, desk, |desk| EngineCommand::StartService { desk })?;
        desk_command(site, desk, |desk| EngineCommand::Finish { desk })?;
    }
    // The newest call goes to the desk with the longest label.
    desk_command(site, "4", |desk| EngineCommand::CallNext { desk })?;
    Ok(())
}

fn wait_until(browser: &mut Browser, js: &str, what: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    while browser.eval(js)? != Value::Bool(true) {
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what} did not happen within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn the_wall_display_fits_every_screen_with_the_longest_texts_and_ten_recent_calls()
-> anyhow::Result<()> {
    let site = long_texts_site()?;
    busy_morning(&site)?;
    // The display is derived from the committed events a moment after them: wait for the last
    // call to reach it.
    let started = std::time::Instant::now();
    let display = loop {
        let display: Value =
            leitsystem_tests::site::http(&site.url, "GET", "/api/v1/display", &[], None)?.json()?;
        let calls = display["calls"].as_array().map_or(0, Vec::len);
        if calls == 11 || started.elapsed() > std::time::Duration::from_secs(10) {
            break display;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let calls = display["calls"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        calls.len(),
        11,
        "the current call and ten recent ones: {display}"
    );
    let longest_wait = display["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["wait_minutes"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        longest_wait >= 100,
        "a three-digit wait is part of the test: {display}"
    );

    let out = artifacts("display-layout")?;
    let mut browser = Browser::start()?;
    let mut failures = Vec::new();
    for (width, height) in [(1920, 1080), (1280, 720), (1080, 1920)] {
        browser.open(&format!("{}/display", site.url), width, height)?;
        wait_until(
            &mut browser,
            "document.querySelectorAll('#queues tbody tr').length === 5 && \
             document.querySelector('#current-call .ticket').textContent !== '–' && \
             document.querySelector('#queues').textContent.includes('\u{ad}')",
            "the display showing the state with hyphenation points",
        )?;
        browser.screenshot(&out.join(format!("display-{width}x{height}.png")))?;
        let problems = browser.eval(&format!("{LAYOUT_PROBLEMS}('main > section, header')"))?;
        for problem in problems.as_array().into_iter().flatten() {
            failures.push(format!("{width}×{height}: {problem}"));
        }
        // The recent calls kept are the newest (a prefix of the list), and each row's desk
        // ends at the row's right edge, recall or not.
        let rows = browser.eval(
            "Array.from(document.querySelectorAll('#calls li')).map((li) => ({ \
               shown: getComputedStyle(li).display !== 'none', \
               recall: li.classList.contains('recall'), \
               gap: li.getBoundingClientRect().right - li.querySelector('.desk').getBoundingClientRect().right }))",
        )?;
        let rows = rows.as_array().cloned().unwrap_or_default();
        assert_eq!(
            rows.len(),
            10,
            "{width}×{height}: ten recent calls in the list"
        );
        let shown: Vec<bool> = rows
            .iter()
            .map(|r| r["shown"] == Value::Bool(true))
            .collect();
        if shown.windows(2).any(|w| !w[0] && w[1]) {
            failures.push(format!(
                "{width}×{height}: an older call shown, a newer one dropped: {shown:?}"
            ));
        }
        if !shown[0] && height < width {
            failures.push(format!("{width}×{height}: no recent call shown at all"));
        }
        for row in rows.iter().filter(|r| r["shown"] == Value::Bool(true)) {
            if row["gap"].as_f64().unwrap_or(0.0).abs() > 2.0 {
                failures.push(format!(
                    "{width}×{height}: a desk not at the row's right edge: {row}"
                ));
            }
        }
        if !rows.iter().any(|r| r["recall"] == Value::Bool(true)) {
            failures.push(format!(
                "{width}×{height}: the recall is not in the recent calls"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "the display does not fit:\n{}",
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn kiosk_buttons_break_long_service_names_at_a_syllable_on_every_screen() -> anyhow::Result<()> {
    let site = long_texts_site()?;
    let out = artifacts("display-layout")?;
    let mut browser = Browser::start()?;
    let mut failures = Vec::new();
    for (width, height) in [(1280, 720), (1080, 1920), (800, 1280)] {
        browser.open(&format!("{}/kiosk", site.url), width, height)?;
        wait_until(
            &mut browser,
            "document.body.dataset.ready === 'yes' && \
             document.querySelectorAll('#services button').length === 5",
            "the kiosk showing its five services",
        )?;
        browser.screenshot(&out.join(format!("kiosk-{width}x{height}.png")))?;
        let problems = browser.eval(&format!("{LAYOUT_PROBLEMS}('#services button')"))?;
        for problem in problems.as_array().into_iter().flatten() {
            failures.push(format!("{width}×{height}: {problem}"));
        }
        let langs = browser.eval(
            "Array.from(document.querySelectorAll('#services button .bi > span')).map((s) => s.lang).join(',')",
        )?;
        if langs
            .as_str()
            .is_none_or(|l| l.split(',').any(|l| l != "de" && l != "en"))
        {
            failures.push(format!(
                "{width}×{height}: service names without lang: {langs}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "the kiosk does not fit:\n{}",
        failures.join("\n")
    );
    Ok(())
}
