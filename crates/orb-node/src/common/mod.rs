//! What both roles share: small helpers, the guarded HTTP server, HTTP
//! plumbing of calls, function logs, metrics, and the dashboard page.

pub(crate) mod answer;
pub(crate) mod cgi;
pub(crate) mod files;
pub mod http_server;
pub(crate) mod http_util;
pub mod logs;
pub mod metrics;
pub(crate) mod util;

/// The dashboard both roles serve at `/`: one static page that polls the
/// JSON APIs of whichever node serves it.
pub(crate) const DASHBOARD: &str = include_str!("dashboard.html");
