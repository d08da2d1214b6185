//! The samples and the report (medians, minima, the goals).

use std::fmt::Write as _;
use std::time::Duration;

#[derive(Default)]
pub struct Samples {
    pub failed: bool,
    rows: Vec<(&'static str, String, Vec<Duration>)>,
}

impl Samples {
    pub fn add(&mut self, op: &'static str, who: &str, d: Duration) {
        match self.rows.iter_mut().find(|(o, w, _)| *o == op && w == who) {
            Some((_, _, v)) => v.push(d),
            None => self.rows.push((op, who.to_string(), vec![d])),
        }
    }

    /// (median, minimum) in ms. On a loaded host the minimum is the run least
    /// disturbed by others; the median what a user sees.
    fn stats(&self, op: &str, who: &str) -> Option<(f64, f64)> {
        let (_, _, v) = self.rows.iter().find(|(o, w, _)| *o == op && w == who)?;
        let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Some((ms[ms.len() / 2], ms[0]))
    }

    pub fn report(&self) -> String {
        let mut out = format!(
            "\n{:<9} {:<44} {:>10} {:>10} {:>8}\n",
            "op", "tool", "median ms", "min ms", "samples"
        );
        for (op, who, v) in &self.rows {
            let (m, lo) = self.stats(op, who).unwrap_or_default();
            let _ = writeln!(out, "{op:<9} {who:<44} {m:>10.1} {lo:>10.1} {:>8}", v.len());
        }
        // "a / b (min: a / b)": how many times b is faster.
        let ratio = |op_a: &str, a: &str, op_b: &str, b: &str| match (
            self.stats(op_a, a),
            self.stats(op_b, b),
        ) {
            (Some((ma, la)), Some((mb, lb))) if mb > 0.0 && lb > 0.0 => {
                format!("{:.1}x (min {:.1}x)", ma / mb, la / lb)
            }
            _ => "-".into(),
        };
        let ms = |op: &str, who: &str| match self.stats(op, who) {
            Some((m, lo)) => format!("{m:.1} ms (min {lo:.1})"),
            None => "-".into(),
        };
        let _ = writeln!(out, "\ngoals (median, and min):");
        let _ = writeln!(
            out,
            "  a single call >= 3x faster than mdevctl's: create {}, remove {}",
            ratio("create", "mdevctl", "create", "vgpuctl"),
            ratio("remove", "mdevctl", "remove", "vgpuctl")
        );
        let _ = writeln!(
            out,
            "  list of 64 <= 10 ms: {} (mdevctl {})",
            ms("list64", "vgpuctl"),
            ms("list64", "mdevctl")
        );
        let mdev = "mdevctl define+start, 2 calls each";
        for who in [
            "vgpuctl apply (1 call)",
            "vgpuctl create --count (1 call, transient)",
            "vgpuctl define+start, 2 calls each",
        ] {
            let _ = writeln!(
                out,
                "  a batch of 64 >= 20x faster than mdevctl's define+start: {who} {}",
                ratio("batch64", mdev, "batch64", who)
            );
        }
        let _ = writeln!(
            out,
            "  start-up: vgpuctl --version {}, mdevctl --version {}, a trivial static binary {}",
            ms("version", "vgpuctl"),
            ms("version", "mdevctl"),
            ms("exec", "trivial")
        );
        out
    }
}
