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

/// The line under a `queue list` or `queue dead` (on stderr): how many there are, and how many
/// were shown when a `--limit` left some out. `what` is the list's noun (`queued`, `dead`).
pub fn count_line(shown: usize, total: u64, what: &str) -> String {
    // A running agent may deliver calls between the list and the count.
    let total = total.max(shown as u64);
    if (shown as u64) < total {
        format!("showing {shown} of {total} {what}")
    } else {
        format!("{total} {what}")
    }
}

/// `queue dead`: one row per dead letter, oldest first, of `total` in all ("no dead letters"
/// only when there are none; a header alone when `--limit 0` showed none of them).
pub fn dead_letters(letters: &[(u64, DeadLetter)], total: u64) -> String {
    if letters.is_empty() && total == 0 {
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

/// `queue list`: one row per queued call, oldest first, of `total` in all ("nothing queued" only
/// when nothing is); ages on the boot clock where the call has a boot stamp (as `status` counts
/// them).
pub fn queued_calls(calls: &[(u64, QueuedCall)], total: u64, now: &Now) -> String {
    if calls.is_empty() && total == 0 {
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
            attempts: 1,
            ..QueuedCall::untried(
                "6f1c2a4e-0000-4000-8000-000000000001",
                call,
                Timestamp::from_second(1_700_000_000).unwrap(),
            )
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
        let text = dead_letters(&[(7, letter)], 1);
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
        assert_eq!(dead_letters(&[], 0), "no dead letters\n");
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
        let text = queued_calls(&[(3, call)], 1, &now);
        assert!(text.contains("5 min ago"), "{text}");
        assert!(text.contains("now"), "{text}");
        assert!(text.contains("HTTP 503 service unavailable"), "{text}");
    }

    #[test]
    fn an_empty_list_says_so_only_when_nothing_is_there() {
        let now = Now::read_raw();
        assert_eq!(queued_calls(&[], 0, &now), "nothing queued\n");
        assert_eq!(dead_letters(&[], 0), "no dead letters\n");
        // `--limit 0` with 30 queued: the header, no claim that the queue is empty.
        let header = queued_calls(&[], 30, &now);
        assert!(
            header.starts_with("KEY  LANE") && header.lines().count() == 1,
            "{header}"
        );
        assert!(dead_letters(&[], 2).starts_with("KEY  LANE"));
    }

    #[test]
    fn the_count_line_says_how_many_were_shown_of_how_many() {
        assert_eq!(count_line(0, 0, "queued"), "0 queued");
        assert_eq!(count_line(30, 30, "queued"), "30 queued");
        assert_eq!(count_line(1, 30, "queued"), "showing 1 of 30 queued");
        assert_eq!(count_line(0, 30, "queued"), "showing 0 of 30 queued");
        assert_eq!(count_line(2, 5, "dead"), "showing 2 of 5 dead");
        // Delivered between the list and the count: never "3 of 2".
        assert_eq!(count_line(3, 2, "queued"), "3 queued");
    }
}
