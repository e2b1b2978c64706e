//! ISO 8601 durations (`PT30M`, `P7D`, `PT0.5S`), the only way durations are written in
//! Tributary's files: one unambiguous form instead of integers whose unit hides in the key.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration read from an ISO 8601 string; keeps the text it was written as, so that
/// messages and schemas show what the user wrote.
#[derive(Clone, PartialEq, Eq)]
pub struct IsoDuration {
    text: String,
    value: Duration,
}

/// The longest duration a file may give: 100 years. Every duration is added to or taken
/// from a date somewhere (a watermark minus `lookback`, a run's start plus `interval`),
/// and a date a million years away does not exist; nothing needs more than a century.
pub const MAX: Duration = Duration::from_secs(36_500 * 86_400);

impl IsoDuration {
    /// Parses `PnYnMnDTnHnMnS` / `PnW`. Years and months are refused: their length varies;
    /// so is anything longer than [`MAX`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let parsed = iso8601::duration(text).map_err(|_| {
            format!("`{text}` is not an ISO 8601 duration (e.g. PT30M, P7D, PT0.5S)")
        })?;
        if let iso8601::Duration::YMDHMS { year, month, .. } = parsed
            && (year != 0 || month != 0)
        {
            return Err(format!(
                "`{text}`: years and months have no fixed length; use days (P30D)"
            ));
        }
        let value = Duration::from(parsed);
        if value > MAX {
            return Err(format!(
                "`{text}` is longer than P36500D (100 years), the longest duration a file may give"
            ));
        }
        Ok(Self {
            text: text.to_string(),
            value,
        })
    }

    /// The duration as a `std::time::Duration`.
    pub fn get(&self) -> Duration {
        self.value
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for IsoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for IsoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for IsoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        IsoDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for IsoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl JsonSchema for IsoDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IsoDuration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An ISO 8601 duration such as PT30M, P7D or PT0.5S.",
            "pattern": "^P(?:\\d+W|(?:\\d+D)?(?:T(?:\\d+H)?(?:\\d+M)?(?:\\d+(?:[.,]\\d+)?S)?)?)$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_used_in_files() {
        assert_eq!(
            IsoDuration::parse("PT30M").unwrap().get(),
            Duration::from_secs(1800)
        );
        assert_eq!(
            IsoDuration::parse("P7D").unwrap().get(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(
            IsoDuration::parse("PT0.5S").unwrap().get(),
            Duration::from_millis(500)
        );
        assert!(IsoDuration::parse("30m").is_err());
        assert_eq!(IsoDuration::parse("P36500D").unwrap().get(), MAX);
        assert_eq!(
            IsoDuration::parse("P100000000D").unwrap_err(),
            "`P100000000D` is longer than P36500D (100 years), the longest duration a file may give"
        );
        assert!(IsoDuration::parse("P1M").is_err());
    }
}
