//! Time formats of the spec language: how a service writes timestamps in its records and
//! how it wants `since` written in a request.
//!
//! Shared by `template` (the `format_time` helper), `plan` (compiled field and sync
//! settings) and the engine (reading record timestamps). Pure conversions: never reads the
//! clock, the environment or files.

use chrono::format::{Parsed, StrftimeItems};
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

/// A timestamp format named in a connector spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TimeFormat {
    /// `2024-05-01T10:00:00Z` (RFC 3339; the default).
    Rfc3339,
    /// `Wed, 01 May 2024 10:00:00 +0000`.
    Rfc2822,
    /// `Wed, 01 May 2024 10:00:00 GMT` (HTTP `If-Modified-Since`).
    HttpDate,
    /// Seconds since 1970 (a JSON number).
    UnixSeconds,
    /// Milliseconds since 1970 (a JSON number; HubSpot).
    UnixMillis,
    /// `2024-05-01`.
    Date,
    /// A chrono `strftime` format such as `%Y-%m-%d %H:%M:%S`.
    Strftime(String),
}

impl TimeFormat {
    /// The names a spec may use, for messages.
    pub const NAMES: &'static [&'static str] = &[
        "rfc3339",
        "rfc2822",
        "http_date",
        "unix_seconds",
        "unix_millis",
        "date",
    ];

    /// Reads a format name, or a `strftime` pattern (anything containing `%`).
    ///
    /// # Errors
    /// A message naming the accepted forms.
    pub fn parse(text: &str) -> Result<TimeFormat, String> {
        Ok(match text {
            "rfc3339" => TimeFormat::Rfc3339,
            "rfc2822" => TimeFormat::Rfc2822,
            "http_date" => TimeFormat::HttpDate,
            "unix_seconds" => TimeFormat::UnixSeconds,
            "unix_millis" => TimeFormat::UnixMillis,
            "date" => TimeFormat::Date,
            other if other.contains('%') => {
                let probe = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).single();
                let ok = probe.is_some_and(|dt| {
                    use std::fmt::Write;
                    let mut out = String::new();
                    write!(out, "{}", dt.format(other)).is_ok()
                });
                if !ok {
                    return Err(format!("invalid strftime format `{other}`"));
                }
                TimeFormat::Strftime(other.to_string())
            }
            other => {
                return Err(format!(
                    "unknown time format `{other}` (known: {}, or a strftime pattern with %)",
                    Self::NAMES.join(", ")
                ));
            }
        })
    }

    /// Writes `instant` in this format, in `zone` where the format shows a zone-local
    /// time. Unix formats give JSON numbers, the others strings.
    pub fn format(&self, instant: DateTime<Utc>, zone: FixedOffset) -> Value {
        let local = instant.with_timezone(&zone);
        match self {
            TimeFormat::Rfc3339 => {
                Value::String(instant.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            // chrono's `to_rfc2822` panics outside the years 0 to 9999 (a `since` from an
            // absurd watermark, a `format_time` of a service's value): such a year is
            // written in the same shape, with its sign, instead.
            TimeFormat::Rfc2822 if (0..=9999).contains(&local.year()) => {
                Value::String(local.to_rfc2822())
            }
            TimeFormat::Rfc2822 => {
                Value::String(local.format("%a, %d %b %Y %H:%M:%S %z").to_string())
            }
            TimeFormat::HttpDate => {
                Value::String(instant.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
            }
            TimeFormat::UnixSeconds => Value::from(instant.timestamp()),
            TimeFormat::UnixMillis => Value::from(instant.timestamp_millis()),
            TimeFormat::Date => Value::String(local.format("%Y-%m-%d").to_string()),
            TimeFormat::Strftime(pattern) => {
                // `to_string` would panic if the pattern cannot show this instant; the
                // pattern was checked when it was parsed, and RFC 3339 stands in otherwise.
                use std::fmt::Write as _;
                let mut text = String::new();
                if write!(text, "{}", local.format(pattern)).is_err() {
                    text = instant.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                }
                Value::String(text)
            }
        }
    }

    /// Reads a record's timestamp written in this format; `zone` is assumed when the text
    /// carries none. Lenient where services are: RFC 3339 also accepts a space instead of
    /// `T` and a missing zone; unix formats accept numbers or numeric strings.
    pub fn read(&self, value: &Value, zone: FixedOffset) -> Option<DateTime<Utc>> {
        match self {
            TimeFormat::UnixSeconds => {
                let n = number_of(value)?;
                let millis = (n * 1000.0).round() as i64;
                Utc.timestamp_millis_opt(millis).single()
            }
            TimeFormat::UnixMillis => {
                let n = number_of(value)?;
                Utc.timestamp_millis_opt(n.round() as i64).single()
            }
            _ => {
                let text = value.as_str()?.trim();
                if text.is_empty() {
                    return None;
                }
                self.read_text(text, zone)
            }
        }
    }

    fn read_text(&self, text: &str, zone: FixedOffset) -> Option<DateTime<Utc>> {
        let local = |naive: NaiveDateTime| {
            zone.from_local_datetime(&naive)
                .single()
                .map(|dt| dt.with_timezone(&Utc))
        };
        match self {
            TimeFormat::Rfc3339 => {
                if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
                    return Some(dt.with_timezone(&Utc));
                }
                // Offsets without a colon (`+0000`: Salesforce, Nimble, Tactile).
                for pattern in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
                    if let Ok(dt) = DateTime::parse_from_str(text, pattern) {
                        return Some(dt.with_timezone(&Utc));
                    }
                }
                let spaced = text.replacen(' ', "T", 1);
                if let Ok(dt) = DateTime::parse_from_rfc3339(&spaced) {
                    return Some(dt.with_timezone(&Utc));
                }
                for pattern in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
                    if let Ok(naive) = NaiveDateTime::parse_from_str(&spaced, pattern) {
                        return local(naive);
                    }
                }
                NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .and_then(local)
            }
            TimeFormat::Rfc2822 | TimeFormat::HttpDate => DateTime::parse_from_rfc2822(text)
                .ok()
                .map(|dt| dt.with_timezone(&Utc)),
            TimeFormat::Date => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .and_then(local),
            TimeFormat::Strftime(pattern) => {
                // `parse_from_str` of `DateTime`, `NaiveDateTime` and `NaiveDate` each run
                // this same parse and then convert: parse once (it is most of the cost,
                // and it runs per record), then try the three conversions in that order.
                let mut parsed = Parsed::new();
                chrono::format::parse(&mut parsed, text, StrftimeItems::new(pattern)).ok()?;
                if let Ok(dt) = parsed.to_datetime() {
                    return Some(dt.with_timezone(&Utc));
                }
                if let Ok(naive) = parsed.to_naive_datetime_with_offset(0) {
                    return local(naive);
                }
                parsed
                    .to_naive_date()
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .and_then(local)
            }
            TimeFormat::UnixSeconds | TimeFormat::UnixMillis => None,
        }
    }
}

fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// Reads a zone written as `UTC`, `Z` or an offset such as `+02:00`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_zone(text: &str) -> Result<FixedOffset, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" || t.eq_ignore_ascii_case("gmt") {
        return Ok(FixedOffset::east_opt(0).expect("zero offset is valid"));
    }
    let bad = || format!("invalid timezone `{text}` (expected UTC or an offset like +02:00)");
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).unwrap()
    }

    #[test]
    fn formats_since_in_each_outgoing_form() {
        let t = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap();
        assert_eq!(
            TimeFormat::Rfc3339.format(t, utc()),
            json!("2024-05-01T10:00:00Z")
        );
        assert_eq!(
            TimeFormat::UnixMillis.format(t, utc()),
            json!(1714557600000i64)
        );
        assert_eq!(
            TimeFormat::HttpDate.format(t, utc()),
            json!("Wed, 01 May 2024 10:00:00 GMT")
        );
        assert_eq!(TimeFormat::Date.format(t, utc()), json!("2024-05-01"));
        let f = TimeFormat::parse("%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(f.format(t, utc()), json!("2024-05-01 10:00:00"));
    }

    #[test]
    fn reads_record_timestamps_with_an_assumed_zone() {
        let plus2 = parse_zone("+02:00").unwrap();
        let expected = Utc.with_ymd_and_hms(2024, 5, 1, 8, 0, 0).unwrap();
        assert_eq!(
            TimeFormat::Rfc3339.read(&json!("2024-05-01 10:00:00"), plus2),
            Some(expected)
        );
        assert_eq!(
            TimeFormat::Rfc3339.read(&json!("2024-05-01T08:00:00Z"), plus2),
            Some(expected)
        );
        assert_eq!(
            TimeFormat::UnixSeconds.read(&json!(1714550400), utc()),
            Some(expected)
        );
        assert_eq!(
            TimeFormat::UnixMillis.read(&json!("1714550400000"), utc()),
            Some(expected)
        );
        assert_eq!(
            TimeFormat::Rfc3339.read(&json!("2024-05-01T10:00:00.000+0200"), utc()),
            Some(expected)
        );
        // Salesforce, Nimble and Tactile write offsets without a colon.
        assert_eq!(
            TimeFormat::Rfc3339.read(&json!("2024-05-01T08:00:00.000+0000"), plus2),
            Some(expected)
        );
        assert_eq!(
            TimeFormat::Rfc3339.read(&json!("2024-05-01 08:00:00+0000"), plus2),
            Some(expected)
        );
        assert_eq!(TimeFormat::Rfc3339.read(&json!(""), utc()), None);
        assert!(TimeFormat::parse("iso").is_err());
        assert!(parse_zone("Europe/Paris").is_err());
    }

    /// The three `parse_from_str` calls that `read` used to make, one after the other.
    fn strftime_reference(text: &str, pattern: &str, zone: FixedOffset) -> Option<DateTime<Utc>> {
        let local = |naive: NaiveDateTime| {
            zone.from_local_datetime(&naive)
                .single()
                .map(|dt| dt.with_timezone(&Utc))
        };
        if let Ok(dt) = DateTime::parse_from_str(text, pattern) {
            return Some(dt.with_timezone(&Utc));
        }
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, pattern) {
            return local(naive);
        }
        NaiveDate::parse_from_str(text, pattern)
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(local)
    }

    #[test]
    fn strftime_reads_as_the_three_parses_did() {
        let zones = [utc(), FixedOffset::east_opt(2 * 3600).unwrap()];
        let patterns = [
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d",
            "%Y-%m-%dT%H:%M:%S%z",
            "%Y-%m-%d %H:%M",
            "%d/%m/%Y %H:%M:%S%.f",
            "%s",
        ];
        let texts = [
            "2024-05-01 10:00:00",
            "2024-05-01",
            "2024-05-01T10:00:00+0200",
            "2024-05-01 10:00",
            "01/05/2024 10:00:00.250",
            "1714557600",
            "2024-02-30 10:00:00",
            "2024-05-01 25:00:00",
            "nonsense",
            "2024-05-01 10:00:00 extra",
        ];
        for zone in zones {
            for pattern in patterns {
                let format = TimeFormat::parse(pattern).unwrap();
                for text in texts {
                    assert_eq!(
                        format.read(&json!(text), zone),
                        strftime_reference(text, pattern, zone),
                        "{text} as {pattern}"
                    );
                }
            }
        }
    }

    #[test]
    fn years_beyond_four_digits_are_written_without_panicking() {
        let far = Utc.with_ymd_and_hms(12_345, 6, 7, 8, 9, 10).unwrap();
        assert_eq!(
            TimeFormat::Rfc2822.format(far, utc()),
            json!("Thu, 07 Jun +12345 08:09:10 +0000")
        );
        let before = Utc.with_ymd_and_hms(-44, 3, 15, 12, 0, 0).unwrap();
        assert!(TimeFormat::Rfc2822.format(before, utc()).is_string());
    }
}
