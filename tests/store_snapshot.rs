//! The stored snapshot survives restarts, and neither a store reader nor an in-memory reader
//! ever sees half of one snapshot and half of another.

use doorflow_agent::snapshot::*;
use doorflow_agent::store::{Store, StoreError};
use jiff::Timestamp;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A snapshot whose every record carries `generation`, with a count that depends on it, so a
/// mix of two generations is detectable.
fn generation_parts(generation: u64) -> SnapshotParts {
    let people = 200 + (generation % 7) * 50;
    SnapshotParts {
        synced_at: Some(Timestamp::from_second(1_800_000_000 + generation as i64).unwrap()),
        people: (0..people)
            .map(|i| Person {
                id: generation * 1_000_000 + i,
                enabled: true,
                valid_from: None,
                valid_to: None,
                roles: vec![generation],
                groups: vec![],
            })
            .collect(),
        credentials: (0..people)
            .map(|i| Credential {
                id: format!("g{generation}-{i}"),
                credential_type_id: 1,
                person_id: generation * 1_000_000 + i,
                value: format!("{}", generation * 1_000_000 + i),
                status: None,
            })
            .collect(),
        credential_types: vec![CredentialType::new(1, "card", CredentialKind::Card)],
        roles: vec![Role::unrestricted(generation)],
        ..Default::default()
    }
}

/// Checks that `parts` is entirely one generation and returns it.
fn assert_whole(parts: &SnapshotParts) -> u64 {
    let generation = parts.roles[0].id;
    assert_eq!(
        parts.people.len() as u64,
        200 + (generation % 7) * 50,
        "count of generation {generation}"
    );
    assert_eq!(parts.credentials.len(), parts.people.len());
    assert!(parts
        .people
        .iter()
        .all(|p| p.id / 1_000_000 == generation && p.roles == [generation]));
    assert!(parts
        .credentials
        .iter()
        .all(|c| c.person_id / 1_000_000 == generation));
    assert_eq!(
        parts.synced_at.unwrap().as_second(),
        1_800_000_000 + generation as i64
    );
    generation
}

#[test]
fn snapshot_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let written = generation_parts(3);
    {
        let store = Store::open(&path, 1 << 20).unwrap();
        assert!(store.load_snapshot().unwrap().is_none());
        store.save_snapshot(&written).unwrap();
    }
    let store = Store::open(&path, 1 << 20).unwrap();
    let loaded = store.load_snapshot().unwrap().unwrap();
    assert_eq!(loaded, written);
    let header = store.snapshot_header().unwrap().unwrap();
    assert_eq!(header.counts, written.counts());
    assert_eq!(header.synced_at, written.synced_at);
}

#[test]
fn a_second_process_cannot_open_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _first = Store::open(&path, 1 << 20).unwrap();
    match Store::open(&path, 1 << 20) {
        Err(StoreError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn store_readers_never_see_a_half_swapped_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db"), 4 << 20).unwrap());
    store.save_snapshot(&generation_parts(1)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, done) = (Arc::clone(&store), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let parts = store.load_snapshot().unwrap().unwrap();
                    seen.push(assert_whole(&parts));
                }
                seen
            })
        })
        .collect();
    for generation in 2..=30 {
        store.save_snapshot(&generation_parts(generation)).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        let seen = reader.join().expect("a reader saw a mixed snapshot");
        assert!(!seen.is_empty());
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "generations went backwards: {seen:?}"
        );
    }
    assert_eq!(assert_whole(&store.load_snapshot().unwrap().unwrap()), 30);
}

#[test]
fn in_memory_readers_never_see_a_half_swapped_snapshot() {
    let shared = Arc::new(SharedSnapshot::new(Snapshot::new(generation_parts(1), "UTC")));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (shared, done) = (Arc::clone(&shared), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) {
                let snapshot = shared.current();
                let generation = assert_whole(&snapshot.to_parts());
                // Lookups through the index agree with the generation too.
                let value = format!("{}", generation * 1_000_000 + 5);
                assert_eq!(snapshot.credentials_with_value(&value).count(), 1);
                reads += 1;
            }
            reads
        })
    };
    for generation in 2..=200 {
        shared.replace(Arc::new(Snapshot::new(generation_parts(generation), "UTC")));
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().expect("a reader saw a mixed snapshot") > 0);
    assert_eq!(assert_whole(&shared.current().to_parts()), 200);
}
