//! What the metrics thread remembers between scrapes: a point every `TICK` for the dashboard
//! (throughput and request-time percentiles of that interval), gathered only while someone watches
//! it, and copies of the request-time histograms taken at scrapes up to a minute back, for the
//! percentile gauges. A broker nobody scrapes or watches does no metrics work at all.

use super::exposition::Window;
use super::latency::Latency;
use super::recorder::{Recorder, Stage};
use super::snapshot::{Scrape, Traffic};
use std::collections::VecDeque;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// How often the metrics thread gathers for the dashboard.
pub const TICK: Duration = Duration::from_secs(2);
/// Points kept: 15 minutes.
const POINTS: usize = 450;
/// The percentile gauges' window, and how far apart the copies it is measured from are.
const WINDOW: Duration = Duration::from_secs(60);
const MARK_EVERY: Duration = Duration::from_secs(10);

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;

/// The dashboard's figures for one interval.
#[derive(Clone, Debug, Default)]
pub struct Point {
    pub unix_ms: i64,
    pub records_in_per_sec: f64,
    pub bytes_in_per_sec: f64,
    pub bytes_out_per_sec: f64,
    pub requests_per_sec: f64,
    /// p50, p99, p99.9 of the total request time, in ms, of the interval's Produce and Fetch requests.
    pub produce_ms: [f64; 3],
    pub fetch_ms: [f64; 3],
}

#[derive(Default)]
struct Totals {
    traffic: Traffic,
    requests: u64,
    produce: Latency,
    fetch: Latency,
}

fn totals(scrape: &Scrape, recorded: &Recorder) -> Totals {
    let mut t = Totals::default();
    for s in scrape.shards.iter().flatten() {
        t.traffic += s.traffic;
    }
    t.requests = recorded.apis.values().map(|a| a.requests).sum();
    let total = |api: i16| recorded.apis.get(&api).map(|a| a.stages[Stage::Total as usize].clone()).unwrap_or_default();
    t.produce = total(PRODUCE);
    t.fetch = total(FETCH);
    t
}

fn stage_copies(recorded: &Recorder) -> Window {
    let mut w = Window::new();
    for (api, a) in &recorded.apis {
        for (stage, h) in Stage::ALL.iter().zip(&a.stages) {
            w.insert((*api, *stage), h.clone());
        }
    }
    w
}

#[derive(Default)]
pub struct History {
    points: VecDeque<Point>,
    last: Option<(Instant, Totals)>,
    marks: VecDeque<(Instant, Window)>,
}

impl History {
    /// Takes in a gather made now.
    pub fn update(&mut self, scrape: &Scrape, unix_ms: i64) {
        let now = Instant::now();
        let recorded = scrape.recorded();
        let t = totals(scrape, &recorded);
        if let Some((at, last)) = &self.last {
            let secs = now.duration_since(*at).as_secs_f64().max(1e-3);
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            let ms = |h: Latency| [0.5, 0.99, 0.999].map(|q| h.quantile_seconds(q) * 1e3);
            self.points.push_back(Point {
                unix_ms,
                records_in_per_sec: rate(t.traffic.records_in, last.traffic.records_in),
                bytes_in_per_sec: rate(t.traffic.bytes_in, last.traffic.bytes_in),
                bytes_out_per_sec: rate(t.traffic.bytes_out, last.traffic.bytes_out),
                requests_per_sec: rate(t.requests, last.requests),
                produce_ms: ms(t.produce.since(&last.produce)),
                fetch_ms: ms(t.fetch.since(&last.fetch)),
            });
            if self.points.len() > POINTS {
                self.points.pop_front();
            }
        }
        self.last = Some((now, t));
    }

    /// Request times recorded in about the last minute (since the oldest copy kept, at most
    /// `WINDOW` + `MARK_EVERY` old), from `recorded` (a scrape's, now), which is kept as a copy
    /// if the last is `MARK_EVERY` old.
    pub fn window(&mut self, recorded: &Recorder) -> Window {
        let now = Instant::now();
        let copies = stage_copies(recorded);
        let window = match self.marks.front() {
            None => copies.clone(),
            Some((_, earlier)) => copies.iter().map(|(k, h)| (*k, earlier.get(k).map_or_else(|| h.clone(), |e| h.since(e)))).collect(),
        };
        if self.marks.back().is_none_or(|(at, _)| now.duration_since(*at) >= MARK_EVERY) {
            self.marks.push_back((now, copies));
            while self.marks.len() > 1 && now.duration_since(self.marks[1].0) >= WINDOW {
                self.marks.pop_front();
            }
        }
        window
    }

    /// The dashboard's points as JSON: `[{"t":ms,"rin":…,"bin":…,"bout":…,"req":…,"p":[…],"f":[…]}, …]`.
    pub fn points_json(&self) -> String {
        let mut out = String::from("[");
        for (i, p) in self.points.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}{{\"t\":{},\"rin\":{:.1},\"bin\":{:.1},\"bout\":{:.1},\"req\":{:.1},\"p\":[{:.3},{:.3},{:.3}],\"f\":[{:.3},{:.3},{:.3}]}}",
                p.unix_ms,
                p.records_in_per_sec,
                p.bytes_in_per_sec,
                p.bytes_out_per_sec,
                p.requests_per_sec,
                p.produce_ms[0],
                p.produce_ms[1],
                p.produce_ms[2],
                p.fetch_ms[0],
                p.fetch_ms[1],
                p.fetch_ms[2]
            );
        }
        out.push(']');
        out
    }
}
