//! Reader feedback: what a reader shows and sounds when a door grants or denies, as a pure
//! pattern each reader kind renders its own way (OSDP `osdp_LED`/`osdp_BUZ` commands here; a
//! Wiegand reader's LED and beeper input lines can play the same pattern from `timeline()`).
//!
//! Config (per reader, every key optional; what is left out keeps the outcome's default):
//!
//! ```toml
//! [doors.reader.feedback]
//! grant = { led = "green", led_ms = 2000, beeps = 1, beep_ms = 200 }
//! deny = { led = "red", led_ms = 2000, beeps = 2, beep_ms = 200 }
//! ```

use serde::{Deserialize, Serialize};

/// LED colours every OSDP reader with a multi-colour LED understands (OSDP v2.2 table 19) and a
/// Wiegand reader's LED line can approximate (green = line driven, anything else = released).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedColor {
    Red,
    Green,
    Amber,
    Blue,
}

/// A grant or a denial, the two outcomes a reader signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Granted,
    Denied,
}

/// One outcome's signal: an LED colour held for a while and a number of beeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FeedbackPattern {
    /// Colour to show; `None` leaves the LED as the reader has it.
    pub led: Option<LedColor>,
    /// How long the colour shows (ms); then the reader returns to its own idle state.
    pub led_ms: u32,
    /// Number of beeps; 0 is silent.
    pub beeps: u8,
    /// Length of each beep and of the pause after it (ms).
    pub beep_ms: u32,
}

/// One change in a pattern, `at_ms` after the pattern starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackStep {
    pub at_ms: u32,
    pub change: FeedbackChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackChange {
    /// Show this colour; `None` returns the LED to the reader's idle state.
    Led(Option<LedColor>),
    /// Beeper on (`true`) or off.
    Beeper(bool),
}

impl FeedbackPattern {
    /// The default for an outcome: green and one 200 ms beep on a grant, red and two 200 ms
    /// beeps on a denial, the LED held for 2 s. (The convention of most readers out of the box.)
    pub const fn default_for(outcome: Outcome) -> FeedbackPattern {
        match outcome {
            Outcome::Granted => FeedbackPattern {
                led: Some(LedColor::Green),
                led_ms: 2000,
                beeps: 1,
                beep_ms: 200,
            },
            Outcome::Denied => FeedbackPattern {
                led: Some(LedColor::Red),
                led_ms: 2000,
                beeps: 2,
                beep_ms: 200,
            },
        }
    }

    /// The pattern as timed changes, in order, for outputs driven step by step (GPIO lines).
    /// Every change is undone by the end: the LED returns to idle and the beeper is off.
    pub fn timeline(&self) -> Vec<FeedbackStep> {
        let mut steps = Vec::new();
        if let Some(color) = self.led {
            steps.push(FeedbackStep {
                at_ms: 0,
                change: FeedbackChange::Led(Some(color)),
            });
            steps.push(FeedbackStep {
                at_ms: self.led_ms,
                change: FeedbackChange::Led(None),
            });
        }
        for beep in 0..u32::from(self.beeps) {
            let start = beep * 2 * self.beep_ms;
            steps.push(FeedbackStep {
                at_ms: start,
                change: FeedbackChange::Beeper(true),
            });
            steps.push(FeedbackStep {
                at_ms: start + self.beep_ms,
                change: FeedbackChange::Beeper(false),
            });
        }
        // Stable: at equal times the LED change stays ahead of the beeper change.
        steps.sort_by_key(|step| step.at_ms);
        steps
    }

    /// Problems with the values, as (field, message), for config validation.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.led.is_some() && !(100..=60_000).contains(&self.led_ms) {
            problems.push((
                "led_ms",
                format!("{} is out of range (100 to 60000)", self.led_ms),
            ));
        }
        if self.beeps > 10 {
            problems.push(("beeps", format!("{} is out of range (0 to 10)", self.beeps)));
        }
        if self.beeps > 0 && !(100..=2_000).contains(&self.beep_ms) {
            problems.push((
                "beep_ms",
                format!("{} is out of range (100 to 2000)", self.beep_ms),
            ));
        }
        problems
    }
}

/// A reader's feedback for both outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FeedbackConfig", into = "FeedbackConfig")]
pub struct ReaderFeedback {
    pub grant: FeedbackPattern,
    pub deny: FeedbackPattern,
}

