//! The page cursors both readers hand out: opaque to callers, the keyset of the last event of
//! a page, and [`page_of`], which cuts a page fetched one row long into the page and the next
//! cursor.

use super::{EventPage, ReadError, StoredEvent};

/// Time-ordered cursor: `t:<persisted_at>:<id>`.
pub(super) fn time_cursor(e: &StoredEvent) -> String {
    format!("t:{}:{}", e.event.persisted_at, e.event.id)
}

/// The `(persisted_at, id)` keyset of a time-ordered cursor.
pub(super) fn parse_time_cursor(c: &str) -> Result<(i64, String), ReadError> {
    let bad = |reason| ReadError::BadCursor {
        cursor: c.to_owned(),
        reason,
    };
    let rest = c
        .strip_prefix("t:")
        .ok_or_else(|| bad("not a time-ordered cursor"))?;
    let (at, id) = rest.split_once(':').ok_or_else(|| bad("missing id"))?;
    let at = at.parse().map_err(|_| bad("time is not a number"))?;
    Ok((at, id.to_owned()))
}

/// Log-ordered cursor: `o:<offset or -1>:<persisted_at>:<id>`.
pub(super) fn log_cursor(e: &StoredEvent) -> String {
    let offset = e.source.as_ref().map_or(-1, |s| s.offset);
    format!("o:{offset}:{}:{}", e.event.persisted_at, e.event.id)
}

/// The `(offset, persisted_at, id)` keyset of a log-ordered cursor.
pub(super) fn parse_log_cursor(c: &str) -> Result<(i64, i64, String), ReadError> {
    let bad = |reason| ReadError::BadCursor {
        cursor: c.to_owned(),
        reason,
    };
    let rest = c
        .strip_prefix("o:")
        .ok_or_else(|| bad("not a log-ordered cursor"))?;
    let mut parts = rest.splitn(3, ':');
    let offset = parts
        .next()
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| bad("offset is not a number"))?;
    let at = parts
        .next()
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| bad("time is not a number"))?;
    let id = parts.next().ok_or_else(|| bad("missing id"))?;
    Ok((offset, at, id.to_owned()))
}

/// A page of at most `limit` events out of `events`, fetched `limit + 1` long: the extra
/// event only says there is a next page, whose cursor is the last kept event's.
pub(super) fn page_of(
    mut events: Vec<StoredEvent>,
    limit: i64,
    cursor: fn(&StoredEvent) -> String,
) -> EventPage {
    let next = if events.len() as i64 > limit {
        events.truncate(limit as usize);
        events.last().map(cursor)
    } else {
        None
    };
    EventPage { events, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_cursors_are_refused() {
        assert_eq!(
            parse_time_cursor("t:12:a:b").unwrap(),
            (12, "a:b".to_owned())
        );
        assert_eq!(
            parse_log_cursor("o:-1:12:x:y").unwrap(),
            (-1, 12, "x:y".to_owned())
        );
        assert!(matches!(
            parse_time_cursor("o:1:2:x"),
            Err(ReadError::BadCursor { .. })
        ));
        assert!(matches!(
            parse_log_cursor("o:one:2:x"),
            Err(ReadError::BadCursor { .. })
        ));
    }
}
