//! The scheduler's and engine's counters as sysfs shows them (docs/device-abi.md,
//! docs/scheduler.md): per instance and per parent, plus the latency histogram.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Counters of one instance (`/sys/bus/mdev/devices/<uuid>/vgpu/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstanceCounters {
    /// Engine time spent running its commands, ns (`busy_ns`).
    pub busy_ns: u64,
    /// Wall time runnable but held back by a cap or fixed share, ns (`throttled_ns`).
    pub throttled_ns: u64,
    /// Commands completed (`jobs`).
    pub jobs: u64,
    /// Commands rejected: errors and watchdog (`cmds_failed`).
    pub cmds_failed: u64,
    /// Times an engine picked it (`slices`).
    pub slices: u64,
    /// Commands pending in its ring now (`queue_depth`).
    pub queue_depth: u64,
    /// GEMM multiply-adds done (`macs`).
    pub macs: u64,
    /// Times it took an engine from a running slice on waking (`preemptions`); `None`
    /// on a module without wake-up preemption.
    pub preemptions: Option<u64>,
    /// Submission latency histogram (`latency_hist`).
    pub latency: LatencyHist,
}

/// Scheduler knobs and counters of one parent (`/sys/class/mdev_bus/<parent>/vgpu/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParentCounters {
    /// Engine threads (`engines`).
    pub engines: u64,
    /// Scheduling policy (`policy`): `best_effort`, `equal_share` or `fixed_share`.
    pub policy: String,
    /// Slice length, µs (`slice_us`).
    pub slice_us: u64,
    /// Watchdog, ms of engine time without a fence (`watchdog_ms`).
    pub watchdog_ms: u64,
    /// Engine time running instances, summed over engines, ns (`busy_ns`).
    pub busy_ns: u64,
    /// Engine time with nothing eligible, summed over engines, ns (`idle_ns`).
    pub idle_ns: u64,
    /// Slices started for a different instance than the engine's previous one.
    pub switches: u64,
    /// GEMM multiply-adds of all instances ever, removed ones included (`macs`).
    pub macs: u64,
    /// Wake-up preemption on (`preempt`); `None` on a module without it.
    pub preempt: Option<bool>,
    /// Slices its engines ended early for a waking instance (`preemptions`); `None` on a
    /// module without wake-up preemption.
    pub preemptions: Option<u64>,
    /// The executor (`executor`, `executor_*`); `None` on a module without external
    /// executor mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorCounters>,
}

/// A parent's executor mode and its external executor's counters (docs/executor.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExecutorCounters {
    /// `executor`: `cpu` or `external`.
    pub mode: String,
    /// `executor_connected`: a daemon has the parent's executor device open.
    pub connected: bool,
    /// `executor_handoffs`: pieces handed to a daemon.
    pub handoffs: u64,
    /// `executor_requeues`: pieces handed again to a new daemon.
    pub requeues: u64,
    /// `executor_errors`: completions dropped or failed, queue indices out of range.
    pub errors: u64,
}

/// A latency histogram: `(upper bound ns, count)` per non-empty bucket, ascending, and
/// the count of samples in buckets the kernel could not print (`more <count>`, the
/// largest ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LatencyHist {
    /// Non-empty buckets, ascending by upper bound.
    pub buckets: Vec<(u64, u64)>,
    /// Samples in buckets beyond the printed ones.
    pub more: u64,
}

