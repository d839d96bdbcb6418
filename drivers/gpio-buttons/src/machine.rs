//! One button's timing, pure (the times are passed in): edges in, actions out.
//!
//! - The kernel debounces each line (`debounce_ms`); on top, an edge within the debounce time
//!   of the last accepted one is ignored, so a bouncing contact is one press also where the
//!   kernel cannot debounce.
//! - Without a long-press action the action fires at the press (the clerk sees the call at
//!   once). With one, a release before `long_press` fires the short action, holding to
//!   `long_press` fires the long action instead (once).
//! - Held to `stuck`, the button is reported stuck, once; nothing repeats while it is held.
//!   Its release is reported, and the button works normally again.

use std::time::Duration;

/// What a button does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Edges closer than this to the last accepted one are bounce.
    pub debounce: Duration,
    /// Held this long: the long action (when there is one).
    pub long_press: Duration,
    /// Held this long: stuck.
    pub stuck: Duration,
    /// Whether a long action is configured.
    pub has_long_action: bool,
}

/// What the machine reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The short action.
    Short,
    /// The long action.
    Long,
    /// Held past the stuck time.
    Stuck,
    /// Released after being stuck.
    Released,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    Down { since: Duration, long_fired: bool },
    Stuck,
}

/// One button's state.
#[derive(Debug, Clone)]
pub struct Button {
    timing: Timing,
    state: State,
    last_edge: Option<Duration>,
}

impl Button {
    /// A released button.
    pub fn new(timing: Timing) -> Button {
        Button {
            timing,
            state: State::Up,
            last_edge: None,
        }
    }

    /// An edge at `at` (monotonic time): pressed or released.
    pub fn edge(&mut self, pressed: bool, at: Duration) -> Option<Output> {
        if self
            .last_edge
            .is_some_and(|last| at.saturating_sub(last) < self.timing.debounce)
        {
            return None;
        }
        match (self.state, pressed) {
            (State::Up, true) => {
                self.last_edge = Some(at);
                self.state = State::Down {
                    since: at,
                    long_fired: false,
                };
                (!self.timing.has_long_action).then_some(Output::Short)
            }
            (State::Down { long_fired, .. }, false) => {
                self.last_edge = Some(at);
                self.state = State::Up;
                (self.timing.has_long_action && !long_fired).then_some(Output::Short)
            }
            (State::Stuck, false) => {
                self.last_edge = Some(at);
                self.state = State::Up;
                Some(Output::Released)
            }
            // A second press without a release between (a lost edge), or a release while
            // up: the level is what it is now, nothing fires.
            (_, true) => None,
            (State::Up, false) => {
                self.last_edge = Some(at);
                None
            }
        }
    }

    /// Time passes to `now`: a long press or a stuck button.
    pub fn tick(&mut self, now: Duration) -> Option<Output> {
        let State::Down { since, long_fired } = self.state else {
            return None;
        };
        let held = now.saturating_sub(since);
        if held >= self.timing.stuck {
            self.state = State::Stuck;
            return Some(Output::Stuck);
        }
        if self.timing.has_long_action && !long_fired && held >= self.timing.long_press {
            self.state = State::Down {
                since,
                long_fired: true,
            };
            return Some(Output::Long);
        }
        None
    }

    /// When `tick` may next report something, if the button is down.
    pub fn next_deadline(&self) -> Option<Duration> {
        match self.state {
            State::Down { since, long_fired } if self.timing.has_long_action && !long_fired => {
                Some(since + self.timing.long_press)
            }
            State::Down { since, .. } => Some(since + self.timing.stuck),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timing(has_long_action: bool) -> Timing {
        Timing {
            debounce: ms(20),
            long_press: ms(1000),
            stuck: ms(10_000),
            has_long_action,
        }
    }

    #[test]
    fn bouncing_edges_are_one_press() {
        let mut b = Button::new(timing(false));
        let edges = [(true, 0), (false, 2), (true, 5), (false, 9), (true, 14)];
        let fired: Vec<_> = edges
            .iter()
            .filter_map(|&(p, t)| b.edge(p, ms(t)))
            .collect();
        assert_eq!(fired, [Output::Short]);
        // The release bounces too; then a new press is a new press.
        assert_eq!(b.edge(false, ms(200)), None);
        assert_eq!(b.edge(true, ms(203)), None);
        assert_eq!(b.edge(false, ms(206)), None);
        assert_eq!(b.edge(true, ms(400)), Some(Output::Short));
    }

    #[test]
    fn an_edge_exactly_one_debounce_time_later_counts() {
        let mut b = Button::new(timing(false));
        assert_eq!(b.edge(true, ms(0)), Some(Output::Short));
        assert_eq!(b.edge(false, ms(20)), None);
        assert_eq!(b.edge(true, ms(40)), Some(Output::Short));
    }

    #[test]
    fn the_deadline_is_the_long_press_then_the_stuck_time() {
        let mut b = Button::new(timing(true));
        assert_eq!(b.next_deadline(), None);
        b.edge(true, ms(0));
        assert_eq!(b.next_deadline(), Some(ms(1000)));
        assert_eq!(b.tick(ms(1000)), Some(Output::Long));
        assert_eq!(b.next_deadline(), Some(ms(10_000)));
        let mut plain = Button::new(timing(false));
        plain.edge(true, ms(0));
        assert_eq!(plain.next_deadline(), Some(ms(10_000)));
    }

    #[test]
    fn two_quick_presses_are_two_presses() {
        let mut b = Button::new(timing(false));
        assert_eq!(b.edge(true, ms(0)), Some(Output::Short));
        assert_eq!(b.edge(false, ms(80)), None);
        assert_eq!(b.edge(true, ms(160)), Some(Output::Short));
    }

    #[test]
    fn a_long_press_fires_the_long_action_instead_of_the_short_one() {
        let mut b = Button::new(timing(true));
        assert_eq!(b.edge(true, ms(0)), None);
        assert_eq!(b.next_deadline(), Some(ms(1000)));
        assert_eq!(b.tick(ms(999)), None);
        assert_eq!(b.tick(ms(1000)), Some(Output::Long));
        assert_eq!(b.tick(ms(1500)), None, "once");
        assert_eq!(
            b.edge(false, ms(1600)),
            None,
            "no short action after the long one"
        );
        // A short press is the short action, at the release.
        assert_eq!(b.edge(true, ms(3000)), None);
        assert_eq!(b.edge(false, ms(3200)), Some(Output::Short));
    }

    #[test]
    fn a_stuck_button_is_reported_once_and_never_repeats() {
        let mut b = Button::new(timing(false));
        assert_eq!(b.edge(true, ms(0)), Some(Output::Short));
        let reports: Vec<_> = (1..=300).filter_map(|s| b.tick(ms(s * 100))).collect();
        assert_eq!(reports, [Output::Stuck]);
        assert_eq!(b.edge(false, ms(40_000)), Some(Output::Released));
        assert_eq!(b.edge(true, ms(41_000)), Some(Output::Short));
    }
}
