//! `weir top`: a live view of a broker, refreshed like `top`, read from its metrics endpoint:
//! throughput per topic, request rates and latency percentiles per API, consumer groups' lag.

use clap::Args;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct TopArgs {
    /// The broker's metrics listener (`weir serve --metrics-listen`).
    #[arg(long, short = 'm', default_value = "127.0.0.1:9644", env = "WEIR_METRICS")]
    metrics: String,
    /// Seconds between refreshes.
    #[arg(long, short = 'd', default_value_t = 2.0)]
    interval: f64,
    /// Screens to print before exiting (default: until interrupted).
    #[arg(long, short = 'n')]
    iterations: Option<u64>,
}

/// One scrape: (name, labels) → value.
type Sample = BTreeMap<(String, Vec<(String, String)>), f64>;

fn scrape(addr: &str) -> Result<Sample, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| format!("{addr}: {e}"))?;
    let (head, text) = body.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{addr}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(parse(text))
}

/// Prometheus' text format, as much of it as Weir writes: `name{k="v",…} value` lines.
fn parse(text: &str) -> Sample {
    let mut out = Sample::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, labels(rest.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        out.insert((name.to_string(), labels), value);
    }
    out
}

fn labels(mut s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some((key, rest)) = s.split_once("=\"") {
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(if e == 'n' { '\n' } else { e });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').to_string(), value));
        s = &rest[end..];
    }
    out
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
}

/// Sums of `name` grouped by the value of label `by`.
fn by(sample: &Sample, name: &str, key: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for ((n, l), v) in sample {
        if n == name {
            *out.entry(label(l, key).to_string()).or_default() += v;
        }
    }
    out
}

fn rate(now: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, key: &str, secs: f64) -> f64 {
    (now.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)).max(0.0) / secs
}

fn screen(now: &Sample, before: &Sample, secs: f64, addr: &str) -> String {
    let mut out = String::new();
    let one = |s: &Sample, name: &str| s.get(&(name.to_string(), Vec::new())).copied().unwrap_or(0.0);
    let open = now.iter().find(|((n, l), _)| n == "weir_limit_used" && label(l, "limit") == "max.connections").map_or(0.0, |(_, v)| *v);
    out += &format!(
        "weir top — {addr} — {} topics, {} partitions, {open:.0} connections, RSS {:.0} MiB, CPU {:.0}%\n\n",
        one(now, "weir_topics"),
        one(now, "weir_partitions"),
        one(now, "process_resident_memory_bytes") / 1048576.0,
        (one(now, "process_cpu_seconds_total") - one(before, "process_cpu_seconds_total")).max(0.0) / secs * 100.0
    );
    out += &format!("{:<32} {:>14} {:>12} {:>15} {:>12}\n", "TOPIC", "RECORDS IN/S", "MB IN/S", "RECORDS OUT/S", "MB OUT/S");
    let per_topic = |name: &str| (by(now, name, "topic"), by(before, name, "topic"));
    let [rin, bin, rout, bout] =
        ["records_in", "bytes_in", "records_out", "bytes_out"].map(|c| per_topic(&format!("weir_partition_{c}_total")));
    let per_sec = |(now, before): &(BTreeMap<String, f64>, BTreeMap<String, f64>), topic: &str| rate(now, before, topic, secs);
    for topic in rin.0.keys() {
        out += &format!(
            "{:<32} {:>14.0} {:>12.2} {:>15.0} {:>12.2}\n",
            topic,
            per_sec(&rin, topic),
            per_sec(&bin, topic) / 1e6,
            per_sec(&rout, topic),
            per_sec(&bout, topic) / 1e6
        );
    }
    out += &format!("\n{:<24} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "API", "REQ/S", "ERRORS/S", "P50 MS", "P99 MS", "P99.9 MS");
    let (req, req0) = (by(now, "weir_requests_total", "api"), by(before, "weir_requests_total", "api"));
    let (err, err0) = (by(now, "weir_request_errors_total", "api"), by(before, "weir_request_errors_total", "api"));
    let pct = |name: &str, api: &str| {
        now.iter()
            .find(|((n, l), _)| n == name && label(l, "api") == api && label(l, "stage") == "total")
            .map_or("-".to_string(), |(_, v)| format!("{:.3}", v * 1e3))
    };
    for api in req.keys() {
        out += &format!(
            "{:<24} {:>10.0} {:>10.1} {:>10} {:>10} {:>10}\n",
            api,
            rate(&req, &req0, api, secs),
            rate(&err, &err0, api, secs),
            pct("weir_request_time_p50_seconds", api),
            pct("weir_request_time_p99_seconds", api),
            pct("weir_request_time_p999_seconds", api)
        );
    }
    let lag = by(now, "weir_group_total_lag", "group");
    if !lag.is_empty() {
        let members = by(now, "weir_group_members", "group");
        out += &format!("\n{:<32} {:>8} {:>14}\n", "GROUP", "MEMBERS", "LAG");
        for (group, l) in &lag {
            out += &format!("{:<32} {:>8.0} {:>14.0}\n", group, members.get(group).copied().unwrap_or(0.0), l);
        }
    }
    out
}

pub fn run(args: TopArgs) -> i32 {
    let interval = Duration::from_secs_f64(args.interval.max(0.1));
    let tty = std::io::stdout().is_terminal();
    let mut before = match scrape(&args.metrics) {
        Ok(s) => (Instant::now(), s),
        Err(e) => return super::tools::fail(e),
    };
    let mut shown = 0;
    loop {
        std::thread::sleep(interval);
        let now = match scrape(&args.metrics) {
            Ok(s) => (Instant::now(), s),
            Err(e) => return super::tools::fail(e),
        };
        let text = screen(&now.1, &before.1, now.0.duration_since(before.0).as_secs_f64(), &args.metrics);
        let mut out = std::io::stdout().lock();
        let cleared = if tty { "\x1b[H\x1b[2J" } else { "" };
        if write!(out, "{cleared}{text}{}", if tty { "" } else { "\n" }).and_then(|()| out.flush()).is_err() {
            return 0;
        }
        before = now;
        shown += 1;
        if args.iterations.is_some_and(|n| shown >= n) {
            return 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weirs_exposition() {
        let s = parse("# HELP x y\nweir_topics 3\nweir_requests_total{api=\"Produce\"} 10\nq{a=\"x\\\"y\",b=\"z\"} 1.5\n");
        assert_eq!(s[&("weir_topics".to_string(), vec![])], 3.0);
        assert_eq!(s[&("weir_requests_total".to_string(), vec![("api".to_string(), "Produce".to_string())])], 10.0);
        let l = vec![("a".to_string(), "x\"y".to_string()), ("b".to_string(), "z".to_string())];
        assert_eq!(s[&("q".to_string(), l)], 1.5);
    }
}
