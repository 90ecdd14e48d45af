//! `[store]`: where the agent keeps its state.

use super::values::Ranged;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The database directory; must be absolute.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Page cache of the snapshot database while a sync reads or writes it, MB (handed back
    /// after each sync; between syncs nothing reads the database).
    #[serde(default)]
    pub cache_capacity_mb: Ranged<1, 1024, 2>,
}

fn default_path() -> PathBuf {
    PathBuf::from("/var/lib/doorflow-agent/db")
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_path(),
            cache_capacity_mb: Default::default(),
        }
    }
}

impl StoreConfig {
    /// `cache_capacity_mb` in bytes.
    pub fn cache_capacity_bytes(&self) -> u64 {
        self.cache_capacity_mb.get() * 1024 * 1024
    }

    pub(super) fn validate(&self, report: &mut impl FnMut(String, String)) {
        if !self.path.is_absolute() {
            report(
                "store.path".into(),
                format!("`{}` must be an absolute path", self.path.display()),
            );
        }
    }
}