impl LatencyHist {
    /// Parses `latency_hist`: lines `<upper ns> <count>`, ascending, optionally a last
    /// `more <count>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut h = Self::default();
        for (i, line) in text.lines().enumerate() {
            let mut it = line.split(' ');
            let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
                return Err(format!(
                    "line {}: `{line}` is not `<upper ns> <count>`",
                    i + 1
                ));
            };
            let count = crate::model::parse_decimal(b)
                .ok_or_else(|| format!("line {}: count `{b}` is not a decimal", i + 1))?;
            if h.more != 0 || (a == "more" && i + 1 != text.lines().count()) {
                return Err(format!("line {}: `more` must be the last line", i + 1));
            }
            if a == "more" {
                h.more = count;
                continue;
            }
            let upper = crate::model::parse_decimal(a)
                .ok_or_else(|| format!("line {}: bound `{a}` is not a decimal", i + 1))?;
            if h.buckets.last().is_some_and(|&(prev, _)| prev >= upper) {
                return Err(format!("line {}: bounds are not ascending", i + 1));
            }
            h.buckets.push((upper, count));
        }
        Ok(h)
    }

    /// Samples in the histogram.
    pub fn total(&self) -> u64 {
        self.buckets
            .iter()
            .fold(self.more, |acc, &(_, c)| acc.saturating_add(c))
    }

    /// Samples whose bucket's upper bound is at most `le_ns` (a lower bound on the
    /// samples ≤ `le_ns`: a bucket is at most 1/16 of its lower bound wide).
    pub fn count_le(&self, le_ns: u64) -> u64 {
        self.buckets
            .iter()
            .filter(|&&(u, _)| u <= le_ns)
            .fold(0, |acc, &(_, c)| acc.saturating_add(c))
    }

    /// The upper bound of the bucket holding the `q`-quantile (0 < q ≤ 1), or `None`
    /// without samples; `Some(u64::MAX)` when it falls in the unprinted tail.
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // The rank of the quantile sample, 1-based: ceil(q * total), at least 1.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for &(upper, count) in &self.buckets {
            seen = seen.saturating_add(count);
            if seen >= rank {
                return Some(upper);
            }
        }
        Some(u64::MAX)
    }

    /// The difference `self − earlier` bucket by bucket (for a window between two
    /// reads); a bucket that shrank (the histogram was cleared) counts from zero.
    pub fn since(&self, earlier: &LatencyHist) -> LatencyHist {
        let cleared = self.total() < earlier.total();
        let buckets = self
            .buckets
            .iter()
            .map(|&(u, c)| {
                let before = if cleared {
                    0
                } else {
                    earlier
                        .buckets
                        .iter()
                        .find(|&&(eu, _)| eu == u)
                        .map_or(0, |&(_, ec)| ec)
                };
                (u, c.saturating_sub(before))
            })
            .filter(|&(_, c)| c > 0)
            .collect();
        let more = if cleared {
            self.more
        } else {
            self.more.saturating_sub(earlier.more)
        };
        LatencyHist { buckets, more }
    }
}

impl FromStr for LatencyHist {
    type Err = Error;

    /// [`LatencyHist::parse`], with the text in the error.
    fn from_str(text: &str) -> Result<Self, Error> {
        Self::parse(text).map_err(|_| Error::Parse {
            what: "latency_hist",
            text: text.to_string(),
        })
    }
}

/// A parent's scheduling policy (`vgpu/policy`, docs/scheduler.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Weighted fair share, work-conserving.
    BestEffort,
    /// Equal shares whatever the weights, work-conserving.
    EqualShare,
    /// Each instance gets at most its weight's share of the engines, even when idle.
    FixedShare,
}

impl Policy {
    /// Every policy.
    pub const ALL: [Policy; 3] = [Policy::BestEffort, Policy::EqualShare, Policy::FixedShare];

    /// The sysfs spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::BestEffort => "best_effort",
            Policy::EqualShare => "equal_share",
            Policy::FixedShare => "fixed_share",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = Error;
    /// Exactly one of the three names (one trailing newline tolerated).
    fn from_str(s: &str) -> Result<Self, Error> {
        let t = s.strip_suffix('\n').unwrap_or(s);
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == t)
            .ok_or_else(|| Error::Parse {
                what: "scheduling policy",
                text: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_summarises() {
        let h = LatencyHist::parse("1000 5\n2000 4\n4000 1\n").unwrap();
        assert_eq!(h.total(), 10);
        assert_eq!(h.quantile_ns(0.5), Some(1000));
        assert_eq!(h.quantile_ns(0.51), Some(2000));
        assert_eq!(h.quantile_ns(0.99), Some(4000));
        assert_eq!(h.count_le(2000), 9);
        assert_eq!(h.count_le(1999), 5);
        let empty = LatencyHist::parse("").unwrap();
        assert_eq!(empty.quantile_ns(0.5), None);
        let more = LatencyHist::parse("10 1\nmore 3\n").unwrap();
        assert_eq!((more.total(), more.quantile_ns(0.99)), (4, Some(u64::MAX)));
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "10",
            "10 x",
            "x 1",
            "20 1\n10 1",
            "more 1\n10 1",
            "10  1",
            "10 1 2",
        ] {
            assert!(LatencyHist::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn windows() {
        let a = LatencyHist::parse("1000 5\n2000 4\n").unwrap();
        let b = LatencyHist::parse("1000 6\n2000 4\n8000 2\n").unwrap();
        let d = b.since(&a);
        assert_eq!(d.buckets, vec![(1000, 1), (8000, 2)]);
        let cleared = LatencyHist::parse("2000 1\n").unwrap();
        assert_eq!(cleared.since(&a).buckets, vec![(2000, 1)]);
    }

    #[test]
    fn policies() {
        for p in Policy::ALL {
            assert_eq!(p.as_str().parse::<Policy>().expect("parse"), p);
            assert_eq!(format!("{p}\n").parse::<Policy>().expect("newline"), p);
        }
        for bad in [
            "",
            "best",
            "BEST_EFFORT",
            " best_effort",
            "best_effort ",
            "fixed_share\n\n",
        ] {
            assert!(bad.parse::<Policy>().is_err(), "{bad:?}");
        }
    }
}
