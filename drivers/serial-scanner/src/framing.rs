//! Bytes from a scanner → scanned codes, pure (no I/O, the time is passed in).
//!
//! A scanner ends each code with a terminator (CR, LF or CR LF, as configured on the scanner)
//! or with nothing, in which case the pause after the burst (the idle gap) ends it. The idle
//! gap also ends a frame whose terminator never comes (a scanner set up differently than its
//! config says), so no scan is left hanging. A leading AIM symbology identifier (`]` + code
//! letter + modifier digit, e.g. `]Q1` for QR) is stripped when asked. Frames with control
//! characters or invalid UTF-8 (a wrong baud rate looks like that) and frames over the maximum
//! length are dropped, each with a reason for the log; the next frame is read normally.

use std::time::{Duration, Instant};

/// What ends a frame besides the idle gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminator {
    /// CR, LF or CR LF (one frame end for CR LF).
    Any,
    /// CR only (an LF right after it is ignored; any other LF makes the frame invalid).
    Cr,
    /// LF only (a CR before it is dropped).
    Lf,
    /// CR LF (a lone CR or LF ends the frame too, as a scanner may send either).
    CrLf,
    /// Nothing: only the idle gap ends a frame.
    None,
}

impl Terminator {
    /// Parses the `terminator` option.
    pub fn parse(text: &str) -> Result<Terminator, String> {
        match text {
            "any" => Ok(Terminator::Any),
            "cr" => Ok(Terminator::Cr),
            "lf" => Ok(Terminator::Lf),
            "crlf" => Ok(Terminator::CrLf),
            "none" => Ok(Terminator::None),
            other => Err(format!(
                "option 'terminator' must be \"any\", \"cr\", \"lf\", \"crlf\" or \"none\", not \"{other}\""
            )),
        }
    }

    fn ends_frame(self, byte: u8) -> bool {
        match self {
            Terminator::Any | Terminator::CrLf => byte == b'\r' || byte == b'\n',
            Terminator::Cr => byte == b'\r',
            Terminator::Lf => byte == b'\n',
            Terminator::None => false,
        }
    }
}

/// How frames are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingOptions {
    /// The terminator.
    pub terminator: Terminator,
    /// The pause that ends a frame.
    pub idle_gap: Duration,
    /// Longest code in bytes.
    pub max_length: usize,
    /// Strip a leading AIM symbology identifier.
    pub strip_aim: bool,
}

/// One frame: a code, or why it was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A scanned code.
    Code(String),
    /// Dropped, with the reason.
    Dropped(String),
}

/// The framer's state between reads.
#[derive(Debug)]
pub struct Framer {
    options: FramingOptions,
    buffer: Vec<u8>,
    /// The frame grew past the maximum: the rest up to its end is skipped.
    overlong: bool,
    last_byte: Option<Instant>,
    /// The previous byte was a CR ending a frame (a following LF belongs to it).
    after_cr: bool,
}

impl Framer {
    /// A framer with nothing read yet.
    pub fn new(options: FramingOptions) -> Framer {
        Framer {
            options,
            buffer: Vec::new(),
            overlong: false,
            last_byte: None,
            after_cr: false,
        }
    }

    /// Feeds bytes read at `now`; returns the frames they complete.
    pub fn push(&mut self, bytes: &[u8], now: Instant) -> Vec<Frame> {
        let mut frames = self.idle(now).into_iter().collect::<Vec<_>>();
        for &byte in bytes {
            let was_after_cr = std::mem::take(&mut self.after_cr);
            if byte == b'\n' && was_after_cr {
                continue; // the LF of a CR LF
            }
            if byte == b'\r' && self.options.terminator == Terminator::Lf {
                continue; // CR before the LF terminator
            }
            if self.options.terminator.ends_frame(byte) {
                self.after_cr = byte == b'\r';
                frames.extend(self.finish());
                continue;
            }
            if self.overlong {
                continue;
            }
            if self.buffer.len() >= self.options.max_length {
                self.overlong = true;
                self.buffer.clear();
                continue;
            }
            self.buffer.push(byte);
        }
        if !bytes.is_empty() {
            self.last_byte = Some(now);
        }
        frames
    }

    /// The frame the idle gap ends at `now`, if any.
    pub fn idle(&mut self, now: Instant) -> Option<Frame> {
        let last = self.last_byte?;
        if now.duration_since(last) < self.options.idle_gap {
            return None;
        }
        self.last_byte = None;
        self.after_cr = false;
        self.finish()
    }

    /// When the pending frame's idle gap runs out (for the reader's wait), if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        if self.buffer.is_empty() && !self.overlong {
            return None;
        }
        self.last_byte.map(|t| t + self.options.idle_gap)
    }

    fn finish(&mut self) -> Option<Frame> {
        let bytes = std::mem::take(&mut self.buffer);
        if std::mem::take(&mut self.overlong) {
            return Some(Frame::Dropped(format!(
                "a code longer than {} bytes",
                self.options.max_length
            )));
        }
        if bytes.is_empty() {
            return None;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            return Some(Frame::Dropped(
                "bytes that are not UTF-8 text (is the baud rate right?)".to_string(),
            ));
        };
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Some(Frame::Dropped(format!(
                "a control character {:#04x} in the code (is the baud rate right?)",
                u32::from(c)
            )));
        }
        let code = if self.options.strip_aim {
            strip_aim(&text)
        } else {
            &text
        };
        if code.is_empty() {
            return None;
        }
        Some(Frame::Code(code.to_string()))
    }
}

