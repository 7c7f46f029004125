//! The epoch clock of a streaming source: which epoch each record of each partition
//! belongs to, which epoch the source may still produce (its capability), and when a
//! partition has finished an epoch (its progress statement).
//!
//! ```text
//!   partition p:  epoch(o) = base_p + (o - origin_p) / N
//!
//!   record (p, o) ──► epoch(o); Progress(p, next) @ e once p is done with e (it read
//!                    e's last offset, or a record past e)
//!   frontier     = min over unfinished partitions of epoch(position_p)
//!   finish(p)    ──► Progress @ epoch(position_p); p no longer holds the frontier
//!   close(F)     ──► every partition still in F re-anchors at its position to F + 1
//! ```
//!
//! `close` is what lets a continuous run commit while some partitions are idle or slow:
//! after `commit_interval`, the oldest epoch is closed wherever each partition stands.
//! Offsets alone decide epochs otherwise, so a run that never closes by time (a backfill
//! to a fixed end) makes the same commits as a replay of the same records.
//!
//! # Invariants
//! - Epochs are monotone per partition, and never below the frontier already reported.
//! - Every record a partition produced in epoch `e` is covered by a progress statement at
//!   `e` whose `next_offset` is past it, once the partition leaves `e`.

use std::collections::BTreeMap;

use floe_engine::epoch::{Epoch, EpochPolicy};

/// Progress of one partition: it is read up to `next_offset` as of epoch `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockProgress {
    /// Table index.
    pub table: u32,
    /// Partition.
    pub partition: i32,
    /// Epoch the statement belongs to.
    pub epoch: Epoch,
    /// First offset not covered.
    pub next_offset: i64,
}

#[derive(Clone, Debug)]
struct PartitionState {
    origin: i64,
    base: Epoch,
    position: i64,
    /// Whether records were read since the last progress statement.
    unreported: bool,
    finished: bool,
}

impl PartitionState {
    fn epoch_of(&self, policy: &EpochPolicy, offset: i64) -> Epoch {
        self.base + policy.epoch_of(self.origin, offset)
    }
}

/// The clock over all partitions a source instance reads.
#[derive(Clone, Debug)]
pub struct SourceClock {
    policy: EpochPolicy,
    parts: BTreeMap<(u32, i32), PartitionState>,
}

impl SourceClock {
    /// A clock with no partitions.
    pub fn new(policy: EpochPolicy) -> SourceClock {
        SourceClock { policy, parts: BTreeMap::new() }
    }

    /// Adds a partition whose next record is at `position` and whose epoch grid starts at
    /// `origin` (the run's start offset for it).
    pub fn add(&mut self, table: u32, partition: i32, origin: i64, position: i64) {
        self.parts.insert(
            (table, partition),
            PartitionState { origin, base: 0, position: position.max(origin), unreported: false, finished: false },
        );
    }

    /// Accounts a record; returns its epoch and the progress statements it settles: the
    /// epoch the partition left (a gap in offsets can skip past its end) and the record's
    /// own epoch when the record was its last offset.
    pub fn observe(&mut self, table: u32, partition: i32, offset: i64) -> Option<(Epoch, [Option<ClockProgress>; 2])> {
        let policy = self.policy;
        let state = self.parts.get_mut(&(table, partition))?;
        let current = state.epoch_of(&policy, state.position);
        let epoch = state.epoch_of(&policy, offset).max(current);
        let left = (epoch > current && state.unreported).then_some(ClockProgress {
            table,
            partition,
            epoch: current,
            next_offset: state.position,
        });
        if epoch > state.epoch_of(&policy, offset) {
            // Re-anchored earlier: keep the record in the current epoch.
            state.origin = offset;
            state.base = epoch;
        }
        state.position = state.position.max(offset + 1);
        // The record filled its epoch: the partition is done with it (offsets only grow).
        let filled = state.epoch_of(&policy, state.position) > epoch;
        state.unreported = !filled;
        let done = filled.then_some(ClockProgress { table, partition, epoch, next_offset: state.position });
        Some((epoch, [left, done]))
    }

    /// The partition's position (next offset to read).
    pub fn position(&self, table: u32, partition: i32) -> Option<i64> {
        self.parts.get(&(table, partition)).map(|s| s.position)
    }

    /// The least epoch any unfinished partition may still produce (`None`: all finished).
    pub fn frontier(&self) -> Option<Epoch> {
        self.parts.values().filter(|s| !s.finished).map(|s| s.epoch_of(&self.policy, s.position)).min()
    }

    /// Marks a partition finished (it reached the end it was asked to read to).
    pub fn finish(&mut self, table: u32, partition: i32) -> Option<ClockProgress> {
        let policy = self.policy;
        let state = self.parts.get_mut(&(table, partition))?;
        if state.finished {
            return None;
        }
        state.finished = true;
        let report = state.unreported;
        state.unreported = false;
        report.then(|| ClockProgress {
            table,
            partition,
            epoch: state.epoch_of(&policy, state.position),
            next_offset: state.position,
        })
    }

    /// Whether a partition is finished.
    pub fn is_finished(&self, table: u32, partition: i32) -> bool {
        self.parts.get(&(table, partition)).is_some_and(|s| s.finished)
    }

    /// Finishes every partition (shutdown); returns their last progress statements.
    pub fn finish_all(&mut self) -> Vec<ClockProgress> {
        let keys: Vec<(u32, i32)> = self.parts.keys().copied().collect();
        keys.into_iter().filter_map(|(t, p)| self.finish(t, p)).collect()
    }

