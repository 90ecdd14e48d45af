//! `[admin]`: the local socket `status` and `queue` use to reach a running agent.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Unix socket for `status` and `queue` against a running agent (mode 0660).
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/doorflow-agent/admin.sock")
}

impl AdminConfig {
    pub(super) fn validate(&self, report: &mut impl FnMut(String, String)) {
        if let Some(message) = socket_path_problem(&self.socket) {
            report("admin.socket".into(), message);
        }
    }
}

/// Why `path` cannot be bound as a Unix socket, checked before anything starts.
pub(super) fn socket_path_problem(path: &std::path::Path) -> Option<String> {
    let length = path.as_os_str().len();
    if !path.is_absolute() {
        return Some(format!("`{}` must be an absolute path", path.display()));
    }
    (length > super::MAX_SOCKET_PATH).then(|| {
        format!(
            "`{}` is {length} bytes long; a Unix socket path holds at most {} (sun_path)",
            path.display(),
            super::MAX_SOCKET_PATH
        )
    })
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket: default_socket(),
        }
    }
}
