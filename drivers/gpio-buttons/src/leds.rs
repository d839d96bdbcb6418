//! Desk LEDs, pure: what an LED shows for its desk's light (the host's `desks` message) at a
//! moment of the wall clock.
//!
//! - lit while a visitor is called to the desk and not yet served;
//! - blinking (`blink_ms` on, `blink_ms` off, in phase with the alarm) while the desk's latest
//!   silent alarm is unacknowledged (the host stops sending its `alarm_at` then), at most
//!   `alarm_blink_s`: the clerk sees that the alarm went out, the visitor at the desk sees
//!   nothing unusual on the public display;
//! - dark otherwise, and before the host has said anything.

use std::time::Duration;

use leitsystem_plugin::messages::DeskLight;

/// One desk's LED line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedSpec {
    /// The desk.
    pub desk: String,
    /// The line's name (`GPIO23`).
    pub line: String,
}

/// How an alarm blinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blink {
    /// On for this long, then off for this long.
    pub half_period: Duration,
    /// How long after the alarm the LED blinks.
    pub alarm_for: Duration,
}

/// Whether the LED is on at `now_ms` (ms since 1970) for `light`.
pub fn led_on(light: Option<&DeskLight>, now_ms: i64, blink: Blink) -> bool {
    let Some(light) = light else {
        return false;
    };
    let half = i64::try_from(blink.half_period.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let window = i64::try_from(blink.alarm_for.as_millis()).unwrap_or(i64::MAX);
    if let Some(at) = light.alarm_at {
        let since = now_ms.saturating_sub(at);
        if (0..window).contains(&since) {
            return (since / half) % 2 == 0;
        }
    }
    light.called
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLINK: Blink = Blink {
        half_period: Duration::from_millis(250),
        alarm_for: Duration::from_secs(60),
    };

    fn light(called: bool, alarm_at: Option<i64>) -> DeskLight {
        DeskLight {
            desk: "1".into(),
            called,
            alarm_at,
        }
    }

    #[test]
    fn lit_while_called_dark_otherwise_and_before_the_host_spoke() {
        assert!(led_on(Some(&light(true, None)), 10_000, BLINK));
        assert!(!led_on(Some(&light(false, None)), 10_000, BLINK));
        assert!(!led_on(None, 10_000, BLINK));
    }

    #[test]
    fn an_alarm_blinks_in_its_own_phase_for_its_window_then_the_call_shows_again() {
        let alarm = light(true, Some(100_000));
        let at = |ms| led_on(Some(&alarm), ms, BLINK);
        assert!(at(100_000) && at(100_249));
        assert!(!at(100_250) && !at(100_499));
        assert!(at(100_500));
        // Once the window is over the call shows again (lit), and without a call: dark.
        assert!(at(160_000) && at(160_300));
        let quiet = light(false, Some(100_000));
        assert!(!led_on(Some(&quiet), 160_300, BLINK));
        // An alarm time ahead of the clock (a clock step) does not blink.
        assert!(!led_on(Some(&quiet), 99_000, BLINK));
    }
}
