//! Readable tables for `queue list` and `queue dead` (the JSON lines stay available with
//! `--json`). Pure formatting of the store's records.

use crate::clock::Now;
use crate::store::{Call, DeadLetter, QueuedCall};
use crate::uplink::policy;
use jiff::{Timestamp, Unit};

/// Longest detail or error text shown in a table cell; `--json` has the whole text.
const MAX_CELL: usize = 72;

/// What a call does, in words.
pub fn describe(call: &Call) -> String {
    match call {
        Call::Admit {
            channel_id,
            person_id,
        } => format!("admit person {person_id} on channel {channel_id}"),
        Call::Event { event } => format!("event {}: {}", event.event_code, event.summary()),
    }
}

fn time(at: Timestamp) -> String {
    at.round(Unit::Second).unwrap_or(at).to_string()
}

fn cell(text: &str) -> String {
    let text = text.replace(['\n', '\t'], " ");
    if text.chars().count() <= MAX_CELL {
        return text;
    }
    let cut: String = text.chars().take(MAX_CELL - 1).collect();
    format!("{cut}…")
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (index, (value, width)) in row.iter().zip(&widths).enumerate() {
            if index == last {
                line.push_str(value);
            } else {
                line.push_str(&format!("{value:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `queue dead`: one row per dead letter, oldest first.
pub fn dead_letters(letters: &[(u64, DeadLetter)]) -> String {
    if letters.is_empty() {
        return "no dead letters\n".into();
    }
    let rows = letters
        .iter()
        .map(|(key, letter)| {
            vec![
                key.to_string(),
                letter.queued.call.lane().as_str().to_string(),
                letter.status.map_or("-".into(), |s| s.to_string()),
                letter.reason.clone(),
                time(letter.dead_at),
                letter.queued.attempts.to_string(),
                letter.queued.id.clone(),
                describe(&letter.queued.call),
                cell(&letter.detail),
            ]
        })
        .collect();
    table(
        &[
            "KEY", "LANE", "HTTP", "REASON", "DEAD AT", "ATTEMPTS", "ID", "CALL", "DETAIL",
        ],
        rows,
    )
}

/// `queue list`: one row per queued call, oldest first; ages on the boot clock where the call
/// has a boot stamp (as `status` counts them).
pub fn queued_calls(calls: &[(u64, QueuedCall)], now: &Now) -> String {
    if calls.is_empty() {
        return "nothing queued\n".into();
    }
    let rows = calls
        .iter()
        .map(|(key, call)| {
            vec![
                key.to_string(),
                call.call.lane().as_str().to_string(),
                policy::age(call, now).map_or("?".into(), |age| crate::status::age(age.as_secs() as i64)),
                call.attempts.to_string(),
                call.next_attempt_at.map_or("now".into(), time),
                call.id.clone(),
                describe(&call.call),
                cell(call.last_error.as_deref().unwrap_or("-")),
            ]
        })
        .collect();
    table(
        &[
            "KEY",
            "LANE",
            "QUEUED",
            "ATTEMPTS",
            "NEXT ATTEMPT",
            "ID",
            "CALL",
            "LAST ERROR",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(call: Call) -> QueuedCall {
        QueuedCall {
            id: "6f1c2a4e-0000-4000-8000-000000000001".into(),
            call,
            created_at: Timestamp::from_second(1_700_000_000).unwrap(),
            created_boot: None,
            attempts: 1,
            next_attempt_at: None,
            next_attempt_boot: None,
            last_error: None,
            hold: None,
        }
    }

    #[test]
    fn dead_letters_read_as_a_table() {
        let letter = DeadLetter {
            queued: queued(Call::Admit {
                channel_id: 1340,
                person_id: 17,
            }),
            status: Some(403),
            reason: "forbidden".into(),
            detail: format!("missing scope {}", "x".repeat(200)),
            dead_at: Timestamp::from_second(1_700_000_060).unwrap(),
        };
        let text = dead_letters(&[(7, letter)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("KEY  LANE   HTTP  REASON     DEAD AT"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("7    admit  403   forbidden  2023-11-14T22:14:20Z  1"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("admit person 17 on channel 1340"));
        assert!(lines[1].ends_with('…'), "long details are cut: {}", lines[1]);
        assert_eq!(dead_letters(&[]), "no dead letters\n");
    }

    #[test]
    fn queued_calls_show_their_age_and_next_attempt() {
        let mut call = queued(Call::Admit {
            channel_id: 1,
            person_id: 2,
        });
        call.last_error = Some("HTTP 503\nservice unavailable".into());
        // No boot stamp on the call: its age comes from the wall clock.
        let mut now = Now::read_raw();
        now.wall = Timestamp::from_second(1_700_000_300).unwrap();
        let text = queued_calls(&[(3, call)], &now);
        assert!(text.contains("5 min ago"), "{text}");
        assert!(text.contains("now"), "{text}");
        assert!(text.contains("HTTP 503 service unavailable"), "{text}");
    }
}
