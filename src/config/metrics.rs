//! `[metrics]`: a Prometheus text file for node_exporter's textfile collector, so a fleet can
//! scrape every board without the agent opening a port.

use super::values::Ranged;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to write the metrics (replaced atomically, mode 0644), e.g.
    /// `/var/lib/prometheus/node-exporter/doorflow_agent.prom`; none: no file. The name must end
    /// in `.prom` (the collector reads nothing else).
    pub textfile: Option<PathBuf>,
    /// How often the file is rewritten, s.
    #[serde(default)]
    pub interval_s: Ranged<1, 3600, 15>,
}

impl MetricsConfig {
    pub(super) fn validate(&self, report: &mut impl FnMut(String, String)) {
        let Some(path) = &self.textfile else { return };
        if !path.is_absolute() {
            report(
                "metrics.textfile".into(),
                format!("`{}` must be an absolute path", path.display()),
            );
        } else if path.extension().is_none_or(|e| e != "prom") || path.file_stem().is_none() {
            report(
                "metrics.textfile".into(),
                format!(
                    "`{}` must end in `.prom`: node_exporter's textfile collector reads nothing else",
                    path.display()
                ),
            );
        }
    }
}