/// Removes a leading AIM symbology identifier: `]`, a code letter, a modifier character.
pub fn strip_aim(text: &str) -> &str {
    let bytes = text.as_bytes();
    if bytes.len() >= 3
        && bytes[0] == b']'
        && bytes[1].is_ascii_alphabetic()
        && bytes[2].is_ascii_alphanumeric()
    {
        &text[3..]
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framer(terminator: Terminator, strip_aim: bool) -> Framer {
        Framer::new(FramingOptions {
            terminator,
            idle_gap: Duration::from_millis(200),
            max_length: 16,
            strip_aim,
        })
    }

    fn codes(frames: &[Frame]) -> Vec<&str> {
        frames
            .iter()
            .map(|f| match f {
                Frame::Code(c) => c.as_str(),
                Frame::Dropped(_) => "<dropped>",
            })
            .collect()
    }

    #[test]
    fn each_terminator_ends_a_frame_and_crlf_counts_once() {
        let t = Instant::now();
        let mut any = framer(Terminator::Any, false);
        assert_eq!(
            codes(&any.push(b"A1\rB2\nC3\r\nD4\r\n", t)),
            ["A1", "B2", "C3", "D4"]
        );
        let mut cr = framer(Terminator::Cr, false);
        assert_eq!(codes(&cr.push(b"A1\rB2\r", t)), ["A1", "B2"]);
        // A scanner sending CR LF to a `cr` config: the LF after the CR is no part of a code.
        assert_eq!(codes(&cr.push(b"A3\r\nB4\r\n", t)), ["A3", "B4"]);
        // Nothing pending after a terminator: no idle deadline.
        assert_eq!(cr.deadline(), None);
        let mut lf = framer(Terminator::Lf, false);
        assert_eq!(codes(&lf.push(b"A1\r\nB2\n", t)), ["A1", "B2"]);
        let mut crlf = framer(Terminator::CrLf, false);
        assert_eq!(codes(&crlf.push(b"A1\r\nB2\r\n", t)), ["A1", "B2"]);
    }

    #[test]
    fn a_frame_split_over_reads_is_one_code() {
        let t = Instant::now();
        let mut f = framer(Terminator::Any, false);
        assert!(f.push(b"BK-", t).is_empty());
        assert!(f.push(b"12", t + Duration::from_millis(50)).is_empty());
        assert_eq!(
            codes(&f.push(b"3\r", t + Duration::from_millis(90))),
            ["BK-123"]
        );
    }

    #[test]
    fn the_idle_gap_ends_a_frame_without_terminator() {
        let t = Instant::now();
        let mut f = framer(Terminator::None, false);
        assert!(f.push(b"BK-1", t).is_empty());
        assert_eq!(f.deadline(), Some(t + Duration::from_millis(200)));
        assert_eq!(f.idle(t + Duration::from_millis(199)), None);
        assert_eq!(
            f.idle(t + Duration::from_millis(200)),
            Some(Frame::Code("BK-1".into()))
        );
        assert_eq!(f.deadline(), None);
        // The next burst after the gap is the next code, also when it arrives first.
        assert!(f.push(b"BK-2", t + Duration::from_millis(300)).is_empty());
        assert_eq!(
            codes(&f.push(b"BK-3", t + Duration::from_millis(600))),
            ["BK-2"]
        );
    }

    #[test]
    fn an_aim_prefix_is_stripped_only_when_asked() {
        let t = Instant::now();
        let mut strip = framer(Terminator::Any, true);
        assert_eq!(codes(&strip.push(b"]Q1BK-1\r]C0123\r", t)), ["BK-1", "123"]);
        let mut keep = framer(Terminator::Any, false);
        assert_eq!(codes(&keep.push(b"]Q1BK-1\r", t)), ["]Q1BK-1"]);
        assert_eq!(strip_aim("]Q"), "]Q");
        assert_eq!(strip_aim("BK]Q1"), "BK]Q1");
    }

    #[test]
    fn garbage_and_overlong_frames_are_dropped_and_the_next_one_is_read() {
        let t = Instant::now();
        let mut f = framer(Terminator::Any, false);
        let frames = f.push(b"\xff\xfe\x00\rA\x07B\rOK-1\r", t);
        assert!(
            matches!(&frames[0], Frame::Dropped(r) if r.contains("UTF-8")),
            "{frames:?}"
        );
        assert!(
            matches!(&frames[1], Frame::Dropped(r) if r.contains("control")),
            "{frames:?}"
        );
        assert_eq!(frames[2], Frame::Code("OK-1".into()));
        let frames = f.push(b"0123456789ABCDEFGHIJ\rOK-2\r", t);
        assert!(
            matches!(&frames[0], Frame::Dropped(r) if r.contains("longer than 16")),
            "{frames:?}"
        );
        assert_eq!(frames[1], Frame::Code("OK-2".into()));
        // Exactly the maximum is fine.
        assert_eq!(
            codes(&f.push(b"0123456789ABCDEF\r", t)),
            ["0123456789ABCDEF"]
        );
    }

    #[test]
    fn empty_frames_are_not_codes() {
        let t = Instant::now();
        let mut f = framer(Terminator::Any, true);
        assert!(f.push(b"\r\n\r\n\n\r", t).is_empty());
        assert!(f.push(b"]Q1\r", t).is_empty());
    }
}
