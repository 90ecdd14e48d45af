//! A Wiegand reader's LED and beeper inputs, driven by the door task after a decision: each
//! outcome's `FeedbackPattern` played step by step on whichever of the two lines are wired.
//!
//! The door task calls `FeedbackPlayer::signal` only after the relay has been written, and
//! `poll` at `deadline_ns`; every call is a line write or two (an ioctl on a GPIO character
//! device, or an in-memory change on the mock), never a wait. A write that fails is logged once
//! and never touches the decision or the relay.

use super::GpioError;
use crate::reader::feedback::{FeedbackChange, LedColor, Outcome, Playback, ReaderFeedback};

/// Drives one output line other than the relay (a Wiegand reader's LED or beeper input).
/// `active = true` drives the line (LED green, beeper sounding); the backend applies polarity.
pub trait OutputLine: Send {
    fn set_active(&mut self, active: bool) -> Result<(), GpioError>;
}

/// A Wiegand reader's feedback inputs, those that are wired.
#[derive(Default)]
pub struct FeedbackLines {
    pub led: Option<Box<dyn OutputLine>>,
    pub beeper: Option<Box<dyn OutputLine>>,
    /// What each line was last driven to, so a change that changes nothing writes nothing.
    written: [Option<bool>; 2],
}

impl FeedbackLines {
    /// The wired lines, as both backends hand them over: requested released (LED red, beeper
    /// quiet).
    pub fn new(led: Option<Box<dyn OutputLine>>, beeper: Option<Box<dyn OutputLine>>) -> FeedbackLines {
        let released = |line: &Option<Box<dyn OutputLine>>| line.as_ref().map(|_| false);
        FeedbackLines {
            written: [released(&led), released(&beeper)],
            led,
            beeper,
        }
    }

    pub fn is_wired(&self) -> bool {
        self.led.is_some() || self.beeper.is_some()
    }

    /// Applies one change of a feedback pattern. A Wiegand reader's LED input turns its LED
    /// from red (idle) to green while driven: green drives it, any other colour or idle
    /// releases it. A change for a line that is not wired does nothing.
    pub fn apply(&mut self, change: FeedbackChange) -> Result<(), GpioError> {
        let (line, slot, active) = match change {
            FeedbackChange::Led(color) => (&mut self.led, 0, color == Some(LedColor::Green)),
            FeedbackChange::Beeper(on) => (&mut self.beeper, 1, on),
        };
        let Some(line) = line else { return Ok(()) };
        if self.written[slot] == Some(active) {
            return Ok(());
        }
        self.written[slot] = None; // unknown until the write succeeds
        line.set_active(active)?;
        self.written[slot] = Some(active);
        Ok(())
    }
}

/// Plays grant and deny patterns on a reader's feedback lines.
pub struct FeedbackPlayer {
    door: String,
    lines: FeedbackLines,
    patterns: ReaderFeedback,
    playback: Playback,
    failed: bool,
}

impl FeedbackPlayer {
    /// A player for `lines`; `None` when neither line is wired.
    pub fn new(door: &str, lines: FeedbackLines, patterns: ReaderFeedback) -> Option<FeedbackPlayer> {
        lines.is_wired().then(|| FeedbackPlayer {
            door: door.to_string(),
            lines,
            patterns,
            playback: Playback::default(),
            failed: false,
        })
    }

    /// Starts the outcome's pattern at `now_ns` (CLOCK_MONOTONIC), cutting short one playing.
    pub fn signal(&mut self, outcome: Outcome, now_ns: u64) {
        let changes = self.playback.start(self.patterns.pattern(outcome), now_ns);
        self.write(changes);
    }

    /// When the next step is due.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.playback.deadline_ns()
    }

    /// Plays the steps due by `now_ns`.
    pub fn poll(&mut self, now_ns: u64) {
        let changes = self.playback.due(now_ns);
        self.write(changes);
    }

    /// Both lines released (the door is stopping).
    pub fn idle(&mut self) {
        self.playback = Playback::default();
        self.write(vec![FeedbackChange::Led(None), FeedbackChange::Beeper(false)]);
    }

    fn write(&mut self, changes: Vec<FeedbackChange>) {
        for change in changes {
            match self.lines.apply(change) {
                Ok(()) => self.failed = false,
                Err(error) => {
                    if !self.failed {
                        tracing::warn!(door = %self.door, %error, "reader feedback line write failed");
                    }
                    self.failed = true;
                }
            }
        }
    }
}
