//! `vgpuctl top`: per-vGPU rates over a window between two snapshots: engine share
//! (Δbusy_ns / Δwall, in % of one engine), throttled time (Δthrottled_ns / Δwall),
//! jobs/s, GEMM throughput (Δmacs / Δwall), wake-up preemptions/s (Δpreemptions / Δwall),
//! submission latency p50/p99 of the window (from `latency_hist`), VRAM used.

use serde::Serialize;
use uuid::Uuid;

use crate::render::{table, Left, Right};
use crate::stats::{InstanceStats, Snapshot};

/// One vGPU's line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopRow {
    /// The instance.
    pub uuid: Uuid,
    /// Its parent.
    pub parent: String,
    /// Its type.
    #[serde(rename = "type")]
    pub type_id: String,
    /// Weight.
    pub weight: u64,
    /// Cap (0 = none).
    pub cap: u64,
    /// Engine time in the window, % of one engine (`None` without a window).
    pub engine_pct: Option<f64>,
    /// Time throttled in the window, % of wall time.
    pub throttled_pct: Option<f64>,
    /// Commands completed per second.
    pub jobs_per_s: Option<f64>,
    /// GEMM multiply-adds per second.
    pub macs_per_s: Option<f64>,
    /// Times per second it took an engine from a running slice on waking (`None`
    /// without a window, or on a module without wake-up preemption).
    pub preempt_per_s: Option<f64>,
    /// Median submission latency in the window, ns (bucket upper bound).
    pub p50_ns: Option<u64>,
    /// 99th percentile submission latency in the window, ns.
    pub p99_ns: Option<u64>,
    /// Commands pending now.
    pub queue_depth: u64,
    /// VRAM touched, KiB.
    pub vram_used_kb: u64,
    /// VRAM quota, MiB.
    pub vram_mb: u64,
}

/// The rows for the window `before` → `now`, `elapsed_ns` of wall time apart. Without
/// `before` (or with a zero window) rates are `None` and the latencies cover the whole
/// histogram. Instances that appeared in the window count from zero.
pub fn rows(before: Option<&Snapshot>, now: &Snapshot, elapsed_ns: u64) -> Vec<TopRow> {
    now.instances
        .iter()
        .map(|i| {
            let prev: Option<&InstanceStats> = before.and_then(|b| {
                b.instances
                    .iter()
                    .find(|p| p.instance.uuid == i.instance.uuid)
            });
            let windowed = before.is_some() && elapsed_ns > 0;
            let c = &i.counters;
            let d = |cur: u64, old: Option<u64>| cur.saturating_sub(old.unwrap_or(0)) as f64;
            let rate = |cur: u64, old: Option<u64>| {
                windowed.then(|| d(cur, old) * 1e9 / elapsed_ns as f64)
            };
            let pct = |cur: u64, old: Option<u64>| {
                windowed.then(|| d(cur, old) * 100.0 / elapsed_ns as f64)
            };
            let hist = match (windowed, prev) {
                (true, Some(p)) => c.latency.since(&p.counters.latency),
                _ => c.latency.clone(),
            };
            TopRow {
                uuid: i.instance.uuid,
                parent: i.instance.parent.clone(),
                type_id: i.instance.type_id.clone(),
                weight: i.instance.weight,
                cap: i.instance.cap,
                engine_pct: pct(c.busy_ns, prev.map(|p| p.counters.busy_ns)),
                throttled_pct: pct(c.throttled_ns, prev.map(|p| p.counters.throttled_ns)),
                jobs_per_s: rate(c.jobs, prev.map(|p| p.counters.jobs)),
                macs_per_s: rate(c.macs, prev.map(|p| p.counters.macs)),
                preempt_per_s: c
                    .preemptions
                    .and_then(|cur| rate(cur, prev.and_then(|p| p.counters.preemptions))),
                p50_ns: hist.quantile_ns(0.5),
                p99_ns: hist.quantile_ns(0.99),
                queue_depth: c.queue_depth,
                vram_used_kb: i.instance.vram_used_kb,
                vram_mb: i.instance.vram_mb,
            }
        })
        .collect()
}

fn fixed(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

/// A latency as people read it: `850ns`, `12.5us`, `3.2ms`, `1.20s`, `>68s` for the
/// unbounded last bucket.
pub fn human_ns(ns: Option<u64>) -> String {
    match ns {
        None => "-".into(),
        Some(u64::MAX) => ">68s".into(),
        Some(n) if n < 1_000 => format!("{n}ns"),
        Some(n) if n < 1_000_000 => format!("{:.1}us", n as f64 / 1e3),
        Some(n) if n < 1_000_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        Some(n) => format!("{:.2}s", n as f64 / 1e9),
    }
}

/// The table.
pub fn render(rows: &[TopRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.uuid.to_string()[..8].to_string(),
                r.parent.clone(),
                r.type_id
                    .strip_prefix(crate::model::TYPE_PREFIX)
                    .unwrap_or(&r.type_id)
                    .to_string(),
                r.weight.to_string(),
                if r.cap == 0 {
                    "-".into()
                } else {
                    format!("{}%", r.cap)
                },
                fixed(r.engine_pct, 1),
                fixed(r.throttled_pct, 1),
                fixed(r.jobs_per_s, 0),
                fixed(r.macs_per_s.map(|m| m / 1e9), 3),
                fixed(r.preempt_per_s, 0),
                human_ns(r.p50_ns),
                human_ns(r.p99_ns),
                r.queue_depth.to_string(),
                format!("{}/{}", r.vram_used_kb / 1024, r.vram_mb),
            ]
        })
        .collect();
    table(
        &[
            ("VGPU", Left),
            ("PARENT", Left),
            ("TYPE", Left),
            ("W", Right),
            ("CAP", Right),
            ("ENGINE%", Right),
            ("THROTL%", Right),
            ("JOBS/S", Right),
            ("GMAC/S", Right),
            ("PREEMPT/S", Right),
            ("P50", Right),
            ("P99", Right),
            ("QUEUE", Right),
            ("VRAM_MB", Right),
        ],
        &body,
    )
}
