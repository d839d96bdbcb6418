//! The button loop ([`run`]) against scripted lines on a simulated clock: the same loop and
//! machines the plugin runs on the GPIO character device, with the edges a real contact makes
//! (bouncing, held, stuck). And the built plugin as the daemon loads it: bad configs refused
//! with the option named, lines that do not exist reported disconnected (these machines have
//! no GPIO chip; the hardware rig drives real lines).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use leitsystem_gpio_buttons::{Edge, Lines, Report, Settings, led_levels, run};
use leitsystem_plugin::messages::{ButtonAction, DeskLight};
use leitsystem_plugin::testing::TestPlugin;
use serde_json::json;

/// Edges at given times (ms) on a simulated clock; ends (sets `stop`) at `end_ms`.
struct Script<'a> {
    now: Duration,
    edges: VecDeque<Edge>,
    end: Duration,
    stop: &'a AtomicBool,
    /// Every LED change: (when, which, on).
    leds: Vec<(Duration, usize, bool)>,
    /// Where the script publishes its time (ms), for a lights closure to read.
    clock: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Lines for Script<'_> {
    fn wait(&mut self, timeout: Duration) -> Result<Vec<Edge>, String> {
        let until = self.now + timeout.max(Duration::from_millis(1));
        let mut ready = Vec::new();
        while self.edges.front().is_some_and(|e| e.at <= until) {
            if let Some(edge) = self.edges.pop_front() {
                self.now = self.now.max(edge.at);
                ready.push(edge);
            }
        }
        if ready.is_empty() {
            self.now = until;
        }
        if self.now >= self.end {
            self.stop.store(true, Ordering::Relaxed);
        }
        if let Some(clock) = &self.clock {
            clock.store(
                u64::try_from(self.now.as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        Ok(ready)
    }

    fn now(&self) -> Duration {
        self.now
    }

    fn set_led(&mut self, led: usize, on: bool) -> Result<(), String> {
        self.leds.push((self.now, led, on));
        Ok(())
    }
}

fn settings(buttons: serde_json::Value) -> Settings {
    Settings::from_options(&json!({ "buttons": buttons }), &["1".to_string()]).expect("valid")
}

/// Runs the loop over `edges` ((ms, button, pressed)) until `end_ms`; the reports.
fn play(settings: &Settings, edges: &[(u64, usize, bool)], end_ms: u64) -> Vec<Report> {
    let stop = AtomicBool::new(false);
    let mut script = Script {
        now: Duration::ZERO,
        edges: edges
            .iter()
            .map(|&(ms, button, pressed)| Edge {
                button,
                pressed,
                at: Duration::from_millis(ms),
            })
            .collect(),
        end: Duration::from_millis(end_ms),
        stop: &stop,
        leds: Vec::new(),
        clock: None,
    };
    let mut reports = Vec::new();
    let why = run(
        &mut script,
        settings,
        &stop,
        &mut |r| reports.push(r),
        &Vec::new,
    );
    assert_eq!(why, "", "the loop ended with an error");
    reports
}

fn press(action: ButtonAction) -> Report {
    Report::Press("1".into(), action)
}

#[test]
fn a_bouncing_contact_is_one_press_and_two_real_presses_are_two() {
    let s = settings(json!([{ "line": "GPIO17", "desk": "1", "action": "next" }]));
    let bouncing = [
        (0, 0, true),
        (2, 0, false),
        (4, 0, true),
        (9, 0, false),
        (13, 0, true),
        (300, 0, false),
        (302, 0, true),
        (305, 0, false),
    ];
    assert_eq!(play(&s, &bouncing, 2_000), [press(ButtonAction::Next)]);
    // A double click (two presses 150 ms apart) is two presses: the engine decides that the
    // second "next" only repeats the call.
    let double = [
        (0, 0, true),
        (60, 0, false),
        (150, 0, true),
        (210, 0, false),
    ];
    assert_eq!(
        play(&s, &double, 2_000),
        [press(ButtonAction::Next), press(ButtonAction::Next)]
    );
}

#[test]
fn a_long_press_is_the_long_action_and_a_short_one_the_short_action() {
    let s = settings(json!([
        { "line": "GPIO17", "desk": "1", "action": "next", "long_action": "alarm" },
        { "line": "GPIO27", "desk": "1", "action": "recall" }
    ]));
    let long = [(0, 0, true), (1_500, 0, false)];
    assert_eq!(play(&s, &long, 3_000), [press(ButtonAction::Alarm)]);
    let short = [
        (0, 0, true),
        (200, 0, false),
        (500, 1, true),
        (4_000, 1, false),
    ];
    // The recall button has no long action: it fires at the press, however long it is held.
    assert_eq!(
        play(&s, &short, 5_000),
        [press(ButtonAction::Next), press(ButtonAction::Recall)]
    );
}

#[test]
fn a_stuck_button_is_reported_once_and_does_not_repeat() {
    let s = settings(json!([{ "line": "GPIO17", "desk": "1", "action": "next" }]));
    let held = [
        (0, 0, true),
        (30_000, 0, false),
        (31_000, 0, true),
        (31_100, 0, false),
    ];
    assert_eq!(
        play(&s, &held, 32_000),
        [
            press(ButtonAction::Next),
            Report::Stuck("GPIO17".into()),
            Report::Released("GPIO17".into()),
            press(ButtonAction::Next),
        ]
    );
}

/// The loop sets an LED when its level changes, and only then: lit while the desk's visitor
/// is called, blinking after its alarm, dark again once served.
#[test]
fn the_loop_switches_each_desk_led_as_its_light_changes_and_only_then() {
    let settings = Settings::from_options(
        &json!({
            "buttons": [{ "line": "GPIO17", "desk": "1", "action": "next" }],
            "leds": [{ "line": "GPIO23", "desk": "1" }, { "line": "GPIO24", "desk": "2" }],
            "blink_ms": 100,
            "alarm_blink_s": 1,
        }),
        &["1".to_string(), "2".to_string()],
    )
    .expect("valid");
    let stop = AtomicBool::new(false);
    let clock = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut script = Script {
        now: Duration::ZERO,
        edges: VecDeque::new(),
        end: Duration::from_millis(2000),
        stop: &stop,
        leds: Vec::new(),
        clock: Some(clock.clone()),
    };
    // The host's lights over (script) time: desk 1 called at 100-600 ms, desk 2's alarm at
    // 700 ms (blinking for 1 s), desk 1 called again from 1500 ms.
    let lights = || {
        let ms = i64::try_from(clock.load(Ordering::Relaxed)).unwrap_or(0);
        let light = |desk: &str, called: bool, alarm_at: Option<i64>| DeskLight {
            desk: desk.into(),
            called,
            alarm_at,
        };
        let alarm = (ms >= 700).then_some(700);
        vec![
            light("1", (100..600).contains(&ms) || ms >= 1500, None),
            light("2", false, alarm),
        ]
    };
    let levels = || {
        led_levels(
            &settings,
            &lights(),
            i64::try_from(clock.load(Ordering::Relaxed)).unwrap_or(0),
        )
    };
    let why = run(&mut script, &settings, &stop, &mut |_| {}, &levels);
    assert_eq!(why, "");
    let changes = |led: usize| -> Vec<(u64, bool)> {
        script
            .leds
            .iter()
            .filter(|(_, l, _)| *l == led)
            .map(|(at, _, on)| (u64::try_from(at.as_millis()).unwrap_or(0), *on))
            .collect()
    };
    // Desk 1: off at start, on at 100, off at 600, on at 1500 (within one wait of each).
    let desk1 = changes(0);
    let levels1: Vec<bool> = desk1.iter().map(|(_, on)| *on).collect();
    assert_eq!(levels1, [false, true, false, true], "{desk1:?}");
    for ((at, _), want) in desk1.iter().zip([0, 100, 600, 1500]) {
        assert!((want..want + 25).contains(at), "{desk1:?}");
    }
    // Desk 2: off, then 10 half-periods of 100 ms from 700 to 1700 (on first), then off.
    let desk2 = changes(1);
    let levels2: Vec<bool> = desk2.iter().map(|(_, on)| *on).collect();
    assert_eq!(
        levels2,
        [
            false, true, false, true, false, true, false, true, false, true, false
        ],
        "{desk2:?}"
    );
    for ((at, _), want) in desk2.iter().skip(1).zip((0..10).map(|i| 700 + 100 * i)) {
        assert!((want..want + 25).contains(at), "{desk2:?}");
    }
}

#[test]
fn bad_options_are_refused_with_the_option_named() {
    let desks = ["1".to_string()];
    for (options, named) in [
        (json!({}), "buttons"),
        (json!({"buttons": []}), "no button"),
        (
            json!({"buttons": [{"desk": "1", "action": "next"}]}),
            "line",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "9", "action": "next"}]}),
            "desk '9'",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "fly"}]}),
            "fly",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "next"},
                               {"line": "GPIO17", "desk": "1", "action": "recall"}]}),
            "twice",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "next"}], "bias": "up"}),
            "bias",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "next"}], "stuck_ms": 1000, "long_press_ms": 2000}),
            "stuck_ms",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "next"}], "leds": [{"line": "GPIO23", "desk": "9"}]}),
            "leds[0]: desk '9'",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "next"}], "leds": [{"line": "GPIO17", "desk": "1"}]}),
            "leds[0]: line 'GPIO17' is used twice",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "next"}], "leds": [{"line": "GPIO23", "desk": "1"}, {"line": "GPIO24", "desk": "1"}]}),
            "second LED",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "next"}], "leds": [{"desk": "1"}]}),
            "leds[0]: 'line'",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "next"}], "leds": "GPIO23"}),
            "option 'leds'",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "next"}], "alarm_blink_s": 0}),
            "alarm_blink_s' must be 1..=86400 seconds",
        ),
        (
            json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "next"}], "blink_ms": 10}),
            "blink_ms",
        ),
    ] {
        let error = Settings::from_options(&options, &desks).expect_err("refused");
        assert!(error.contains(named), "{options}: {error}");
    }
}

#[test]
fn the_built_plugin_refuses_bad_configs_and_reports_missing_lines() {
    let plugin = TestPlugin::load_built("libleitsystem_gpio_buttons.so").expect("built plugin");
    assert_eq!(plugin.roles(), "buttons");
    let config = |options: serde_json::Value| json!({"v": 1, "id": "desk-buttons", "role": "buttons", "desks": ["1"], "options": options});
    let Err(refused) = plugin.create(config(
        json!({"buttons": [{"line": "GPIO17", "desk": "2", "action": "next"}]}),
    )) else {
        panic!("a button for another desk was accepted");
    };
    assert!(refused.contains("desk '2'"), "{refused}");
    let mut device = plugin
        .create(config(json!({"buttons": [{"line": "LEITSYSTEM_NO_SUCH_LINE", "desk": "1", "action": "next"}]})))
        .expect("created");
    let detail = device
        .wait_disconnected(Duration::from_secs(5))
        .expect("reported");
    assert!(
        detail.contains("LEITSYSTEM_NO_SUCH_LINE") || detail.contains("GPIO"),
        "{detail}"
    );
    assert!(device.destroy() < Duration::from_secs(1));
}
