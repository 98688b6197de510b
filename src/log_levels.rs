//! Log levels that change at runtime, as Kafka's broker loggers: DescribeConfigs and
//! IncrementalAlterConfigs on resource type BROKER_LOGGER (`kafka-configs --entity-type
//! broker-loggers`, `docs/operations.md`). One filter serves the whole process, so a change through
//! any broker id applies to every shard. Loggers are `root` and Weir's module paths (`weir::storage`,
//! `shards`); a level applies to the module and every module under it.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::EnvFilter;

pub const ROOT: &str = "root";
/// Kafka's log levels (`LogLevelConfig.VALID_LOG_LEVELS`), each with tracing's nearest.
const LEVELS: [(&str, &str); 6] =
    [("FATAL", "error"), ("ERROR", "error"), ("WARN", "warn"), ("INFO", "info"), ("DEBUG", "debug"), ("TRACE", "trace")];
/// Loggers described even when no level was set for them.
const MODULES: [&str; 7] = ["weir::broker", "weir::cli", "weir::client", "weir::metrics", "weir::protocol", "weir::storage", "shards"];

type Apply = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

struct State {
    /// Levels by logger, in Kafka's spelling; `root` is always there.
    levels: BTreeMap<String, String>,
    /// Directives of `WEIR_LOG` that are not a plain level (span and field filters): kept as given.
    other: Vec<String>,
    apply: Apply,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();

/// A change one IncrementalAlterConfigs asks for.
pub enum Change {
    Set { logger: String, level: String },
    Delete { logger: String },
}

/// Starts logging to stderr, filtered by `WEIR_LOG` (tracing's directives; default `info`), with
/// a handle kept to change the filter later.
pub fn init() {
    let spec = std::env::var("WEIR_LOG").ok().filter(|s| EnvFilter::try_new(s).is_ok()).unwrap_or_else(|| "info".into());
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(EnvFilter::new(&spec)).with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    let apply: Apply = Box::new(move |directives| {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    let (levels, other) = parse(&spec);
    let _ = STATE.set(Mutex::new(State { levels, other, apply }));
}

/// `WEIR_LOG`'s plain levels by logger (a bare level is root's), and its other directives.
fn parse(spec: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let kafka = |level: &str| match level.to_ascii_lowercase().as_str() {
        "off" => Some("OFF".to_string()),
        l => LEVELS.iter().find(|(_, t)| *t == l).map(|(k, _)| k.to_string()),
    };
    let mut levels = BTreeMap::from([(ROOT.to_string(), "INFO".to_string())]);
    let mut other = Vec::new();
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.split_once('=') {
            None if kafka(d).is_some() => {
                levels.insert(ROOT.into(), kafka(d).unwrap_or_default());
            }
            Some((target, level)) if is_module(target) && kafka(level).is_some() => {
                levels.insert(target.into(), kafka(level).unwrap_or_default());
            }
            _ => other.push(d.to_string()),
        }
    }
    (levels, other)
}

fn is_module(name: &str) -> bool {
    let ours = name == "weir" || name == "shards" || name.starts_with("weir::") || name.starts_with("shards::");
    ours && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b':')
}

/// Kafka's "does this logger exist": root, or one of Weir's module paths.
fn exists(logger: &str) -> bool {
    logger == ROOT || is_module(logger)
}

fn tracing_level(kafka: &str) -> &'static str {
    LEVELS.iter().find(|(k, _)| *k == kafka).map_or("off", |(_, t)| t)
}

/// Every logger with its effective level: root, the main modules and those given a level.
pub fn describe() -> Vec<(String, String)> {
    let Some(state) = STATE.get() else { return Vec::new() };
    let Ok(s) = state.lock() else { return Vec::new() };
    let effective = |logger: &str| {
        let covers = |set: &str| set == logger || logger.strip_prefix(set).is_some_and(|rest| rest.starts_with("::"));
        s.levels
            .iter()
            .filter(|(set, _)| set.as_str() != ROOT && covers(set))
            .max_by_key(|(set, _)| set.len())
            .map_or(&s.levels[ROOT], |(_, l)| l)
            .clone()
    };
    let mut names: Vec<String> = s.levels.keys().cloned().chain(MODULES.iter().map(|m| m.to_string())).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let level = effective(&n);
            (n, level)
        })
        .collect()
}

/// Checks `changes` as Kafka's `RuntimeLoggerManager` does, then (unless `validate_only`) applies
/// them. Errors: (code, message).
pub fn alter(changes: &[Change], validate_only: bool) -> Result<(), (i16, String)> {
    use crate::broker::errors::{INVALID_CONFIG, INVALID_REQUEST};
    for c in changes {
        let (Change::Set { logger, .. } | Change::Delete { logger }) = c;
        if !exists(logger) {
            return Err((INVALID_CONFIG, format!("Logger {logger} does not exist!")));
        }
        match c {
            Change::Set { level, .. } if !LEVELS.iter().any(|(k, _)| k == level) => {
                return Err((
                    INVALID_CONFIG,
                    format!("Cannot set the log level of {logger} to {level} as it is not a supported log level. Valid log levels are DEBUG, ERROR, FATAL, INFO, TRACE, WARN"),
                ));
            }
            Change::Delete { .. } if logger == ROOT => {
                return Err((INVALID_REQUEST, format!("Removing the log level of the {ROOT} logger is not allowed")));
            }
            _ => {}
        }
    }
    if validate_only {
        return Ok(());
    }
    let state = STATE.get().ok_or((INVALID_REQUEST, "log levels cannot be changed in this process".to_string()))?;
    let mut s = state.lock().map_err(|_| (INVALID_REQUEST, "log levels are unavailable".to_string()))?;
    for c in changes {
        match c {
            Change::Set { logger, level } => {
                s.levels.insert(logger.clone(), level.clone());
                tracing::warn!(%logger, %level, "Updated the log level");
            }
            Change::Delete { logger } => {
                s.levels.remove(logger);
                tracing::warn!(%logger, "Unset the log level");
            }
        }
    }
    let directives: Vec<String> = std::iter::once(tracing_level(&s.levels[ROOT]).to_string())
        .chain(s.levels.iter().filter(|(l, _)| l.as_str() != ROOT).map(|(l, level)| format!("{l}={}", tracing_level(level))))
        .chain(s.other.iter().cloned())
        .collect();
    (s.apply)(&directives.join(",")).map_err(|e| (INVALID_REQUEST, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weir_log_reads_as_kafka_levels_and_keeps_what_is_not_a_level() {
        let (levels, other) = parse("debug,weir::storage=trace,weir::broker[conn]=info,hyper=warn");
        assert_eq!(levels[ROOT], "DEBUG");
        assert_eq!(levels["weir::storage"], "TRACE");
        assert_eq!(other, ["weir::broker[conn]=info", "hyper=warn"]);
        assert!(exists("root") && exists("weir::broker::group") && exists("shards") && !exists("kafka.server") && !exists("weir::Bad"));
        assert_eq!(tracing_level("FATAL"), "error");
    }
}