impl ReaderFeedback {
    pub fn pattern(&self, outcome: Outcome) -> &FeedbackPattern {
        match outcome {
            Outcome::Granted => &self.grant,
            Outcome::Denied => &self.deny,
        }
    }

    /// Problems with both patterns, as (field under `feedback.`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        [("grant", &self.grant), ("deny", &self.deny)]
            .into_iter()
            .flat_map(|(outcome, pattern)| {
                pattern
                    .problems()
                    .into_iter()
                    .map(move |(field, message)| (format!("{outcome}.{field}"), message))
            })
            .collect()
    }
}

/// A pattern being played on outputs driven step by step (a Wiegand reader's LED and beeper
/// lines): which changes are due when. Pure: the caller brings the monotonic clock (ns) and
/// writes the changes.
#[derive(Debug, Clone, Default)]
pub struct Playback {
    steps: Vec<FeedbackStep>,
    started_ns: u64,
    next: usize,
}

impl Playback {
    /// Starts `pattern` at `now_ns`, cutting short whatever was playing: the LED back to idle
    /// and the beeper off first, then the changes due at once.
    pub fn start(&mut self, pattern: &FeedbackPattern, now_ns: u64) -> Vec<FeedbackChange> {
        *self = Playback {
            steps: pattern.timeline(),
            started_ns: now_ns,
            next: 0,
        };
        let mut changes = vec![FeedbackChange::Led(None), FeedbackChange::Beeper(false)];
        changes.extend(self.due(now_ns));
        changes
    }

    /// The changes due by `now_ns`, in order.
    pub fn due(&mut self, now_ns: u64) -> Vec<FeedbackChange> {
        let mut changes = Vec::new();
        while let Some(step) = self.steps.get(self.next) {
            if self.step_ns(step) > now_ns {
                break;
            }
            changes.push(step.change);
            self.next += 1;
        }
        changes
    }

    /// When the next change is due (CLOCK_MONOTONIC ns), while one is.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.steps.get(self.next).map(|step| self.step_ns(step))
    }

    fn step_ns(&self, step: &FeedbackStep) -> u64 {
        self.started_ns + u64::from(step.at_ms) * 1_000_000
    }
}

impl Default for ReaderFeedback {
    fn default() -> Self {
        FeedbackConfig::default().into()
    }
}

/// `led = "none"` turns the LED part of a pattern off; a colour sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LedSetting {
    None,
    Red,
    Green,
    Amber,
    Blue,
}

impl From<Option<LedColor>> for LedSetting {
    fn from(color: Option<LedColor>) -> Self {
        match color {
            None => LedSetting::None,
            Some(LedColor::Red) => LedSetting::Red,
            Some(LedColor::Green) => LedSetting::Green,
            Some(LedColor::Amber) => LedSetting::Amber,
            Some(LedColor::Blue) => LedSetting::Blue,
        }
    }
}

