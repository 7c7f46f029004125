//! Change events as a differential collection keyed by primary key, and the per-epoch
//! upsert that consolidation yields.
//!
//! Each event is an update to the collection `BucketKey → Upsert` at its epoch:
//!
//! ```text
//!   insert  c(after)           ⇒  (prior: Absent,          after: Some(after))
//!   delete  d(before)          ⇒  (prior: Present(before), after: None)
//!   update  u(before, after)   ⇒  (prior: Present(before), after: Some(after))
//!   update  u(—, after)        ⇒  (prior: Unknown,         after: Some(after))   no before image
//! ```
//!
//! [`Upsert`] is the difference type, a commutative semigroup: adding two updates keeps the
//! prior of the earliest event and the after image of the latest (by source order: offset,
//! then partition). So consolidating a key's updates within an epoch yields exactly the net
//! change `prior → after`, which is the upsert, however many times the key changed, and
//! whether or not events carried before images. "−before, +after" is the same information,
//! kept as a pair instead of two signed rows so that before-less updates and redelivered
//! events still come out right.
//!
//! # Invariants
//! - `plus_equals` is associative and commutative (min / max by a unique sequence number),
//!   so differential may consolidate in any order.
//! - No `Upsert` is zero: every touched key reaches the writer, which decides via
//!   [`Upsert::action`] whether anything changed.

use differential_dataflow::difference::{IsZero, Semigroup};
use floe_engine::value::Row;
use serde::{Deserialize, Serialize};

use crate::debezium::{Event, Op};

/// Source order of an event: offset, then partition (a key lives in one partition).
pub type Seq = (i64, i32);

/// What a key held before the epoch's first change to it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Prior {
    /// The source says the key did not exist.
    Absent,
    /// The source's before image, by digest of its JSON text.
    Present(u128),
    /// The source did not say (no before image, or an upserting insert).
    Unknown,
}

/// The consolidated change of one key within one epoch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Upsert {
    /// Sequence of the earliest event.
    pub first: Seq,
    /// State before the earliest event.
    pub prior: Prior,
    /// Sequence of the latest event.
    pub last: Seq,
    /// State after the latest event (`None`: deleted).
    pub after: Option<Row>,
    /// Digest of the latest after image's JSON text.
    pub after_digest: Option<u128>,
}

/// The partitioned primary key: table, bucket, then key values. Sorting by it groups a
/// worker's updates by table and bucket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BucketKey {
    /// Table index.
    pub table: u32,
    /// Bucket of the key.
    pub bucket: u32,
    /// Primary-key values.
    pub key: Row,
}

/// What a writer must do for a key at the end of an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing changed.
    Noop,
    /// A new key: write the row.
    Insert(Row),
    /// Delete older rows of the key, then write the row.
    Replace(Row),
    /// Delete older rows of the key.
    Delete,
}

impl IsZero for Upsert {
    fn is_zero(&self) -> bool {
        false
    }
}

impl Semigroup for Upsert {
    fn plus_equals(&mut self, rhs: &Self) {
        if rhs.first < self.first {
            self.first = rhs.first;
            self.prior = rhs.prior.clone();
        }
        if rhs.last > self.last {
            self.last = rhs.last;
            self.after = rhs.after.clone();
            self.after_digest = rhs.after_digest;
        }
    }
}

impl Upsert {
    /// The update an event contributes. With `upsert_inserts`, inserts do not assert that
    /// the key was absent, so a redelivered insert cannot duplicate a row.
    pub fn from_event(event: Event, upsert_inserts: bool) -> Upsert {
        let seq = (event.offset, event.partition);
        let prior = match event.op {
            Op::Create | Op::Read if upsert_inserts => Prior::Unknown,
            Op::Create | Op::Read => Prior::Absent,
            Op::Update | Op::Delete => event.before_digest.map(Prior::Present).unwrap_or(Prior::Unknown),
        };
        Upsert { first: seq, prior, last: seq, after: event.after, after_digest: event.after_digest }
    }

    /// The net effect on the base table.
    pub fn action(self) -> Action {
        match (self.prior, self.after) {
            (Prior::Present(before), Some(_)) if Some(before) == self.after_digest => Action::Noop,
            (Prior::Absent, None) => Action::Noop,
            (Prior::Absent, Some(after)) => Action::Insert(after),
            (_, Some(after)) => Action::Replace(after),
            (_, None) => Action::Delete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_engine::value::Value;

    fn row(v: i64) -> Row {
        Row::new(vec![Value::Long(1), Value::Long(v)])
    }

    fn ev(offset: i64, op: Op, before: Option<i64>, after: Option<i64>) -> Event {
        // The digest of an image stands for its JSON text; here, for its value.
        Event {
            table: 0,
            partition: 0,
            offset,
            op,
            source_ts_ms: None,
            key: Row::new(vec![Value::Long(1)]),
            before: None,
            after: after.map(row),
            before_digest: before.map(|b| b as u128),
            after_digest: after.map(|a| a as u128),
        }
    }

    fn consolidate(events: &[Event], upsert: bool, order: &[usize]) -> Action {
        let mut acc: Option<Upsert> = None;
        for &i in order {
            let u = Upsert::from_event(events[i].clone(), upsert);
            match acc.as_mut() {
                None => acc = Some(u),
                Some(a) => a.plus_equals(&u),
            }
        }
        acc.expect("events").action()
    }

    #[test]
    fn net_change_is_independent_of_consolidation_order() {
        let events = vec![
            ev(1, Op::Update, Some(10), Some(11)),
            ev(2, Op::Update, None, Some(12)),
            ev(3, Op::Update, Some(12), Some(13)),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            assert_eq!(consolidate(&events, true, &order), Action::Replace(row(13)));
        }
    }

    #[test]
    fn round_trip_within_an_epoch_is_a_noop() {
        let events = vec![ev(1, Op::Update, Some(10), Some(11)), ev(2, Op::Update, Some(11), Some(10))];
        assert_eq!(consolidate(&events, true, &[1, 0]), Action::Noop);
    }

    #[test]
    fn insert_then_delete_within_an_epoch() {
        let events = vec![ev(1, Op::Create, None, Some(10)), ev(2, Op::Delete, Some(10), None)];
        assert_eq!(consolidate(&events, false, &[0, 1]), Action::Noop);
        // Upserting inserts cannot assert absence, so the key is deleted to be safe.
        assert_eq!(consolidate(&events, true, &[0, 1]), Action::Delete);
    }

    #[test]
    fn delete_then_reinsert_rewrites_the_row() {
        let events = vec![ev(1, Op::Delete, Some(10), None), ev(2, Op::Create, None, Some(10))];
        assert_eq!(consolidate(&events, false, &[1, 0]), Action::Noop);
        assert_eq!(consolidate(&events, true, &[1, 0]), Action::Noop);
        let changed = vec![ev(1, Op::Delete, Some(10), None), ev(2, Op::Create, None, Some(20))];
        assert_eq!(consolidate(&changed, true, &[1, 0]), Action::Replace(row(20)));
    }

    #[test]
    fn plain_insert_without_upsert() {
        assert_eq!(consolidate(&[ev(1, Op::Create, None, Some(5))], false, &[0]), Action::Insert(row(5)));
        assert_eq!(consolidate(&[ev(1, Op::Create, None, Some(5))], true, &[0]), Action::Replace(row(5)));
    }
}
