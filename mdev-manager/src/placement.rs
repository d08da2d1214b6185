//! Choosing a parent with room, and refusing over-commit before anything is written.
//!
//! Two resources are checked per parent:
//! - **VRAM**: the type's quota must fit in what the pool has left. For a running
//!   instance that is `pool_free_mb`; for a definition it is the pool minus the quotas
//!   of every definition on that parent and every running instance that has no
//!   definition (so all `auto` definitions can come up together at boot).
//! - **Engine time under `fixed_share`**: with that policy an instance of weight `w` is
//!   promised `w` % of one engine; the weights of a parent's instances may add up to at
//!   most `100 × engines`, else the promise cannot be kept. (Under `best_effort` and
//!   `equal_share` weights are relative and never over-commit.)
//!
//! Without `--parent` the parent is chosen by a policy: `spread` (the default) takes
//! the parent with the most VRAM left after placing, `pack` the one with the least
//! that still fits; ties go to the lowest-numbered parent.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// How to choose a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Most VRAM left after placing: spreads tenants over engines.
    #[default]
    Spread,
    /// Least VRAM left that still fits: fills one engine before the next.
    Pack,
}

impl FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "spread" => Ok(Self::Spread),
            "pack" => Ok(Self::Pack),
            _ => Err(format!(
                "placement policy `{s}` is unknown (spread or pack)"
            )),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Spread => "spread",
            Self::Pack => "pack",
        })
    }
}

/// What a parent has committed already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLoad {
    /// Parent name.
    pub parent: String,
    /// Pool size, MiB.
    pub pool_mb: u64,
    /// MiB committed (running instances, or definitions: see the module docs).
    pub used_mb: u64,
    /// Engine threads.
    pub engines: u64,
    /// Whether the parent's policy is `fixed_share`.
    pub fixed_share: bool,
    /// Σ weights of the committed instances.
    pub weight_sum: u64,
}

/// What a new instance needs on a given parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The type's quota, MiB.
    pub vram_mb: u64,
    /// Its effective weight (given, or the type's default).
    pub weight: u64,
}

impl ParentLoad {
    /// Counts `need` as committed (a vGPU planned in a batch).
    pub fn commit(&mut self, need: Need) {
        self.used_mb = self.used_mb.saturating_add(need.vram_mb);
        self.weight_sum = self.weight_sum.saturating_add(need.weight);
    }

    /// A load that admits exactly what both `self` and `other` (of the same parent)
    /// admit: the larger of each commitment.
    pub fn tighter(&self, other: &ParentLoad) -> ParentLoad {
        ParentLoad {
            used_mb: self.used_mb.max(other.used_mb),
            weight_sum: self.weight_sum.max(other.weight_sum),
            fixed_share: self.fixed_share || other.fixed_share,
            ..self.clone()
        }
    }

    /// MiB left.
    pub fn free_mb(&self) -> u64 {
        self.pool_mb.saturating_sub(self.used_mb)
    }

    /// `Ok` if `need` fits, else why not (one clause, naming the numbers).
    pub fn admit(&self, need: Need, what: &str) -> Result<(), String> {
        if need.vram_mb > self.free_mb() {
            return Err(format!(
                "{}: {what} needs {} MiB, {} of its {} MiB pool are left",
                self.parent,
                need.vram_mb,
                self.free_mb(),
                self.pool_mb
            ));
        }
        let limit = 100u64.saturating_mul(self.engines.max(1));
        if self.fixed_share && self.weight_sum.saturating_add(need.weight) > limit {
            return Err(format!(
                "{}: fixed_share weights would add up to {} (+{}), over {limit} ({} engine{} \
                 × 100%)",
                self.parent,
                self.weight_sum + need.weight,
                need.weight,
                self.engines,
                if self.engines == 1 { "" } else { "s" }
            ));
        }
        Ok(())
    }
}

/// Picks a parent for `need` (given per parent: `None` where the type is not offered).
/// The error lists every parent's reason.
pub fn choose(
    loads: &[ParentLoad],
    need: impl Fn(&ParentLoad) -> Option<Need>,
    policy: Placement,
    what: &str,
) -> Result<String, String> {
    let mut best: Option<(&ParentLoad, u64)> = None;
    let mut reasons = Vec::new();
    for load in loads {
        let Some(n) = need(load) else {
            reasons.push(format!("{}: does not offer that type", load.parent));
            continue;
        };
        if let Err(why) = load.admit(n, what) {
            reasons.push(why);
            continue;
        }
        let left = load.free_mb() - n.vram_mb;
        let better = match best {
            None => true,
            Some((_, b)) => match policy {
                Placement::Spread => left > b,
                Placement::Pack => left < b,
            },
        };
        if better {
            best = Some((load, left));
        }
    }
    match best {
        Some((load, _)) => Ok(load.parent.clone()),
        None if loads.is_empty() => Err(format!(
            "no vgpu_shim parent to place {what} on (is the module loaded? `modprobe vgpu_shim`)"
        )),
        None => Err(format!(
            "no parent has room for {what}: {}",
            reasons.join("; ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, pool: u64, used: u64) -> ParentLoad {
        ParentLoad {
            parent: name.into(),
            pool_mb: pool,
            used_mb: used,
            engines: 1,
            fixed_share: false,
            weight_sum: 0,
        }
    }

    const NEED: Need = Need {
        vram_mb: 512,
        weight: 10,
    };

    #[test]
    fn spread_and_pack() {
        let loads = [
            load("p0", 2048, 1024),
            load("p1", 2048, 0),
            load("p2", 1024, 0),
        ];
        assert_eq!(
            choose(&loads, |_| Some(NEED), Placement::Spread, "x"),
            Ok("p1".into())
        );
        assert_eq!(
            choose(&loads, |_| Some(NEED), Placement::Pack, "x"),
            Ok("p0".into())
        );
        // ties: the first (lowest) parent
        let even = [load("p0", 1024, 0), load("p1", 1024, 0)];
        assert_eq!(
            choose(&even, |_| Some(NEED), Placement::Spread, "x"),
            Ok("p0".into())
        );
        assert_eq!(
            choose(&even, |_| Some(NEED), Placement::Pack, "x"),
            Ok("p0".into())
        );
    }

    #[test]
    fn refusals_name_every_parent() {
        let mut fixed = load("p1", 4096, 0);
        fixed.fixed_share = true;
        fixed.weight_sum = 95;
        let loads = [load("p0", 1024, 768), fixed];
        let e = choose(&loads, |_| Some(NEED), Placement::Spread, "a 512M vGPU").unwrap_err();
        assert_eq!(
            e,
            "no parent has room for a 512M vGPU: p0: a 512M vGPU needs 512 MiB, 256 of its \
             1024 MiB pool are left; p1: fixed_share weights would add up to 105 (+10), over 100 \
             (1 engine × 100%)"
        );
        assert!(choose(&[], |_| Some(NEED), Placement::Pack, "x")
            .unwrap_err()
            .contains("modprobe"));
        assert_eq!("PACK".parse::<Placement>(), Ok(Placement::Pack));
        assert!("fill".parse::<Placement>().is_err());
    }
}
