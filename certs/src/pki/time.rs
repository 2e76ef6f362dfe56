//! Time arithmetic for certificates: saturating (an absurd duration never
//! overflows), whole seconds (what X.509 carries), and the conversion to the
//! `time` crate that rcgen takes.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::{Error, Result};

/// `time + delta`, saturating instead of overflowing.
pub(super) fn later(time: Timestamp, delta: SignedDuration) -> Timestamp {
    time.checked_add(delta).unwrap_or(if delta.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

pub(super) fn to_delta(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

pub(super) fn to_offset(instant: Timestamp) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(instant.as_second())
        .map_err(|_| Error::TimeOutOfRange)
}

/// Certificates carry whole seconds.
pub(super) fn truncate_to_seconds(time: Timestamp) -> Timestamp {
    Timestamp::from_second(time.as_second()).unwrap_or(time)
}