    /// Closes epoch `epoch` by time: every unfinished partition still in it re-anchors at
    /// its position to `epoch + 1`. Returns the progress statements of those that read
    /// records in it.
    pub fn close(&mut self, epoch: Epoch) -> Vec<ClockProgress> {
        let keys: Vec<(u32, i32)> = self.parts.keys().copied().collect();
        keys.into_iter().filter_map(|(t, p)| self.lift(t, p, epoch + 1)).collect()
    }

    /// Moves an unfinished partition that is below epoch `to` up to it, re-anchored at its
    /// position (an idle partition must not hold back the others). Returns its progress
    /// statement for the epoch it leaves, if it read records there.
    pub fn lift(&mut self, table: u32, partition: i32, to: Epoch) -> Option<ClockProgress> {
        let policy = self.policy;
        let state = self.parts.get_mut(&(table, partition))?;
        let current = state.epoch_of(&policy, state.position);
        if state.finished || current >= to {
            return None;
        }
        let report =
            state.unreported.then_some(ClockProgress { table, partition, epoch: current, next_offset: state.position });
        state.unreported = false;
        state.origin = state.position;
        state.base = to;
        report
    }

    /// The epoch a partition's next record would get.
    pub fn epoch(&self, table: u32, partition: i32) -> Option<Epoch> {
        self.parts.get(&(table, partition)).map(|s| s.epoch_of(&self.policy, s.position))
    }

    /// The greatest epoch any unfinished partition is in.
    pub fn leader(&self) -> Option<Epoch> {
        self.parts.values().filter(|s| !s.finished).map(|s| s.epoch_of(&self.policy, s.position)).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_decide_epochs_and_progress() {
        let mut c = SourceClock::new(EpochPolicy::every(10));
        c.add(0, 0, 100, 100);
        c.add(0, 1, 0, 0);
        assert_eq!(c.frontier(), Some(0));
        assert_eq!(c.observe(0, 0, 105), Some((0, [None, None])));
        assert_eq!(
            c.observe(0, 0, 112),
            Some((1, [Some(ClockProgress { table: 0, partition: 0, epoch: 0, next_offset: 106 }), None]))
        );
        // Partition 1 has read nothing: it holds the frontier at 0.
        assert_eq!(c.frontier(), Some(0));
        assert_eq!(c.finish(0, 1), None, "nothing read, nothing to report");
        assert_eq!(c.frontier(), Some(1));
        assert_eq!(c.finish(0, 0), Some(ClockProgress { table: 0, partition: 0, epoch: 1, next_offset: 113 }));
        assert_eq!(c.frontier(), None);
    }

    #[test]
    fn closing_by_time_moves_idle_partitions_along() {
        let mut c = SourceClock::new(EpochPolicy::every(1000));
        c.add(0, 0, 0, 0);
        c.add(0, 1, 0, 0);
        c.observe(0, 0, 3);
        let closed = c.close(0);
        assert_eq!(closed, vec![ClockProgress { table: 0, partition: 0, epoch: 0, next_offset: 4 }]);
        assert_eq!(c.frontier(), Some(1), "the idle partition no longer holds epoch 0");
        // Later records land in the new epoch, offsets keep counting from the anchor.
        assert_eq!(c.observe(0, 1, 0), Some((1, [None, None])));
        // Partition 0 read nothing in epoch 1, so leaving it states nothing.
        assert_eq!(c.observe(0, 0, 1004), Some((2, [None, None])));
    }

    #[test]
    fn the_last_offset_of_an_epoch_settles_it_at_once() {
        let mut c = SourceClock::new(EpochPolicy::every(10));
        c.add(0, 0, 0, 0);
        for o in 0..9 {
            assert_eq!(c.observe(0, 0, o), Some((0, [None, None])));
        }
        // Offset 9 fills epoch 0: its progress comes now, before the frontier leaves 0.
        assert_eq!(
            c.observe(0, 0, 9),
            Some((0, [None, Some(ClockProgress { table: 0, partition: 0, epoch: 0, next_offset: 10 })]))
        );
        assert_eq!(c.frontier(), Some(1));
        // A gap past two epochs: epoch 1 is left (nothing read there, nothing stated) and
        // the record fills epoch 2 on its own.
        assert_eq!(
            c.observe(0, 0, 29),
            Some((2, [None, Some(ClockProgress { table: 0, partition: 0, epoch: 2, next_offset: 30 })]))
        );
        assert_eq!(c.finish(0, 0), None, "everything read was stated");
    }

    #[test]
    fn epochs_never_go_backwards() {
        let mut c = SourceClock::new(EpochPolicy::every(10));
        c.add(0, 0, 0, 0);
        c.observe(0, 0, 25);
        // An offset that would map below the current epoch (e.g. after a re-anchor) stays.
        let (e, _) = c.observe(0, 0, 26).expect("known");
        assert_eq!(e, 2);
    }

    #[test]
    fn lifting_moves_only_partitions_behind() {
        let mut c = SourceClock::new(EpochPolicy::every(10));
        c.add(0, 0, 0, 0);
        c.add(0, 1, 0, 0);
        c.observe(0, 0, 35);
        c.observe(0, 1, 2);
        assert_eq!(c.leader(), Some(3));
        assert_eq!(c.lift(0, 1, 3), Some(ClockProgress { table: 0, partition: 1, epoch: 0, next_offset: 3 }));
        assert_eq!(c.epoch(0, 1), Some(3));
        assert_eq!(c.lift(0, 0, 3), None, "already there");
        assert_eq!(c.frontier(), Some(3));
        // The lifted partition counts its grid from where it was lifted.
        assert_eq!(c.observe(0, 1, 5), Some((3, [None, None])));
        assert_eq!(
            c.observe(0, 1, 13),
            Some((4, [Some(ClockProgress { table: 0, partition: 1, epoch: 3, next_offset: 6 }), None]))
        );
    }
}
