//! Quiet hours: a daily window, on the subscriber's own wall clock, during which
//! notifications wait instead of waking them.
//!
//! The window is written in local minutes because that is how people think about sleep, so
//! every decision converts through the IANA rules of the subscriber's zone. The rules come
//! from the database compiled into `jiff` (`TimeZoneDatabase::bundled`), never from the
//! host, so the answer is the same on every machine and no file is read.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::DomainError;

const MINUTES_PER_DAY: u16 = 24 * 60;

/// A daily quiet window such as 22:00-07:00 in `Europe/Paris`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    /// IANA time-zone name, for example `"Europe/Paris"`.
    pub time_zone: String,
    /// Minutes after local midnight, `0..1440`; the window includes this minute.
    pub start_minute: u16,
    /// Minutes after local midnight, `0..1440`; the window ends as this minute begins. Below
    /// `start_minute` the window wraps midnight (22:00-07:00). Equal to it is invalid: an
    /// empty window and an all-day one would be written the same way.
    pub end_minute: u16,
}

impl QuietHours {
    /// Checks the minutes and that the time zone is known; errors name `quiet_hours`.
    pub fn validate(&self) -> Result<(), DomainError> {
        self.check("quiet_hours")
    }

    /// [`QuietHours::validate`] with the field name of the enclosing document, so an error
    /// inside preferences points at `preferences.quiet_hours`.
    pub(crate) fn check(&self, field: &'static str) -> Result<(), DomainError> {
        for (name, minute) in [
            ("start_minute", self.start_minute),
            ("end_minute", self.end_minute),
        ] {
            if minute >= MINUTES_PER_DAY {
                return Err(DomainError::invalid(
                    field,
                    format!(
                        "{name} is {minute}; minutes after midnight must be below {MINUTES_PER_DAY}"
                    ),
                ));
            }
        }
        if self.start_minute == self.end_minute {
            return Err(DomainError::invalid(
                field,
                "start_minute equals end_minute; a window must start and end at different times",
            ));
        }
        if time_zone(&self.time_zone).is_none() {
            return Err(DomainError::invalid(
                field,
                format!(
                    "{:?} is not an IANA time zone such as \"Europe/Paris\"",
                    self.time_zone
                ),
            ));
        }
        Ok(())
    }

    /// When a notification due at `now` may go out: `None` if `now` is outside the window,
    /// otherwise the instant the window ends.
    ///
    /// The end is the first instant after `now` at which the local clock reads `end_minute`,
    /// so a window that spans a daylight-saving change lasts an hour more or less in real
    /// time, as the subscriber's alarm clock would. When the clock skips `end_minute` (a
    /// spring-forward gap), the window ends at the jump. When the clock reads `end_minute`
    /// twice (a fall-back fold), the first reading still after `now` ends it.
    ///
    /// Quiet hours that do not validate never hold anything: preferences are validated when
    /// stored, and an unreadable window must not silence an incident.
    pub fn held_until(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let (start, end) = (self.start_minute, self.end_minute);
        if start == end || start >= MINUTES_PER_DAY || end >= MINUTES_PER_DAY {
            return None;
        }
        let zone = time_zone(&self.time_zone)?;
        let now = Timestamp::from_nanosecond(now.unix_timestamp_nanos()).ok()?;
        let local = zone.to_datetime(now);
        let minute = u16::try_from(local.hour()).ok()? * 60 + u16::try_from(local.minute()).ok()?;

        // Which local date's `end_minute` closes the window `now` is in, if it is in one.
        let end_date = if start < end {
            if !(start..end).contains(&minute) {
                return None;
            }
            local.date()
        } else if minute < end {
            local.date()
        } else if minute >= start {
            local.date().tomorrow().ok()?
        } else {
            return None;
        };
        let end_wall = end_date.at(
            i8::try_from(end / 60).ok()?,
            i8::try_from(end % 60).ok()?,
            0,
            0,
        );
        let ends_at = first_reading_after(&zone, end_wall, now)?;
        OffsetDateTime::from_unix_timestamp_nanos(ends_at.as_nanosecond()).ok()
    }
}

/// Looks a zone up in the compiled-in database only. Going through `jiff::tz::db()` instead
/// would read `/usr/share/zoneinfo` whenever another crate in the build enables jiff's
/// default features, and the core does no I/O.
fn time_zone(name: &str) -> Option<TimeZone> {
    TimeZoneDatabase::bundled()
        .get(name)
        .ok()
        .filter(|zone| !zone.is_unknown())
}

/// The first instant after `now` at which the clock of `zone` reads `wall`, or jumps past it.
fn first_reading_after(zone: &TimeZone, wall: DateTime, now: Timestamp) -> Option<Timestamp> {
    let instant = match zone.to_ambiguous_timestamp(wall).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(wall).ok()?,
        AmbiguousOffset::Fold { before, after } => {
            let first = before.to_timestamp(wall).ok()?;
            if first > now {
                first
            } else {
                after.to_timestamp(wall).ok()?
            }
        }
        // `wall` read with the offset from after the gap is the instant just before the
        // jump; the next transition from there is the jump itself.
        AmbiguousOffset::Gap { after, .. } => {
            let before_jump = after.to_timestamp(wall).ok()?;
            zone.following(before_jump).next()?.timestamp()
        }
    };
    // Never hold a notification until a moment that has already passed.
    (instant > now).then_some(instant)
}
