//! Time at whole-second precision, and its RFC 5280 encodings.
//!
//! RFC 5280 §4.1.2.5: validity dates through 2049 are UTCTime, from 2050 GeneralizedTime, both
//! in Zulu with seconds and never with fractions. Every time the CA writes goes through
//! [`Timestamp`], which has no sub-second part by construction.
use core::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::DateTime;
use der::asn1::{GeneralizedTime, UtcTime};
use serde::{Deserialize, Serialize};
use x509_cert::time::Time;

/// Seconds since 1970-01-01T00:00:00Z.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The current time, truncated to the second.
    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self(since_epoch.as_secs())
    }

    pub const fn from_unix_seconds(seconds: u64) -> Self {
        Self(seconds)
    }

    pub const fn unix_seconds(self) -> u64 {
        self.0
    }

    pub fn from_date_time(date_time: DateTime) -> Self {
        Self(date_time.unix_duration().as_secs())
    }

    pub fn to_date_time(self) -> Result<DateTime, der::Error> {
        DateTime::from_unix_duration(Duration::from_secs(self.0))
    }

    /// The same calendar date and time `years` later; 29 February becomes 28 February.
    pub fn plus_years(self, years: u16) -> Result<Self, der::Error> {
        let t = self.to_date_time()?;
        let year = t.year() + years;
        let leap =
            (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
        let day = if t.month() == 2 && t.day() == 29 && !leap {
            28
        } else {
            t.day()
        };
        let shifted = DateTime::new(year, t.month(), day, t.hour(), t.minutes(), t.seconds())?;
        Ok(Self::from_date_time(shifted))
    }

    pub const fn plus_seconds(self, seconds: u64) -> Self {
        Self(self.0.saturating_add(seconds))
    }

    pub const fn minus_seconds(self, seconds: u64) -> Self {
        Self(self.0.saturating_sub(seconds))
    }

    /// RFC 5280 §4.1.2.5 encoding: UTCTime through 2049, GeneralizedTime from 2050.
    pub fn to_x509_time(self) -> Result<Time, der::Error> {
        let date_time = self.to_date_time()?;
        if date_time.year() < 2050 {
            Ok(Time::UtcTime(UtcTime::from_date_time(date_time)?))
        } else {
            Ok(Time::GeneralTime(GeneralizedTime::from_date_time(
                date_time,
            )))
        }
    }

    /// GeneralizedTime, as OCSP and the invalidityDate and ExpiredCertsOnCRL extensions use.
    pub fn to_generalized_time(self) -> Result<GeneralizedTime, der::Error> {
        Ok(GeneralizedTime::from_date_time(self.to_date_time()?))
    }

    pub fn from_x509_time(time: &Time) -> Self {
        Self(time.to_unix_duration().as_secs())
    }

    /// Parses an RFC 3339 time in Zulu with whole seconds, e.g. `2030-12-31T23:59:59Z`.
    pub fn parse_rfc3339(text: &str) -> Result<Self, der::Error> {
        text.parse::<DateTime>().map(Self::from_date_time)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339, e.g. `2026-11-25T10:00:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_date_time() {
            Ok(t) => write!(f, "{t}"),
            Err(_) => write!(f, "@{}", self.0),
        }
    }
}

/// The source of "now". The CA takes it as a parameter so that tests can pin the date.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that always says the same time (tests, benchmarks).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;

    #[test]
    fn utc_time_before_2050_generalized_after() {
        let t = Timestamp::parse_rfc3339("2049-12-31T23:59:59Z").unwrap();
        assert_eq!(t.to_x509_time().unwrap().to_der().unwrap()[0], 0x17);
        let t = Timestamp::parse_rfc3339("2050-01-01T00:00:00Z").unwrap();
        let der = t.to_x509_time().unwrap().to_der().unwrap();
        assert_eq!(der[0], 0x18);
        assert_eq!(&der[2..], b"20500101000000Z");
    }

    #[test]
    fn plus_years_keeps_the_calendar_date() {
        let t = Timestamp::parse_rfc3339("2026-11-25T10:20:30Z").unwrap();
        assert_eq!(t.plus_years(3).unwrap().to_string(), "2029-11-25T10:20:30Z");
        let leap = Timestamp::parse_rfc3339("2028-02-29T00:00:00Z").unwrap();
        assert_eq!(
            leap.plus_years(3).unwrap().to_string(),
            "2031-02-28T00:00:00Z"
        );
        assert_eq!(
            leap.plus_years(4).unwrap().to_string(),
            "2032-02-29T00:00:00Z"
        );
    }
}
