//! What a sync pulls, decided from the cursor kept in the store and the clock. Pure.
//!
//! - *Full* (the first time, once `sync.full_interval_s` has passed since the last one, or
//!   whenever the doors hold no snapshot): every list in full, replacing the snapshot, which
//!   also drops people DoorFlow deleted (it keeps no tombstones).
//! - *Incremental* (every `sync.interval_s`): people and group reservations changed since the
//!   cursor (`since_utc`), laid over the snapshot by id; the small lists in full. Credentials
//!   have no `since` filter, so they are pulled in full only when due (every
//!   `sync.credentials_interval_s`) or when a one-item probe says the list changed: its total,
//!   or its last credential (new ones are listed last), is not what the last full pull saw.
//!   With nothing changed an incremental sync costs about nine requests whatever the site's
//!   size.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// Re-fetch window behind the cursor (edits in flight while a pull runs).
pub const CURSOR_OVERLAP: SignedDuration = SignedDuration::from_secs(300);

/// Where incremental syncs start from, kept in the store (committed with the snapshot) so a
/// restart does not force a full pull of every person before the next reconcile is due.
///
/// Every instant here is DoorFlow's time, never the board's own clock: the cursor is DoorFlow's
/// time when the last successful pull began (the `Date` of its first people page; without one,
/// the newest `updated_at` it saw) minus `CURSOR_OVERLAP`, so a record updated while a pull ran
/// is fetched again rather than missed, and a board running fast skips nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// People and group reservations changed since this instant are pulled.
    pub since: Timestamp,
    /// When the last full sync started.
    pub last_full: Timestamp,
    /// What the last full pull of the credentials saw (absent in cursors of earlier versions:
    /// the next incremental sync pulls them in full).
    #[serde(default)]
    pub credentials: Option<CredentialsMark>,
}

/// The credential list as its last full pull saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsMark {
    /// When that pull started.
    pub at: Timestamp,
    /// Credentials in the list (the server's total, else the count received).
    pub total: u64,
    /// A CRC-32 of the last credential listed (see [`fingerprint`]); `None` for an empty list.
    pub last: Option<u32>,
}

/// A CRC-32 over what identifies a credential and decides with it: a new credential at the end
/// of the list, or the last one changed, changes it.
pub fn fingerprint(
    id: &str,
    person_id: u64,
    credential_type_id: u64,
    value: &str,
    status: Option<&str>,
) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    for part in [id.as_bytes(), value.as_bytes(), status.unwrap_or("").as_bytes()] {
        crc.update(&(part.len() as u64).to_be_bytes());
        crc.update(part);
    }
    crc.update(&person_id.to_be_bytes());
    crc.update(&credential_type_id.to_be_bytes());
    crc.finalize()
}

/// How much a sync pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    Full,
    Incremental { since: Timestamp },
}

impl SyncKind {
    /// Full when there is no cursor, the reconcile is due, or the doors hold no snapshot.
    pub fn choose(
        cursor: Option<Cursor>,
        have_snapshot: bool,
        full_interval: SignedDuration,
        now: Timestamp,
    ) -> SyncKind {
        match cursor {
            Some(cursor) if have_snapshot && now.duration_since(cursor.last_full) < full_interval => {
                SyncKind::Incremental { since: cursor.since }
            }
            _ => SyncKind::Full,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Full => "full",
            SyncKind::Incremental { .. } => "incremental",
        }
    }
}

/// What an incremental sync does about the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsPlan {
    /// Pull them in full (due, or nothing is known about the last pull).
    Pull,
    /// Ask for the one credential at position `position` (1-based, `per_page=1`) and compare
    /// with the mark; pull in full only if it differs.
    Probe { position: u64, mark: CredentialsMark },
}

impl CredentialsPlan {
    pub fn choose(
        mark: Option<CredentialsMark>,
        interval: SignedDuration,
        now: Timestamp,
    ) -> CredentialsPlan {
        match mark {
            Some(mark) if now.duration_since(mark.at) < interval => CredentialsPlan::Probe {
                position: mark.total.max(1),
                mark,
            },
            _ => CredentialsPlan::Pull,
        }
    }
}

/// Whether the probe's answer (the server's total, and the credential at the marked position)
/// says the credential list changed since `mark`.
pub fn credentials_changed(mark: &CredentialsMark, total: Option<u64>, last: Option<u32>) -> bool {
    total.is_some_and(|t| t != mark.total) || last != mark.last
}

