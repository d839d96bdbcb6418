//! Key events → scanned codes, pure (no I/O; the time is passed in). The reader thread feeds
//! every `EV_KEY` / `SYN_DROPPED` event it reads through [`Decoder::event`]; the tests feed
//! recorded sequences through the same function.
//!
//! - Modifiers (Shift, AltGr, Ctrl, Alt) are tracked by their own key-down and key-up events;
//!   a character is decided at its key-down with the modifiers held at that moment, so a Shift
//!   released right after one character, or key-ups that never come, change nothing.
//! - Auto-repeat events (value 2) are ignored: a scanner never holds a key.
//! - A code ends at the terminator key (Enter, keypad Enter, Tab, as configured) or after the
//!   idle gap; an empty code is nothing.
//! - A code with a key that is no character in the layout (F-keys, arrows, Ctrl/Alt combos,
//!   dead keys), over the maximum length, or cut by `SYN_DROPPED` (the kernel lost events) is
//!   dropped with a reason for the log.

use std::time::{Duration, Instant};

use crate::keymap::{Layout, codes};

/// Key event values (`input_event.value` for `EV_KEY`).
pub const KEY_UP: i32 = 0;
/// Key pressed.
pub const KEY_DOWN: i32 = 1;
/// Auto-repeat.
pub const KEY_REPEAT: i32 = 2;

/// Which keys end a code (besides the idle gap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminator {
    /// Enter or keypad Enter.
    Enter,
    /// Tab.
    Tab,
    /// Enter, keypad Enter or Tab.
    EnterOrTab,
    /// None: only the idle gap.
    None,
}

impl Terminator {
    /// Parses the `terminator` option.
    pub fn parse(text: &str) -> Result<Terminator, String> {
        match text {
            "enter" => Ok(Terminator::Enter),
            "tab" => Ok(Terminator::Tab),
            "enter_or_tab" => Ok(Terminator::EnterOrTab),
            "none" => Ok(Terminator::None),
            other => Err(format!(
                "option 'terminator' must be \"enter\", \"tab\", \"enter_or_tab\" or \"none\", not \"{other}\""
            )),
        }
    }

    fn ends(self, code: u16) -> bool {
        let enter = code == codes::ENTER || code == codes::KP_ENTER;
        let tab = code == codes::TAB;
        match self {
            Terminator::Enter => enter,
            Terminator::Tab => tab,
            Terminator::EnterOrTab => enter || tab,
            Terminator::None => false,
        }
    }
}

/// How key events become codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderOptions {
    /// The layout the scanner types in.
    pub layout: Layout,
    /// What ends a code.
    pub terminator: Terminator,
    /// The pause that ends a code.
    pub idle_gap: Duration,
    /// Longest code in characters.
    pub max_length: usize,
}

/// A decoded code, or why one was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The scanned text.
    Code(String),
    /// Dropped, with the reason.
    Dropped(String),
}

/// One input event as the decoder needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `EV_KEY`: key code and value (0 up, 1 down, 2 repeat).
    Key(u16, i32),
    /// `SYN_DROPPED`: the kernel's buffer overflowed, events were lost.
    Dropped,
}

/// The decoder's state between events.
#[derive(Debug)]
pub struct Decoder {
    options: DecoderOptions,
    text: String,
    invalid: Option<String>,
    left_shift: bool,
    right_shift: bool,
    altgr: bool,
    ctrl: bool,
    alt: bool,
    last_key: Option<Instant>,
}

impl Decoder {
    /// A decoder with no key held.
    pub fn new(options: DecoderOptions) -> Decoder {
        Decoder {
            options,
            text: String::new(),
            invalid: None,
            left_shift: false,
            right_shift: false,
            altgr: false,
            ctrl: false,
            alt: false,
            last_key: None,
        }
    }

    /// Feeds one event read at `now`; returns the frames it completes (the idle gap may end
    /// the previous code first).
    pub fn event(&mut self, input: Input, now: Instant) -> Vec<Frame> {
        let mut frames: Vec<Frame> = self.idle(now).into_iter().collect();
        match input {
            Input::Dropped => {
                // Lost events: the modifiers may be wrong and characters missing.
                self.left_shift = false;
                self.right_shift = false;
                self.altgr = false;
                self.ctrl = false;
                self.alt = false;
                if !self.text.is_empty() || self.invalid.is_some() {
                    self.invalid = Some("the kernel dropped key events (SYN_DROPPED)".into());
                }
                frames.extend(self.finish());
            }
            Input::Key(code, value) => {
                if let Some(frame) = self.key(code, value, now) {
                    frames.push(frame);
                }
            }
        }
        frames
    }

    fn key(&mut self, code: u16, value: i32, now: Instant) -> Option<Frame> {
        let down = match value {
            KEY_DOWN => true,
            KEY_UP => false,
            _ => return None, // auto-repeat, or nonsense
        };
        match code {
            codes::LEFT_SHIFT => self.left_shift = down,
            codes::RIGHT_SHIFT => self.right_shift = down,
            codes::RIGHT_ALT => self.altgr = down,
            codes::LEFT_CTRL | codes::RIGHT_CTRL => self.ctrl = down,
            codes::LEFT_ALT => self.alt = down,
            // Lock keys change nothing a scanner relies on.
            codes::CAPS_LOCK | codes::NUM_LOCK => {}
            _ if !down => {}
            _ if self.options.terminator.ends(code) => {
                self.last_key = None;
                return self.finish();
            }
            _ => {
                self.last_key = Some(now);
                if self.invalid.is_some() {
                    return None;
                }
                if self.ctrl || self.alt {
                    self.invalid = Some(format!("key {code} with Ctrl or Alt held"));
                    return None;
                }
                let shift = self.left_shift || self.right_shift;
                match self.options.layout.char_for(code, shift, self.altgr) {
                    Some(c) if self.text.chars().count() < self.options.max_length => {
                        self.text.push(c);
                    }
                    Some(_) => {
                        self.invalid = Some(format!(
                            "a code longer than {} characters",
                            self.options.max_length
                        ));
                    }
                    None => {
                        self.invalid = Some(format!(
                            "key {code} is no character in the {:?} layout",
                            self.options.layout
                        ));
                    }
                }
            }
        }
        None
    }

    /// The code the idle gap ends at `now`, if any.
    pub fn idle(&mut self, now: Instant) -> Option<Frame> {
        let last = self.last_key?;
        if now.duration_since(last) < self.options.idle_gap {
            return None;
        }
        self.last_key = None;
        self.finish()
    }

    /// When the pending code's idle gap runs out, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.last_key.map(|t| t + self.options.idle_gap)
    }

    fn finish(&mut self) -> Option<Frame> {
        let text = std::mem::take(&mut self.text);
        if let Some(reason) = self.invalid.take() {
            return Some(Frame::Dropped(reason));
        }
        (!text.is_empty()).then_some(Frame::Code(text))
    }
}
