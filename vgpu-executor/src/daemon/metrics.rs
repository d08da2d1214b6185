//! The daemon's counters, as a Prometheus text file (node_exporter's textfile collector
//! reads such files) and as a log line.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// The opcodes that have pieces, in counter order.
pub const OPCODES: [&str; 5] = ["fill", "copy", "checksum", "gemm", "blit"];

/// What the daemon has done since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Pieces completed OK, by opcode ([`OPCODES`]).
    pub pieces: [u64; 5],
    /// Completions with status REFUSED (the executor's own checks, an unknown kind, a
    /// VRAM it cannot map or import).
    pub refused: u64,
    /// Completions with status FAILED (the device failed the submission).
    pub failed: u64,
    /// RETIRE entries.
    pub retires: u64,
    /// Entries dropped without a completion (sequence number 0).
    pub bad_entries: u64,
    /// Times the submission indices were absurd (more than the ring holds) and clamped.
    pub bad_indices: u64,
    /// Times the completion ring had no room after a kick.
    pub cq_full: u64,
    /// VRAM mappings made (and imported).
    pub maps: u64,
    /// VRAMs mapped now.
    pub mapped: u64,
    /// GPU submissions (batches of pieces).
    pub submissions: u64,
    /// Kicks.
    pub kicks: u64,
    /// Nanoseconds spent executing pieces (recording, submission, wait).
    pub busy_ns: u64,
}

impl Metrics {
    /// Pieces completed OK, all opcodes.
    pub fn pieces_total(&self) -> u64 {
        self.pieces.iter().sum()
    }

    /// The Prometheus text exposition of the counters, labelled with the parent.
    pub fn prometheus(&self, parent: &str) -> String {
        let mut s = String::new();
        let l = format!("parent=\"{}\"", parent.replace(['\\', '"', '\n'], "_"));
        let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
            let _ = writeln!(s, "# HELP vgpu_executor_{name} {help}");
            let _ = writeln!(s, "# TYPE vgpu_executor_{name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(s, "vgpu_executor_{name}{{{labels}}} {v}");
            }
        };
        let by_op: Vec<_> = OPCODES
            .iter()
            .zip(self.pieces)
            .map(|(op, v)| (format!("{l},opcode=\"{op}\""), v))
            .collect();
        metric(
            "pieces_total",
            "counter",
            "Pieces completed OK, by opcode.",
            &by_op,
        );
        let one = |v: u64| [(l.clone(), v)];
        metric(
            "refused_total",
            "counter",
            "Pieces completed REFUSED.",
            &one(self.refused),
        );
        metric(
            "failed_total",
            "counter",
            "Pieces completed FAILED.",
            &one(self.failed),
        );
        metric(
            "retires_total",
            "counter",
            "RETIRE entries.",
            &one(self.retires),
        );
        metric(
            "bad_entries_total",
            "counter",
            "Entries dropped without a completion (sequence number 0).",
            &one(self.bad_entries),
        );
        metric(
            "bad_indices_total",
            "counter",
            "Absurd submission indices, clamped.",
            &one(self.bad_indices),
        );
        metric(
            "cq_full_total",
            "counter",
            "Completion ring found full after a kick.",
            &one(self.cq_full),
        );
        metric(
            "vram_maps_total",
            "counter",
            "VRAM mappings made.",
            &one(self.maps),
        );
        metric(
            "vram_mapped",
            "gauge",
            "Instances whose VRAM is mapped now.",
            &one(self.mapped),
        );
        metric(
            "submissions_total",
            "counter",
            "GPU submissions (batches of pieces).",
            &one(self.submissions),
        );
        metric("kicks_total", "counter", "Kicks.", &one(self.kicks));
        let _ = writeln!(
            s,
            "# HELP vgpu_executor_busy_seconds_total Time spent executing pieces.\n\
             # TYPE vgpu_executor_busy_seconds_total counter\n\
             vgpu_executor_busy_seconds_total{{{l}}} {:.6}",
            self.busy_ns as f64 / 1e9
        );
        s
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let ops: Vec<_> = OPCODES
            .iter()
            .zip(self.pieces)
            .map(|(op, v)| format!("{op} {v}"))
            .collect();
        format!(
            "pieces {} ({}), refused {}, failed {}, retires {}, bad entries {}, bad indices {}, \
             VRAM maps {} ({} mapped), submissions {}, kicks {}, busy {:.3} s",
            self.pieces_total(),
            ops.join(", "),
            self.refused,
            self.failed,
            self.retires,
            self.bad_entries,
            self.bad_indices,
            self.maps,
            self.mapped,
            self.submissions,
            self.kicks,
            self.busy_ns as f64 / 1e9
        )
    }

    /// Write the Prometheus text to `path` atomically (a temporary file next to it,
    /// then rename).
    pub fn write_file(&self, path: &Path, parent: &str) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, self.prometheus(parent))?;
        std::fs::rename(&tmp, path)
    }
}
