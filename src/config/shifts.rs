//! `[[shifts]]`: weekly windows in local wall-clock time for roles' `shift_id` (DoorFlow's v3
//! API does not publish shifts), parsed from `HH:MM` and day names into `snapshot::Shift`.

use crate::snapshot::{Shift, ShiftWindow, DAY_S};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftConfig {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    pub times: Vec<ShiftTimeConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftTimeConfig {
    /// Days this window starts on: `mon`..`sun` (or the full names).
    pub days: Vec<String>,
    /// Local wall-clock `HH:MM`.
    pub start: String,
    /// Local wall-clock `HH:MM`; `24:00` for midnight; earlier than `start` runs past midnight.
    pub end: String,
}

impl ShiftConfig {
    /// The shift as the decision uses it, or which `times` entry and field is wrong (index,
    /// field name, message).
    pub fn to_shift(&self) -> Result<Shift, (usize, &'static str, String)> {
        let config = self;
        let mut windows = Vec::new();
        if config.times.is_empty() {
            return Err((0, "days", "a shift needs at least one time window".into()));
        }
        for (index, time) in config.times.iter().enumerate() {
            let start_s = parse_clock(&time.start).map_err(|m| (index, "start", m))?;
            let end_s = parse_clock(&time.end).map_err(|m| (index, "end", m))?;
            if start_s == DAY_S {
                return Err((index, "start", "24:00 is only valid as an end".into()));
            }
            if start_s == end_s {
                return Err((
                    index,
                    "end",
                    format!("`{}` equals start; the window would be empty", time.end),
                ));
            }
            if time.days.is_empty() {
                return Err((index, "days", "must list at least one day (mon..sun)".into()));
            }
            for day in &time.days {
                let day = parse_day(day).ok_or_else(|| {
                    (
                        index,
                        "days",
                        format!("`{day}` is not a day; use mon, tue, wed, thu, fri, sat or sun"),
                    )
                })?;
                windows.push(ShiftWindow { day, start_s, end_s });
            }
        }
        Ok(Shift {
            id: config.id,
            windows,
        })
    }
}

fn parse_clock(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a time of day as HH:MM (00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60)
}

fn parse_day(text: &str) -> Option<u8> {
    const DAYS: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let lower = text.to_ascii_lowercase();
    DAYS.iter()
        .position(|full| lower == *full || (lower.len() == 3 && full.starts_with(&lower)))
        .map(|i| i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::DateTime;

    fn shift(times: &[(&[&str], &str, &str)]) -> Result<Shift, (usize, &'static str, String)> {
        ShiftConfig {
            id: 1,
            name: String::new(),
            times: times
                .iter()
                .map(|(days, start, end)| ShiftTimeConfig {
                    days: days.iter().map(|d| d.to_string()).collect(),
                    start: start.to_string(),
                    end: end.to_string(),
                })
                .collect(),
        }
        .to_shift()
    }

    fn at(text: &str) -> DateTime {
        text.parse().unwrap()
    }

    #[test]
    fn day_window_is_half_open() {
        let s = shift(&[(&["mon", "tue"], "09:00", "17:00")]).unwrap();
        // 2026-11-23 is a Monday.
        assert!(!s.contains(at("2026-11-23T08:59:59")));
        assert!(s.contains(at("2026-11-23T09:00:00")));
        assert!(s.contains(at("2026-11-24T16:59:59")));
        assert!(!s.contains(at("2026-11-24T17:00:00")));
        assert!(!s.contains(at("2026-11-25T12:00:00")));
    }

    #[test]
    fn overnight_window_runs_into_the_next_day() {
        let s = shift(&[(&["fri"], "22:00", "06:00")]).unwrap();
        assert!(s.contains(at("2026-11-27T23:00:00")));
        assert!(s.contains(at("2026-11-28T05:59:00")));
        assert!(!s.contains(at("2026-11-28T06:00:00")));
        assert!(!s.contains(at("2026-11-27T06:00:00")));
        assert!(!s.contains(at("2026-11-26T23:00:00")));
    }

    #[test]
    fn end_of_day_is_24_00() {
        let s = shift(&[(&["sunday"], "00:00", "24:00")]).unwrap();
        assert!(s.contains(at("2026-11-29T23:59:59")));
        assert!(!s.contains(at("2026-11-30T00:00:00")));
    }

    #[test]
    fn bad_shift_config_names_the_field() {
        assert_eq!(shift(&[(&["mon"], "9:00", "17:00")]).unwrap_err().1, "start");
        assert_eq!(shift(&[(&["mon"], "09:00", "24:01")]).unwrap_err().1, "end");
        assert_eq!(shift(&[(&["mon"], "09:00", "09:00")]).unwrap_err().1, "end");
        assert_eq!(shift(&[(&["funday"], "09:00", "10:00")]).unwrap_err().1, "days");
        let err = shift(&[(&["mon"], "08:00", "09:00"), (&[], "09:00", "10:00")]).unwrap_err();
        assert_eq!((err.0, err.1), (1, "days"));
    }

    #[test]
    fn day_names_short_and_long() {
        for (name, index) in [
            ("mon", 0),
            ("Monday", 0),
            ("wednesday", 2),
            ("SAT", 5),
            ("sun", 6),
        ] {
            assert_eq!(parse_day(name), Some(index), "{name}");
        }
        for name in ["mo", "mond", "xyz", ""] {
            assert_eq!(parse_day(name), None, "{name}");
        }
    }
}
