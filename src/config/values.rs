//! Config values that are checked while the file is read. A key's type carries its range and its
//! default, so each key is declared in one place, e.g. `pub admit_ttl_s: Ranged<1, 3600, 120>`;
//! a value out of range is refused by the parser with the key's path and line.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A whole number in `MIN..=MAX`, `DEFAULT` when the key is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Ranged<const MIN: u64, const MAX: u64, const DEFAULT: u64>(u64);

impl<const MIN: u64, const MAX: u64, const DEFAULT: u64> Ranged<MIN, MAX, DEFAULT> {
    /// A value set in code (tests, benchmarks). Panics when out of range, at compile time when
    /// used in a constant.
    pub const fn new(value: u64) -> Self {
        assert!(value >= MIN && value <= MAX, "config value out of range");
        Ranged(value)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// As a duration in seconds (for keys named `*_s`).
    pub const fn secs(self) -> Duration {
        Duration::from_secs(self.0)
    }

    /// As a duration in milliseconds (for keys named `*_ms`).
    pub const fn millis(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl<const MIN: u64, const MAX: u64, const DEFAULT: u64> Default for Ranged<MIN, MAX, DEFAULT> {
    fn default() -> Self {
        Self::new(DEFAULT)
    }
}

impl<const MIN: u64, const MAX: u64, const DEFAULT: u64> TryFrom<u64> for Ranged<MIN, MAX, DEFAULT> {
    type Error = String;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        if (MIN..=MAX).contains(&value) {
            Ok(Ranged(value))
        } else {
            Err(format!("{value} is out of range ({MIN} to {MAX})"))
        }
    }
}

impl<const MIN: u64, const MAX: u64, const DEFAULT: u64> fmt::Display for Ranged<MIN, MAX, DEFAULT> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A duration written in seconds, fractions allowed (`unlock_s = 0.5`), in
/// `MIN_MS..=MAX_MS` milliseconds, `DEFAULT_MS` when the key is absent.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
pub struct Seconds<const MIN_MS: u64, const MAX_MS: u64, const DEFAULT_MS: u64>(f64);

impl<const MIN_MS: u64, const MAX_MS: u64, const DEFAULT_MS: u64> Seconds<MIN_MS, MAX_MS, DEFAULT_MS> {
    /// A value set in code. Panics when out of range.
    pub fn new(seconds: f64) -> Self {
        Self::try_from(seconds).expect("config value out of range")
    }

    pub fn get(self) -> f64 {
        self.0
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs_f64(self.0)
    }

    /// Nanoseconds, the unit of the door state machine's monotonic clock.
    pub fn as_nanos(self) -> u64 {
        self.duration().as_nanos() as u64
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64, const DEFAULT_MS: u64> Default
    for Seconds<MIN_MS, MAX_MS, DEFAULT_MS>
{
    fn default() -> Self {
        Seconds(DEFAULT_MS as f64 / 1000.0)
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64, const DEFAULT_MS: u64> TryFrom<f64>
    for Seconds<MIN_MS, MAX_MS, DEFAULT_MS>
{
    type Error = String;
    fn try_from(seconds: f64) -> Result<Self, Self::Error> {
        let (min, max) = (MIN_MS as f64 / 1000.0, MAX_MS as f64 / 1000.0);
        if (min..=max).contains(&seconds) {
            Ok(Seconds(seconds))
        } else {
            Err(format!("{seconds} is out of range ({min} to {max})"))
        }
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64, const DEFAULT_MS: u64> fmt::Display
    for Seconds<MIN_MS, MAX_MS, DEFAULT_MS>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Reads a `Ranged`: the message for a value of another kind says what the key takes ("a whole
/// number from 10 to 86400"), and a negative or huge number is out of range like any other,
/// rather than "invalid type: integer as i128, expected u64".
impl<'de, const MIN: u64, const MAX: u64, const DEFAULT: u64> Deserialize<'de> for Ranged<MIN, MAX, DEFAULT> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Whole<const MIN: u64, const MAX: u64>;
        impl<const MIN: u64, const MAX: u64> serde::de::Visitor<'_> for Whole<MIN, MAX> {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a whole number from {MIN} to {MAX}")
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<u64, E> {
                Ok(value)
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<u64, E> {
                u64::try_from(value)
                    .map_err(|_| E::custom(format!("{value} is out of range ({MIN} to {MAX})")))
            }
            fn visit_i128<E: serde::de::Error>(self, value: i128) -> Result<u64, E> {
                u64::try_from(value)
                    .map_err(|_| E::custom(format!("{value} is out of range ({MIN} to {MAX})")))
            }
            fn visit_u128<E: serde::de::Error>(self, value: u128) -> Result<u64, E> {
                u64::try_from(value)
                    .map_err(|_| E::custom(format!("{value} is out of range ({MIN} to {MAX})")))
            }
        }
        let value = deserializer.deserialize_u64(Whole::<MIN, MAX>)?;
        Ranged::try_from(value).map_err(serde::de::Error::custom)
    }
}

/// Reads a `Seconds` from an integer or a float; anything else is told what the key takes.
impl<'de, const MIN_MS: u64, const MAX_MS: u64, const DEFAULT_MS: u64> Deserialize<'de>
    for Seconds<MIN_MS, MAX_MS, DEFAULT_MS>
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Number<const MIN_MS: u64, const MAX_MS: u64>;
        impl<const MIN_MS: u64, const MAX_MS: u64> serde::de::Visitor<'_> for Number<MIN_MS, MAX_MS> {
            type Value = f64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let (min, max) = (MIN_MS as f64 / 1000.0, MAX_MS as f64 / 1000.0);
                write!(
                    f,
                    "a number of seconds from {min} to {max} (e.g. 3 or 0.5, without quotes)"
                )
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<f64, E> {
                Ok(value)
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<f64, E> {
                Ok(value as f64)
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<f64, E> {
                Ok(value as f64)
            }
        }
        let seconds = deserializer.deserialize_f64(Number::<MIN_MS, MAX_MS>)?;
        Seconds::try_from(seconds).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranged_values_are_checked_inclusively() {
        type Ttl = Ranged<1, 3600, 120>;
        assert_eq!(Ttl::default().get(), 120);
        assert_eq!(Ttl::try_from(1).unwrap().get(), 1);
        assert_eq!(Ttl::try_from(3600).unwrap().get(), 3600);
        assert_eq!(Ttl::try_from(0).unwrap_err(), "0 is out of range (1 to 3600)");
        assert!(Ttl::try_from(3601).is_err());
    }

    #[test]
    fn seconds_accept_fractions_within_range() {
        type Unlock = Seconds<100, 300_000, 5_000>;
        assert_eq!(Unlock::default().get(), 5.0);
        assert_eq!(Unlock::try_from(0.1).unwrap().as_nanos(), 100_000_000);
        assert_eq!(
            Unlock::try_from(900.0).unwrap_err(),
            "900 is out of range (0.1 to 300)"
        );
        assert!(Unlock::try_from(0.05).is_err());
        assert!(Unlock::try_from(f64::NAN).is_err());
    }
}
