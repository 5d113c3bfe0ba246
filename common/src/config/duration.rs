//! Go durations (`1h30m`, `45m`, `1.5h`, `0`), the form Tekton's `timeout` fields take.

use std::time::Duration;

/// Units Go's `time.ParseDuration` accepts; `ms` comes before `m` and `s` so that it wins.
const UNITS: [(&str, u128); 9] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("d", 0),
];

/// Parses a non-negative Go duration. `0` (no unit) is "none", as Tekton reads it.
///
/// Negative durations are refused: a run cannot time out before it starts.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid =
        || format!("{text:?} is not a Go duration (examples: `1h30m`, `45m`, `90s`, `0` for none)");
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut rest = rest;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        // `d` is listed so that a day count gets a pointed message rather than a generic one.
        let Some(&(unit, unit_nanos)) = UNITS.iter().find(|(unit, _)| after.starts_with(unit))
        else {
            return Err(invalid());
        };
        if unit == "d" {
            return Err(format!(
                "{}; Go durations have no days unit, use hours",
                invalid()
            ));
        }
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut frac_nanos: u128 = 0;
        let mut scale = unit_nanos;
        for digit in frac_part.bytes().take(18) {
            scale /= 10;
            frac_nanos += u128::from(digit - b'0') * scale;
        }
        nanos = int
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(frac_nanos))
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(invalid)?;
        rest = &after[unit.len()..];
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| invalid())?;
    // The remainder of a division by 10^9 always fits in u32.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("0", 0),
            ("90s", 90_000),
            ("45m", 45 * 60_000),
            ("1h30m", 90 * 60_000),
            ("1.5h", 90 * 60_000),
            ("250ms", 250),
            ("1m0.5s", 60_500),
            ("+2h", 7_200_000),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_go_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        assert_eq!(parse_go_duration("3us"), Ok(Duration::from_micros(3)));
        assert_eq!(parse_go_duration("7ns"), Ok(Duration::from_nanos(7)));
    }

    #[test]
    fn non_durations_fail() {
        for text in ["", "1", "h", "-1h", "1x", "1h 30m", "1.2.3s", ".s", "90"] {
            assert!(parse_go_duration(text).is_err(), "{text:?} parsed");
        }
        assert!(parse_go_duration("2d").unwrap_err().contains("hours"));
    }
}
