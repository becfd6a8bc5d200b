//! HTTP header values the replies carry: dates (`Date`, `.issued`) and `Retry-After`.

use std::time::{Duration, SystemTime};

/// Parses an HTTP-date (RFC 9110: IMF-fixdate, and the obsolete RFC 850 and asctime forms).
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(text.trim()).ok()
}

/// Formats a time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), dropping sub-second precision.
/// `None` for a time before 1970 or after the year 9999, which an HTTP-date cannot express.
pub fn format_http_date(time: SystemTime) -> Option<String> {
    let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    // 253402300799 is 9999-12-31T23:59:59Z, the last second an HTTP-date can hold.
    if since_epoch.as_secs() > 253_402_300_799 {
        return None;
    }
    Some(httpdate::fmt_http_date(time))
}

/// Reads a `Retry-After` header value: delta-seconds, or an HTTP-date measured against `now`.
/// A date in the past gives zero; an unreadable value gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::reply::tests::at;

    #[test]
    fn http_dates() {
        assert_eq!(format_http_date(at(784_111_777)).as_deref(), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(parse_http_date(" Sun, 06 Nov 1994 08:49:37 GMT "), Some(at(784_111_777)));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(at(784_111_777)));
        assert_eq!(parse_http_date("nonsense"), None);
        assert_eq!(format_http_date(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), None);
        assert_eq!(format_http_date(at(253_402_300_800)), None);
        assert!(format_http_date(at(253_402_300_799)).is_some());
    }

    #[test]
    fn retry_after_values() {
        let now = at(784_111_777);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:48:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("later", now), None);
    }

    proptest! {
        #[test]
        fn http_date_round_trips(seconds in 0u64..253_402_300_799) {
            let time = at(seconds);
            let text = format_http_date(time).unwrap();
            prop_assert_eq!(parse_http_date(&text), Some(time));
            prop_assert!(text.ends_with(" GMT"));
        }

        #[test]
        fn retry_after_never_panics(value in "\\PC{0,40}", seconds in any::<u64>()) {
            let _ = parse_retry_after(&value, at(seconds % 253_402_300_799));
        }
    }
}
