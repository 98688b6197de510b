//! Observability: what each shard counts and times (`recorder`, thread-local, no shared atomics on
//! the hot paths), gathered through the mailboxes at each scrape (`snapshot`), exposed in
//! Prometheus' and OpenMetrics' text formats (`exposition`) by a listener of its own (`http`),
//! with health endpoints and a live dashboard (`history`, `dashboard.html`). `docs/observability.md`
//! lists every metric.

pub mod exposition;
mod history;
pub mod http;
pub mod latency;
pub mod process;
pub mod recorder;
pub mod snapshot;

/// The dashboard page: inline SVG and script, no network assets.
const DASHBOARD: &str = include_str!("dashboard.html");
