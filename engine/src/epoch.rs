//! The epoch model: how source offsets become timely timestamps.
//!
//! An epoch is a `u64` timely timestamp. Each epoch becomes one atomic snapshot per table.
//! Epochs are derived from offsets only, never from wall-clock time, so replaying the same
//! offsets always produces the same commits:
//!
//! ```text
//!   partition p, origin o_p (first offset this run reads from p), N = records_per_epoch
//!
//!   offset:  o_p ........ o_p+N-1 | o_p+N ........ o_p+2N-1 | ...
//!   epoch:          0             |          1              | ...
//! ```
//!
//! # Invariants
//! - `epoch_of(origin, offset)` is monotone in `offset`, so a source can downgrade its
//!   capability as it reads each partition in order.
//! - A restart resumes at a committed offset, which is always an epoch boundary of the run
//!   that committed it (or the end of a log), so the resumed run's grid lines up with the
//!   old one.

use serde::{Deserialize, Serialize};

/// The timely timestamp floe's dataflows run on.
pub type Epoch = u64;

/// Rule mapping `(origin, offset)` of a partition to an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochPolicy {
    /// Records per partition in one epoch.
    pub records_per_epoch: u64,
}

impl EpochPolicy {
    /// A policy committing every `records_per_epoch` records of each partition.
    pub fn every(records_per_epoch: u64) -> EpochPolicy {
        EpochPolicy { records_per_epoch: records_per_epoch.max(1) }
    }

    /// The epoch of `offset` in a partition whose first read offset is `origin`.
    pub fn epoch_of(&self, origin: i64, offset: i64) -> Epoch {
        let delta = offset.saturating_sub(origin).max(0) as u64;
        delta / self.records_per_epoch
    }

    /// First offset of `epoch` in a partition with `origin`.
    pub fn epoch_start(&self, origin: i64, epoch: Epoch) -> i64 {
        origin.saturating_add((epoch.saturating_mul(self.records_per_epoch)) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_relative_to_origin() {
        let p = EpochPolicy::every(100);
        assert_eq!(p.epoch_of(1_000, 1_000), 0);
        assert_eq!(p.epoch_of(1_000, 1_099), 0);
        assert_eq!(p.epoch_of(1_000, 1_100), 1);
        assert_eq!(p.epoch_start(1_000, 3), 1_300);
        // A restart at a committed boundary keeps the grid.
        assert_eq!(p.epoch_of(1_200, 1_350), p.epoch_of(1_000, 1_350) - 2);
    }
}