impl From<LedSetting> for Option<LedColor> {
    fn from(setting: LedSetting) -> Self {
        match setting {
            LedSetting::None => None,
            LedSetting::Red => Some(LedColor::Red),
            LedSetting::Green => Some(LedColor::Green),
            LedSetting::Amber => Some(LedColor::Amber),
            LedSetting::Blue => Some(LedColor::Blue),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternConfig {
    led: Option<LedSetting>,
    led_ms: Option<u32>,
    beeps: Option<u8>,
    beep_ms: Option<u32>,
}

impl PatternConfig {
    fn over(self, default: FeedbackPattern) -> FeedbackPattern {
        FeedbackPattern {
            led: self.led.map_or(default.led, Into::into),
            led_ms: self.led_ms.unwrap_or(default.led_ms),
            beeps: self.beeps.unwrap_or(default.beeps),
            beep_ms: self.beep_ms.unwrap_or(default.beep_ms),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackConfig {
    #[serde(default)]
    grant: PatternConfig,
    #[serde(default)]
    deny: PatternConfig,
}

impl From<FeedbackPattern> for PatternConfig {
    fn from(pattern: FeedbackPattern) -> Self {
        PatternConfig {
            led: Some(pattern.led.into()),
            led_ms: Some(pattern.led_ms),
            beeps: Some(pattern.beeps),
            beep_ms: Some(pattern.beep_ms),
        }
    }
}

impl From<ReaderFeedback> for FeedbackConfig {
    fn from(feedback: ReaderFeedback) -> Self {
        FeedbackConfig {
            grant: feedback.grant.into(),
            deny: feedback.deny.into(),
        }
    }
}

impl From<FeedbackConfig> for ReaderFeedback {
    fn from(config: FeedbackConfig) -> Self {
        ReaderFeedback {
            grant: config.grant.over(FeedbackPattern::default_for(Outcome::Granted)),
            deny: config.deny.over(FeedbackPattern::default_for(Outcome::Denied)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ReaderFeedback {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_green_one_beep_and_red_two_beeps() {
        let feedback = ReaderFeedback::default();
        assert_eq!(feedback.grant.led, Some(LedColor::Green));
        assert_eq!(feedback.grant.beeps, 1);
        assert_eq!(feedback.deny.led, Some(LedColor::Red));
        assert_eq!(feedback.deny.beeps, 2);
    }

    #[test]
    fn a_partial_pattern_keeps_the_outcomes_other_defaults() {
        let feedback = parse("deny = { led = \"amber\" }\ngrant = { beeps = 0, led = \"none\" }");
        assert_eq!(feedback.deny.led, Some(LedColor::Amber));
        assert_eq!(feedback.deny.beeps, 2, "deny keeps its two beeps");
        assert_eq!(feedback.grant.led, None);
        assert_eq!(feedback.grant.beeps, 0);
        assert_eq!(feedback.grant.led_ms, 2000);
    }

    #[test]
    fn unknown_keys_and_colours_are_refused() {
        assert!(toml::from_str::<ReaderFeedback>("grant = { colour = \"green\" }").is_err());
        assert!(toml::from_str::<ReaderFeedback>("grant = { led = \"purple\" }").is_err());
        assert!(toml::from_str::<ReaderFeedback>("accept = {}").is_err());
    }

    #[test]
    fn timeline_of_the_deny_default() {
        let steps = FeedbackPattern::default_for(Outcome::Denied).timeline();
        use FeedbackChange::*;
        let expected = [
            (0, Led(Some(LedColor::Red))),
            (0, Beeper(true)),
            (200, Beeper(false)),
            (400, Beeper(true)),
            (600, Beeper(false)),
            (2000, Led(None)),
        ];
        let got: Vec<(u32, FeedbackChange)> = steps.iter().map(|s| (s.at_ms, s.change)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn playback_gives_each_change_when_it_is_due() {
        use FeedbackChange::*;
        const MS: u64 = 1_000_000;
        let mut playback = Playback::default();
        assert_eq!(playback.deadline_ns(), None);
        let start = 1_000 * MS;
        let first = playback.start(&FeedbackPattern::default_for(Outcome::Denied), start);
        assert_eq!(
            first,
            [Led(None), Beeper(false), Led(Some(LedColor::Red)), Beeper(true)]
        );
        assert_eq!(playback.deadline_ns(), Some(start + 200 * MS));
        assert!(playback.due(start + 199 * MS).is_empty());
        assert_eq!(playback.due(start + 450 * MS), [Beeper(false), Beeper(true)]);
        assert_eq!(playback.due(start + 5_000 * MS), [Beeper(false), Led(None)]);
        assert_eq!(playback.deadline_ns(), None);
        // A grant cuts a denial short: idle first, then green.
        playback.start(&FeedbackPattern::default_for(Outcome::Denied), start);
        let cut = playback.start(&FeedbackPattern::default_for(Outcome::Granted), start + 100 * MS);
        assert_eq!(
            cut,
            [Led(None), Beeper(false), Led(Some(LedColor::Green)), Beeper(true)]
        );
    }

    #[test]
    fn a_silent_dark_pattern_has_no_steps() {
        let pattern = FeedbackPattern {
            led: None,
            led_ms: 2000,
            beeps: 0,
            beep_ms: 200,
        };
        assert!(pattern.timeline().is_empty());
        assert!(pattern.problems().is_empty());
    }

    #[test]
    fn out_of_range_values_are_named() {
        let pattern = FeedbackPattern {
            led: Some(LedColor::Green),
            led_ms: 50,
            beeps: 11,
            beep_ms: 5000,
        };
        let fields: Vec<&str> = pattern.problems().iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["led_ms", "beeps", "beep_ms"]);
    }
}
