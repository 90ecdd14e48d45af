//! Poison-tolerant locking for state shared between the agent's threads and tasks.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the state behind the
/// agent's mutexes is plain data, and the doors must keep working after a bug elsewhere.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
