//! Whole numbers in request bodies as JSON Schema's `integer` (and the FastAPI predecessor)
//! take them: `30` and also `30.0`, a number with a zero fraction. serde's integers refuse the
//! second, which a client generated from the API description may well send.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// For `#[serde(default, deserialize_with = "whole_numbers::optional")]` on an `Option<u32>`,
/// `Option<u64>` …: null or missing is `None`; a fraction, a negative number or one too large for
/// the field is refused naming the value.
pub fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|n| n.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(n))
            .map(|n| n as u64)
    });
    whole
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            D::Error::custom(format!(
                "expected a whole number from 0 to {}, got {number}",
                largest::<T>()
            ))
        })
}

/// The largest value of `T` that a `u64` converts to.
fn largest<T: TryFrom<u64>>() -> u64 {
    [
        u64::MAX,
        u64::from(u32::MAX),
        u64::from(u16::MAX),
        u64::from(u8::MAX),
    ]
    .into_iter()
    .find(|n| T::try_from(*n).is_ok())
    .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "optional")]
        rounds: Option<u32>,
    }

    fn parse(json: &str) -> Result<Option<u32>, String> {
        serde_json::from_str::<Body>(json)
            .map(|body| body.rounds)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn whole_numbers_with_or_without_a_zero_fraction() {
        assert_eq!(parse(r#"{"rounds": 7}"#), Ok(Some(7)));
        assert_eq!(parse(r#"{"rounds": 7.0}"#), Ok(Some(7)));
        assert_eq!(parse(r#"{"rounds": null}"#), Ok(None));
        assert_eq!(parse("{}"), Ok(None));
        for refused in ["7.5", "-1", "4294967296", "1e300", "\"7\""] {
            let result = parse(&format!(r#"{{"rounds": {refused}}}"#));
            assert!(result.is_err(), "{refused}: {result:?}");
        }
        assert!(
            parse(r#"{"rounds": 7.5}"#)
                .unwrap_err()
                .starts_with("expected a whole number from 0 to 4294967295, got 7.5")
        );
    }
}
