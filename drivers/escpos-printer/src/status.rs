//! Real-time status: `DLE EOT n` (`10 04 n`) queries and their one-byte answers.
//!
//! The printer answers a real-time query as soon as it receives it, even while it is offline or
//! busy printing. Three queries are used:
//!
//! | query | answer bits |
//! |---|---|
//! | `10 04 01` printer status | bit 3 (`0x08`): offline |
//! | `10 04 02` offline cause | bit 2 (`0x04`): cover open; bit 5 (`0x20`): stopped by paper end; bit 6 (`0x40`): error |
//! | `10 04 04` roll paper sensor | bits 2+3 (`0x0C`): paper near end; bits 5+6 (`0x60`): paper end |
//!
//! Every valid answer has bit 1 and bit 4 set and bit 0 and bit 7 clear: `(b & 0x93) == 0x12`.
//! Anything else is not a status answer (noise, a wrong baud rate, another protocol).

use leitsystem_plugin::messages::Paper;

/// `DLE EOT`, the prefix of a real-time status query.
pub const DLE_EOT: [u8; 2] = [0x10, 0x04];

/// The three status queries the driver sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// `DLE EOT 1`: printer status (online/offline).
    Printer = 1,
    /// `DLE EOT 2`: offline cause (cover, paper end, error).
    OfflineCause = 2,
    /// `DLE EOT 4`: roll paper sensor (near end, end).
    Paper = 4,
}

impl Query {
    /// All queries, in the order the driver sends them.
    pub const ALL: [Query; 3] = [Query::Printer, Query::OfflineCause, Query::Paper];

    /// The bytes of the query: `10 04 n`.
    pub fn bytes(self) -> [u8; 3] {
        [DLE_EOT[0], DLE_EOT[1], self as u8]
    }
}

/// An answer byte that is not a status answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the printer sent 0x{byte:02X} instead of a status answer to DLE EOT {query} (check the baud rate)"
)]
pub struct InvalidAnswer {
    /// The query (1, 2 or 4).
    pub query: u8,
    /// The byte received.
    pub byte: u8,
}

/// Checks that `byte` is a valid answer to `query`: `(byte & 0x93) == 0x12`.
pub fn check_answer(query: Query, byte: u8) -> Result<u8, InvalidAnswer> {
    if byte & 0x93 == 0x12 {
        Ok(byte)
    } else {
        Err(InvalidAnswer {
            query: query as u8,
            byte,
        })
    }
}

/// What the three answers say about the printer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrinterState {
    /// Not offline (`DLE EOT 1`, bit 3 clear).
    pub online: bool,
    /// The cover is open (`DLE EOT 2`, bit 2).
    pub cover_open: bool,
    /// Paper level (`DLE EOT 4`, and `DLE EOT 2` bit 5 for a stop by paper end).
    pub paper: Paper,
    /// An error occurred (cutter jam, head overheated, ...; `DLE EOT 2`, bit 6).
    pub error: bool,
}

impl PrinterState {
    /// The state of a printer that reports nothing (profiles without status): assumed ready.
    pub const ASSUMED_READY: PrinterState = PrinterState {
        online: true,
        cover_open: false,
        paper: Paper::Ok,
        error: false,
    };

    /// Combines the answers to `DLE EOT 1`, `2` and `4`, checking each.
    pub fn from_answers(printer: u8, offline_cause: u8, paper: u8) -> Result<Self, InvalidAnswer> {
        let printer = check_answer(Query::Printer, printer)?;
        let cause = check_answer(Query::OfflineCause, offline_cause)?;
        let sensor = check_answer(Query::Paper, paper)?;
        let paper = if sensor & 0x60 != 0 || cause & 0x20 != 0 {
            Paper::Out
        } else if sensor & 0x0C != 0 {
            Paper::NearEnd
        } else {
            Paper::Ok
        };
        Ok(PrinterState {
            online: printer & 0x08 == 0,
            cover_open: cause & 0x04 != 0,
            paper,
            error: cause & 0x40 != 0,
        })
    }

    /// Can print now: online, cover closed, paper not out, no error (near end is fine).
    pub fn ready(&self) -> bool {
        self.failure_reason().is_none()
    }

    /// Why a job cannot print, most specific first: "cover open", "paper out", "printer error",
    /// "printer offline"; `None` when ready.
    pub fn failure_reason(&self) -> Option<&'static str> {
        if self.cover_open {
            Some("cover open")
        } else if self.paper == Paper::Out {
            Some("paper out")
        } else if self.error {
            Some("printer error")
        } else if !self.online {
            Some("printer offline")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_dle_eot_n() {
        assert_eq!(Query::Printer.bytes(), [0x10, 0x04, 0x01]);
        assert_eq!(Query::OfflineCause.bytes(), [0x10, 0x04, 0x02]);
        assert_eq!(Query::Paper.bytes(), [0x10, 0x04, 0x04]);
    }

    #[test]
    fn a_ready_printer() {
        let state = PrinterState::from_answers(0x12, 0x12, 0x12).expect("valid");
        assert_eq!(state, PrinterState::ASSUMED_READY);
        assert!(state.ready());
        assert_eq!(state.failure_reason(), None);
        // Bit 2 of DLE EOT 1 (drawer kick-out connector) and bit 3 of DLE EOT 2 (feed
        // button) mean nothing for readiness.
        assert!(
            PrinterState::from_answers(0x16, 0x1A, 0x12)
                .expect("valid")
                .ready()
        );
    }

    #[test]
    fn paper_near_end_still_prints() {
        for sensor in [0x1E, 0x16, 0x1A] {
            let state = PrinterState::from_answers(0x12, 0x12, sensor).expect("valid");
            assert_eq!(state.paper, Paper::NearEnd, "{sensor:#x}");
            assert!(state.ready());
        }
    }

    #[test]
    fn failures_name_their_cause() {
        let cases = [
            // Paper end: offline, stopped by paper end, sensor says end.
            ((0x1A, 0x32, 0x72), "paper out"),
            ((0x12, 0x12, 0x72), "paper out"),
            ((0x1A, 0x32, 0x12), "paper out"),
            // Cover open wins over the paper end it also causes.
            ((0x1A, 0x36, 0x72), "cover open"),
            ((0x1A, 0x16, 0x12), "cover open"),
            ((0x1A, 0x52, 0x12), "printer error"),
            ((0x1A, 0x12, 0x12), "printer offline"),
        ];
        for ((printer, cause, paper), reason) in cases {
            let state = PrinterState::from_answers(printer, cause, paper).expect("valid");
            assert_eq!(
                state.failure_reason(),
                Some(reason),
                "{printer:#x} {cause:#x} {paper:#x}"
            );
            assert!(!state.ready());
        }
        let state = PrinterState::from_answers(0x1A, 0x36, 0x72).expect("valid");
        assert!(!state.online && state.cover_open && state.paper == Paper::Out && !state.error);
    }

    #[test]
    fn bytes_that_are_no_status_answers_are_refused() {
        for byte in [0x00, 0xFF, 0x13, 0x92, 0x10, 0x02, 0x0A, 0x1B] {
            assert_eq!(
                check_answer(Query::Printer, byte),
                Err(InvalidAnswer { query: 1, byte })
            );
        }
        let err = PrinterState::from_answers(0x12, 0x12, 0x00).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "the printer sent 0x00 instead of a status answer to DLE EOT 4 (check the baud rate)"
        );
    }
}
