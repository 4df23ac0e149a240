//! The event trace: off, printed as it happens (`--trace`), or captured (determinism tests).

use std::fmt::{self, Write as _};

use crate::options::TICK;

/// Where trace lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceMode {
    /// Nowhere (the default: formatting every event costs).
    Off,
    /// To standard output, as they happen.
    Print,
    /// Into a buffer returned with the run's report.
    Capture,
}

/// The trace of one run.
#[derive(Debug)]
pub struct Trace {
    mode: TraceMode,
    buffer: String,
}

impl Trace {
    /// A trace in `mode`.
    #[must_use]
    pub fn new(mode: TraceMode) -> Self {
        Self { mode, buffer: String::new() }
    }

    /// Whether lines are recorded (check before formatting one).
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.mode != TraceMode::Off
    }

    /// Records one line at virtual time `now`.
    pub fn line(&mut self, now: u64, args: fmt::Arguments<'_>) {
        let (ticks, rest) = (now / TICK, now % TICK);
        match self.mode {
            TraceMode::Off => {}
            TraceMode::Print => println!("[{ticks:>6}.{rest:03}] {args}"),
            TraceMode::Capture => {
                writeln!(self.buffer, "[{ticks:>6}.{rest:03}] {args}")
                    .expect("writing to a String cannot fail");
            }
        }
    }

    /// The captured lines.
    #[must_use]
    pub fn into_captured(self) -> String {
        self.buffer
    }
}