impl Cursor {
    /// The cursor after a successful sync of `kind` whose people listing began at `began`
    /// (DoorFlow's `Date`) and saw people updated up to `newest_updated`; `doorflow_now` is the
    /// keeper's estimate of DoorFlow's time, for a pull that gave neither. `credentials` is
    /// the mark of a full credential pull made by it, if any.
    pub fn after(
        previous: Option<Cursor>,
        kind: SyncKind,
        began: Option<Timestamp>,
        newest_updated: Option<Timestamp>,
        doorflow_now: Timestamp,
        credentials: Option<CredentialsMark>,
    ) -> Cursor {
        let since = match (began, newest_updated, previous) {
            (Some(date), _, _) => date - CURSOR_OVERLAP,
            (None, Some(updated), _) => updated - CURSOR_OVERLAP,
            (None, None, Some(previous)) if kind != SyncKind::Full => previous.since,
            (None, None, _) => doorflow_now - CURSOR_OVERLAP,
        };
        let last_full = match (kind, previous) {
            (SyncKind::Incremental { .. }, Some(previous)) => previous.last_full,
            _ => began.unwrap_or(doorflow_now),
        };
        Cursor {
            since,
            last_full,
            credentials: credentials.or(previous.and_then(|p| p.credentials)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn full_sync_when_there_is_no_cursor_no_snapshot_or_the_reconcile_is_due() {
        let hour = SignedDuration::from_secs(3600);
        let cursor = Cursor {
            since: t(9_000),
            last_full: t(8_000),
            credentials: None,
        };
        assert_eq!(SyncKind::choose(None, true, hour, t(10_000)), SyncKind::Full);
        assert_eq!(
            SyncKind::choose(Some(cursor), false, hour, t(10_000)),
            SyncKind::Full
        );
        assert_eq!(
            SyncKind::choose(Some(cursor), true, hour, t(10_000)),
            SyncKind::Incremental { since: t(9_000) }
        );
        assert_eq!(
            SyncKind::choose(Some(cursor), true, hour, t(8_000 + 3600)),
            SyncKind::Full
        );
    }

    #[test]
    fn credentials_are_probed_until_their_pull_is_due() {
        let quarter = SignedDuration::from_secs(900);
        let mark = CredentialsMark {
            at: t(1_000),
            total: 130_000,
            last: Some(7),
        };
        assert_eq!(
            CredentialsPlan::choose(None, quarter, t(1_500)),
            CredentialsPlan::Pull
        );
        assert_eq!(
            CredentialsPlan::choose(Some(mark), quarter, t(1_500)),
            CredentialsPlan::Probe {
                position: 130_000,
                mark
            }
        );
        assert_eq!(
            CredentialsPlan::choose(Some(mark), quarter, t(1_900)),
            CredentialsPlan::Pull
        );
    }

    #[test]
    fn the_probe_sees_a_count_or_a_last_credential_that_changed() {
        let mark = CredentialsMark {
            at: t(0),
            total: 390,
            last: Some(fingerprint("cr186", 390, 1, "390", None)),
        };
        let same = Some(fingerprint("cr186", 390, 1, "390", None));
        assert!(!credentials_changed(&mark, Some(390), same));
        assert!(
            !credentials_changed(&mark, None, same),
            "no totals: the last one decides"
        );
        assert!(credentials_changed(&mark, Some(389), same), "one revoked");
        let replaced = Some(fingerprint("cr187", 391, 1, "391", None));
        assert!(
            credentials_changed(&mark, Some(390), replaced),
            "one revoked and one added: the same count, a new last credential"
        );
        assert!(
            credentials_changed(&mark, Some(390), None),
            "the list got shorter"
        );
        assert_ne!(
            fingerprint("a", 1, 1, "12", None),
            fingerprint("a", 1, 1, "1", Some("2")),
            "fields do not run into each other"
        );
    }

    /// Issue 15: the cursor is DoorFlow's time (its `Date`, else the newest `updated_at`), never
    /// the board's clock, which here runs an hour fast; the reconcile time and the credentials
    /// mark are carried over an incremental sync.
    #[test]
    fn the_cursor_comes_from_doorflows_clock_and_keeps_the_credentials_mark() {
        let board_fast = t(20_000 + 3600);
        let mark = CredentialsMark {
            at: t(5),
            total: 3,
            last: None,
        };
        let previous = Cursor {
            since: t(9_000),
            last_full: t(8_000),
            credentials: Some(mark),
        };
        let incremental = SyncKind::Incremental { since: t(9_000) };
        let dated = Cursor::after(
            Some(previous),
            incremental,
            Some(t(20_000)),
            Some(t(15_000)),
            board_fast,
            None,
        );
        assert_eq!(dated.since, t(20_000) - CURSOR_OVERLAP, "the Date header wins");
        assert_eq!(
            dated.last_full,
            t(8_000),
            "an incremental sync keeps the reconcile time"
        );
        assert_eq!(dated.credentials, Some(mark), "and the credentials mark");
        let undated = Cursor::after(
            Some(previous),
            incremental,
            None,
            Some(t(15_000)),
            board_fast,
            None,
        );
        assert_eq!(
            undated.since,
            t(15_000) - CURSOR_OVERLAP,
            "then the newest change seen"
        );
        let nothing = Cursor::after(Some(previous), incremental, None, None, board_fast, None);
        assert_eq!(nothing.since, t(9_000), "with neither, the cursor stays");
        let newer = CredentialsMark {
            at: t(20_000),
            ..mark
        };
        let full = Cursor::after(
            Some(previous),
            SyncKind::Full,
            Some(t(20_000)),
            None,
            board_fast,
            Some(newer),
        );
        assert_eq!(
            (full.since, full.last_full, full.credentials),
            (t(20_000) - CURSOR_OVERLAP, t(20_000), Some(newer))
        );
        let first = Cursor::after(None, SyncKind::Full, None, None, t(20_000), None);
        assert_eq!(
            (first.since, first.last_full),
            (t(20_000) - CURSOR_OVERLAP, t(20_000))
        );
    }
}
