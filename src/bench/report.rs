//! weir-bench's outputs: the final table, JSON (every key names its unit), HdrHistogram's
//! percentile distribution (`.hgrm`) and a self-contained HTML report with inline SVG charts.

use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::path::Path;

pub struct Report {
    pub mode: String,
    pub settings: Vec<(String, String)>,
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// (messages, bytes) in each measured second.
    pub per_second: Vec<(u64, u64)>,
    pub latency_us: Histogram<u64>,
    /// Open loop only: how late batches left beyond their linger (the generator's own delays).
    pub send_lag_us: Option<Histogram<u64>>,
}

const PERCENTILES: [(&str, f64); 6] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("p99.99", 99.99), ("max", 100.0)];

impl Report {
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }

    fn percentile_us(&self, p: f64) -> u64 {
        if p >= 100.0 {
            self.latency_us.max()
        } else {
            self.latency_us.value_at_percentile(p)
        }
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "mode {}: {} messages, {:.1} MB in {:.2} s", self.mode, self.messages, self.bytes as f64 / 1e6, self.seconds);
        let _ = writeln!(s, "  throughput   {:>12.0} msgs/s   {:>9.1} MB/s", self.msgs_per_sec(), self.mb_per_sec());
        if !self.latency_us.is_empty() {
            let _ = write!(s, "  latency µs  ");
            for (name, p) in PERCENTILES {
                let _ = write!(s, " {name} {}", self.percentile_us(p));
            }
            let _ = writeln!(s, "  ({} samples)", self.latency_us.len());
        }
        if let Some(lag) = self.send_lag_us.as_ref().filter(|h| !h.is_empty()) {
            let _ = writeln!(
                s,
                "  send lag µs   p50 {} p99 {} p99.9 {} max {}  (how late batches left the generator; included above)",
                lag.value_at_percentile(50.0),
                lag.value_at_percentile(99.0),
                lag.value_at_percentile(99.9),
                lag.max()
            );
        }
        s
    }

    pub fn json(&self) -> String {
        let mut s = String::from("{\n");
        let _ = writeln!(s, "  \"mode\": \"{}\",", self.mode);
        let settings: Vec<String> = self.settings.iter().map(|(k, v)| format!("\"{k}\": \"{}\"", v.replace('"', "'"))).collect();
        let _ = writeln!(s, "  \"settings\": {{{}}},", settings.join(", "));
        let _ = writeln!(s, "  \"messages\": {},\n  \"bytes\": {},\n  \"duration_s\": {:.3},", self.messages, self.bytes, self.seconds);
        let _ = writeln!(s, "  \"msgs_per_sec\": {:.1},\n  \"mb_per_sec\": {:.3},", self.msgs_per_sec(), self.mb_per_sec());
        let _ = write!(s, "  \"latency\": {{\"samples\": {}, \"mean_us\": {:.1}", self.latency_us.len(), self.latency_us.mean());
        for (name, p) in PERCENTILES {
            let key = if name == "max" { "max_us".to_string() } else { format!("{}_us", name.replace('.', "_")) };
            let _ = write!(s, ", \"{key}\": {}", self.percentile_us(p));
        }
        s.push('}');
        if let Some(lag) = &self.send_lag_us {
            let _ = write!(
                s,
                ",\n  \"send_lag\": {{\"samples\": {}, \"p50_us\": {}, \"p99_us\": {}, \"p99_9_us\": {}, \"max_us\": {}}}",
                lag.len(),
                lag.value_at_percentile(50.0),
                lag.value_at_percentile(99.0),
                lag.value_at_percentile(99.9),
                lag.max()
            );
        }
        s.push_str(",\n  \"per_second\": [");
        let rows: Vec<String> = self
            .per_second
            .iter()
            .enumerate()
            .map(|(i, (m, b))| format!("{{\"t_s\": {}, \"msgs_per_sec\": {m}, \"mb_per_sec\": {:.3}}}", i + 1, *b as f64 / 1e6))
            .collect();
        s.push_str(&rows.join(", "));
        s.push_str("]\n}\n");
        s
    }

    /// HdrHistogram's percentile distribution, values in milliseconds.
    pub fn hgrm(&self) -> String {
        let h = &self.latency_us;
        let mut s = format!("{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
        if h.is_empty() {
            return s;
        }
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 { format!("{:>14.2}", 1.0 / (1.0 - q)) } else { String::new() };
            let _ =
                writeln!(s, "{:>12.3} {:>14.12} {:>10} {inv}", v.value_iterated_to() as f64 / 1000.0, q, v.count_since_last_iteration());
        }
        let _ = writeln!(s, "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]", h.mean() / 1000.0, h.stdev() / 1000.0);
        let _ = writeln!(s, "#[Max     = {:>12.3}, Total count    = {:>12}]", h.max() as f64 / 1000.0, h.len());
        let _ = writeln!(s, "#[Buckets = {:>12}, SubBuckets     = {:>12}]", h.buckets(), h.distinct_values());
        s
    }

    pub fn html(&self) -> String {
        let mut curve = Vec::new();
        if !self.latency_us.is_empty() {
            for v in self.latency_us.iter_quantiles(5) {
                let q = v.quantile_iterated_to().min(0.999_999);
                curve.push(((1.0 / (1.0 - q)).log10(), v.value_iterated_to() as f64));
            }
        }
        let throughput: Vec<(f64, f64)> = self.per_second.iter().enumerate().map(|(i, (m, _))| ((i + 1) as f64, *m as f64)).collect();
        let settings: String = self.settings.iter().map(|(k, v)| format!("<tr><td>{k}</td><td>{}</td></tr>", escape(v))).collect();
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>weir-bench {mode}</title>\
             <style>body{{font-family:sans-serif;margin:2em}}td{{padding:2px 8px}}pre{{background:#f4f4f4;padding:1em}}</style></head><body>\
             <h1>weir-bench {mode}</h1><pre>{table}</pre><table>{settings}</table>\
             <h2>Latency by percentile (µs)</h2>{lat}<p>x axis: 1/(1−percentile), log scale: 1 = p0, 10 = p90, 100 = p99, 1000 = p99.9.</p>\
             <h2>Throughput over time (messages/s)</h2>{thr}</body></html>\n",
            mode = self.mode,
            table = escape(&self.table()),
            lat = svg_line(&curve, "1/(1-p), log10", "µs"),
            thr = svg_line(&throughput, "second", "msgs/s"),
        )
    }

    pub fn write_all(&self, json: Option<&Path>, hgrm: Option<&Path>, html: Option<&Path>) -> std::io::Result<()> {
        if let Some(p) = json {
            std::fs::write(p, self.json())?;
        }
        if let Some(p) = hgrm {
            std::fs::write(p, self.hgrm())?;
        }
        if let Some(p) = html {
            std::fs::write(p, self.html())?;
        }
        Ok(())
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A line chart as inline SVG, axes labelled with their ranges.
fn svg_line(points: &[(f64, f64)], x_label: &str, y_label: &str) -> String {
    let (w, h, pad) = (720.0, 300.0, 50.0);
    if points.is_empty() {
        return "<p>no data</p>".into();
    }
    let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let y1 = points.iter().fold(0.0f64, |a, p| a.max(p.1)).max(1.0);
    let sx = |x: f64| pad + (x - x0) / (x1 - x0).max(1e-9) * (w - 2.0 * pad);
    let sy = |y: f64| h - pad - y / y1 * (h - 2.0 * pad);
    let path: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"black\"/>\
         <polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\" points=\"{pts}\"/>\
         <text x=\"{pad}\" y=\"{lx}\" font-size=\"12\">{x0:.1}</text><text x=\"{r}\" y=\"{lx}\" font-size=\"12\" text-anchor=\"end\">{x1:.1} ({x_label})</text>\
         <text x=\"4\" y=\"{pad}\" font-size=\"12\">{y1:.0} {y_label}</text><text x=\"4\" y=\"{b}\" font-size=\"12\">0</text></svg>",
        b = h - pad,
        r = w - pad,
        lx = h - pad + 16.0,
        pts = path.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_carry_units_and_percentiles() {
        let mut h = super::super::histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let r = Report {
            mode: "produce".into(),
            settings: vec![("msg_size".into(), "100".into())],
            messages: 2000,
            bytes: 200_000,
            seconds: 2.0,
            per_second: vec![(1000, 100_000), (1000, 100_000)],
            latency_us: h,
            send_lag_us: None,
        };
        assert_eq!(r.msgs_per_sec(), 1000.0);
        let json = r.json();
        for key in ["\"msgs_per_sec\": 1000.0", "\"p50_us\": 500", "\"p99_us\": 990", "\"p99_9_us\": ", "\"max_us\": 1000", "\"t_s\": 2"] {
            assert!(json.contains(key), "{key} in {json}");
        }
        assert!(r.hgrm().contains("#[Max     =        1.000"));
        let html = r.html();
        assert!(html.contains("<svg") && !html.contains("http://") || html.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    }
}
