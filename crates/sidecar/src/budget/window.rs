//! Fixed UTC windows budgets are counted in: the minute, the day and the calendar month a moment
//! falls in, each named by a number that becomes part of a Redis key, and how long until it ends
//! (the `retry-after` of a refusal).

/// A counting window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// One UTC minute.
    Minute,
    /// One UTC day.
    Day,
    /// One UTC calendar month.
    Month,
}

impl Window {
    /// Short key segment.
    pub fn tag(self) -> &'static str {
        match self {
            Window::Minute => "m",
            Window::Day => "d",
            Window::Month => "mo",
        }
    }

    /// The window containing `unix` (seconds): minutes and days since the epoch, or `yyyymm`.
    pub fn id(self, unix: u64) -> u64 {
        match self {
            Window::Minute => unix / 60,
            Window::Day => unix / 86_400,
            Window::Month => {
                let (y, m, _) = civil_from_days(unix / 86_400);
                y * 100 + m
            }
        }
    }

    /// Seconds from `unix` until the window containing it ends (at least 1).
    pub fn remaining(self, unix: u64) -> u64 {
        let end = match self {
            Window::Minute => (unix / 60 + 1) * 60,
            Window::Day => (unix / 86_400 + 1) * 86_400,
            Window::Month => {
                let (y, m, _) = civil_from_days(unix / 86_400);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * 86_400
            }
        };
        end.saturating_sub(unix).max(1)
    }

    /// How long a key of this window must outlive it in Redis (so it expires on its own).
    pub fn ttl_secs(self) -> u64 {
        match self {
            Window::Minute => 2 * 60,
            Window::Day => 2 * 86_400,
            Window::Month => 32 * 86_400,
        }
    }
}

/// (year, month 1–12, day 1–31) of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a date (the inverse of [`civil_from_days`]).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-06T23:59:30Z
    const T: u64 = 1_796_601_570;

    #[test]
    fn windows_and_what_is_left_of_them() {
        assert_eq!(civil_from_days(T / 86_400), (2026, 12, 6));
        assert_eq!(Window::Minute.remaining(T), 30);
        assert_eq!(Window::Day.remaining(T), 30);
        assert_eq!(Window::Month.id(T), 202_612);
        // December ends on the 31st: 25 days and 30 seconds left.
        assert_eq!(Window::Month.remaining(T), 25 * 86_400 + 30);
        assert_eq!(Window::Minute.remaining(60), 60);
        assert_eq!(Window::Month.id(0), 197_001);
        assert_eq!(Window::Month.remaining(0), 31 * 86_400);
    }

    #[test]
    fn calendar_round_trips() {
        for days in (0..200_000).step_by(17) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        // Leap day.
        assert_eq!(civil_from_days(days_from_civil(2028, 2, 29)), (2028, 2, 29));
    }
}
