//! Schema drift: comparing what a source now says about a table with the table's column
//! model, and deciding, under the table's policy, what floe does about it.
//!
//! ```text
//!   table schema + source columns/key ──► diff: [Change] ──► policy ──► Unchanged
//!                                                                    │  Evolve(new schema)
//!                                                                    └─ Pause(changes, way out)
//! ```
//!
//! | change                                   | additive | lenient               | manual |
//! |------------------------------------------|----------|-----------------------|--------|
//! | new nullable column                      | evolve   | evolve                | pause  |
//! | int→long, float→double, wider decimal    | evolve   | evolve                | pause  |
//! | required → optional                      | evolve   | evolve                | pause  |
//! | dropped column                           | pause    | keep it, null from now| pause  |
//! | renamed column (= dropped + new)         | pause    | keep old, add new     | pause  |
//! | narrowed type (source fits the table)    | pause    | keep the wider type   | pause  |
//! | incompatible type, changed primary key   | pause, cannot be approved: re-bootstrap     |
//!
//! # Invariants
//! - Evolution only appends columns and widens or relaxes existing ones, so a column's
//!   position never changes and the base table's field id stays `position + 1` (the CDC
//!   table's `position + 5`): rows decoded under an older schema are a prefix of the new
//!   layout, and writers pad them with nulls.
//! - Absence is not a drop: a source that lacks a nullable column (an older record in a
//!   lagging partition, say) writes null. A drop is what the caller observed, a partition
//!   whose records had the column and now do not (`dropped`), or a required column missing.
//! - A column the table keeps after the source dropped it is *retired*: it stays nullable and
//!   is not reported as dropped again. Records that still carry it (older records, re-read
//!   after an approval) write their values; that is not a change either.
//! - Approving a pause applies the lenient resolution of the same changes; a change that is
//!   not approvable never changes the table.
//! - `decide` is pure and deterministic: replays make the same decisions at the same records.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::schema::{Column, ColumnType, TableSchema};

/// What a table does with schema changes (`schema_changes` in a `[[tables]]` entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaPolicy {
    /// Apply additive changes; pause the table on anything else.
    #[default]
    Additive,
    /// Also keep dropped columns (null from then on) and treat renames as new columns.
    Lenient,
    /// Pause on every change until `floe schema approve`.
    Manual,
}

impl SchemaPolicy {
    /// Parses a configuration value.
    pub fn parse(text: &str) -> Option<SchemaPolicy> {
        match text {
            "additive" => Some(SchemaPolicy::Additive),
            "lenient" => Some(SchemaPolicy::Lenient),
            "manual" => Some(SchemaPolicy::Manual),
            _ => None,
        }
    }

    /// The configuration value.
    pub fn name(self) -> &'static str {
        match self {
            SchemaPolicy::Additive => "additive",
            SchemaPolicy::Lenient => "lenient",
            SchemaPolicy::Manual => "manual",
        }
    }

    /// How the audit records a change this policy applied by itself.
    pub fn automatic_approval(self) -> String {
        format!("automatic ({})", self.name())
    }
}

/// One difference between a table and its source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A column the table does not have.
    AddColumn {
        /// Column name.
        name: String,
        /// Its type.
        ty: ColumnType,
    },
    /// A lossless widening: int → long, float → double, decimal(p, s) → decimal(p', s), p' > p.
    Widen {
        /// Column name.
        name: String,
        /// Table type.
        from: ColumnType,
        /// Source type.
        to: ColumnType,
    },
    /// A required column became optional.
    MakeOptional {
        /// Column name.
        name: String,
    },
    /// The source no longer has a (non-retired) column.
    DropColumn {
        /// Column name.
        name: String,
    },
    /// The source's type is narrower than the table's, and its values fit the table's type.
    Narrow {
        /// Column name.
        name: String,
        /// Table type.
        from: ColumnType,
        /// Source type.
        to: ColumnType,
    },
    /// A type change Iceberg cannot express.
    Incompatible {
        /// Column name.
        name: String,
        /// Table type.
        from: ColumnType,
        /// Source type.
        to: ColumnType,
    },
    /// The primary key changed.
    ChangeKey {
        /// Table key.
        from: Vec<String>,
        /// Source key.
        to: Vec<String>,
    },
}

impl Change {
    /// Whether the change is additive (applied automatically under `additive`).
    pub fn is_additive(&self) -> bool {
        matches!(self, Change::AddColumn { .. } | Change::Widen { .. } | Change::MakeOptional { .. })
    }

    /// Whether approval (or `lenient`) can resolve it without rewriting the table.
    pub fn is_approvable(&self) -> bool {
        !matches!(self, Change::Incompatible { .. } | Change::ChangeKey { .. })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddColumn { name, ty } => write!(f, "new column `{name}` {ty}"),
            Change::Widen { name, from, to } => write!(f, "column `{name}` widened from {from} to {to}"),
            Change::MakeOptional { name } => write!(f, "column `{name}` became optional"),
            Change::DropColumn { name } => write!(f, "column `{name}` was dropped"),
            Change::Narrow { name, from, to } => write!(f, "column `{name}` narrowed from {from} to {to}"),
            Change::Incompatible { name, from, to } => write!(f, "column `{name}` changed type from {from} to {to}"),
            Change::ChangeKey { from, to } => write!(f, "primary key changed from {from:?} to {to:?}"),
        }
    }
}

/// What a source says a table looks like now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceShape {
    /// The source's columns, in source order.
    pub columns: Vec<Column>,
    /// The source's key columns, when it says (Debezium record keys do).
    pub key: Option<Vec<String>>,
}

/// What floe does about a source shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The table already fits the source.
    Unchanged,
    /// Evolve the table to `schema`; `retired` is the new set of retired columns.
    Evolve {
        /// The new column model.
        schema: TableSchema,
        /// Columns kept after the source dropped them.
        retired: BTreeSet<String>,
        /// What changed.
        changes: Vec<Change>,
    },
    /// Stop committing the table until the changes are approved (or forever, if not
    /// approvable).
    Pause {
        /// What changed.
        changes: Vec<Change>,
    },
}

/// Whether a column of type `table` holds values of type `source` unchanged: equal, or a
/// lossless widening the writers perform.
pub fn writable(table: ColumnType, source: ColumnType) -> bool {
    use ColumnType::*;
    match (table, source) {
        (a, b) if a == b => true,
        (Long, Int) | (Double, Float) => true,
        (Decimal { precision: p, scale: s }, Decimal { precision: q, scale: t }) => s == t && q <= p,
        _ => false,
    }
}

/// What the caller saw a source do, beyond its current shape: a partition whose records
/// lost a field (`dropped`) or changed a field to a narrower type (`narrowed`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Fields the source stopped sending.
    pub dropped: BTreeSet<String>,
    /// Fields the source now sends with a narrower type.
    pub narrowed: BTreeSet<String>,
}

/// The differences between `table` (with its `retired` columns) and `source`, given what
/// was `observed`. A narrower source type that the table's type holds is only a change when
/// observed (otherwise it is an older record, e.g. from a partition that lags a widening).
pub fn diff(table: &TableSchema, retired: &BTreeSet<String>, source: &SourceShape, observed: &Observed) -> Vec<Change> {
    let dropped = &observed.dropped;
    let mut changes = Vec::new();
    // Iceberg's identifier fields are a set: compare keys as sets.
    let sorted = |k: &[String]| {
        let mut k = k.to_vec();
        k.sort();
        k
    };
    if let Some(key) = &source.key
        && sorted(key) != sorted(&table.key_names())
    {
        changes.push(Change::ChangeKey { from: table.key_names(), to: key.clone() });
    }
    for c in &source.columns {
        match table.position(&c.name) {
            None => changes.push(Change::AddColumn { name: c.name.clone(), ty: c.ty }),
            Some(p) => {
                let t = &table.columns[p];
                if t.ty != c.ty {
                    if writable(c.ty, t.ty) {
                        changes.push(Change::Widen { name: c.name.clone(), from: t.ty, to: c.ty });
                    } else if writable(t.ty, c.ty) {
                        if observed.narrowed.contains(&c.name) {
                            changes.push(Change::Narrow { name: c.name.clone(), from: t.ty, to: c.ty });
                        }
                    } else {
                        changes.push(Change::Incompatible { name: c.name.clone(), from: t.ty, to: c.ty });
                    }
                }
                if !t.nullable && c.nullable && !table.key.contains(&p) {
                    changes.push(Change::MakeOptional { name: c.name.clone() });
                }
            }
        }
    }
    for (p, t) in table.columns.iter().enumerate() {
        let in_source = source.columns.iter().any(|c| c.name == t.name);
        let gone = dropped.contains(&t.name) || !t.nullable;
        if !in_source && gone && !retired.contains(&t.name) && !table.key.contains(&p) {
            changes.push(Change::DropColumn { name: t.name.clone() });
        }
    }
    changes
}

/// Applies the lenient resolution of `changes` to `table`. Fails on an unapprovable change.
pub fn apply(
    table: &TableSchema,
    retired: &BTreeSet<String>,
    changes: &[Change],
) -> Result<(TableSchema, BTreeSet<String>)> {
    let mut columns = table.columns.clone();
    let mut retired = retired.clone();
    for change in changes {
        let at = |name: &str| columns.iter().position(|c: &Column| c.name == name);
        match change {
            Change::AddColumn { name, ty } => {
                // A retired column coming back is a column again.
                if let Some(p) = at(name) {
                    if !writable(columns[p].ty, *ty) {
                        return Err(Error::new(
                            ErrorKind::Data,
                            format!("column `{name}` came back as {ty} but the table keeps it as {}", columns[p].ty),
                        ));
                    }
                } else {
                    columns.push(Column { name: name.clone(), ty: *ty, nullable: true });
                }
                retired.remove(name);
            }
            Change::Widen { name, to, .. } => {
                if let Some(p) = at(name) {
                    columns[p].ty = *to;
                }
            }
            Change::MakeOptional { name } => {
                if let Some(p) = at(name) {
                    columns[p].nullable = true;
                }
            }
            Change::DropColumn { name } => {
                if let Some(p) = at(name) {
                    columns[p].nullable = true;
                }
                retired.insert(name.clone());
            }
            Change::Narrow { .. } => {}
            Change::Incompatible { .. } | Change::ChangeKey { .. } => {
                return Err(Error::new(
                    ErrorKind::Data,
                    format!("{change}: Iceberg cannot express this safely; re-bootstrap the table"),
                ));
            }
        }
    }
    let schema = TableSchema::new(columns, &table.key_names())?;
    Ok((schema, retired))
}

/// Decides what to do about `source` (given what was `observed`) under `policy`.
pub fn decide(
    table: &TableSchema,
    retired: &BTreeSet<String>,
    source: &SourceShape,
    observed: &Observed,
    policy: SchemaPolicy,
) -> Decision {
    let changes = diff(table, retired, source, observed);
    if changes.is_empty() {
        return Decision::Unchanged;
    }
    let automatic = match policy {
        SchemaPolicy::Additive => changes.iter().all(Change::is_additive),
        SchemaPolicy::Lenient => changes.iter().all(Change::is_approvable),
        SchemaPolicy::Manual => false,
    };
    if !automatic {
        return Decision::Pause { changes };
    }
    match apply(table, retired, &changes) {
        Ok((schema, retired)) => Decision::Evolve { schema, retired, changes },
        Err(_) => Decision::Pause { changes },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
        Column { name: name.into(), ty, nullable }
    }

    fn table() -> TableSchema {
        TableSchema::new(
            vec![
                col("id", ColumnType::Long, false),
                col("qty", ColumnType::Int, true),
                col("price", ColumnType::Decimal { precision: 10, scale: 2 }, true),
                col("name", ColumnType::String, false),
            ],
            &["id".to_string()],
        )
        .expect("schema")
    }

    fn source(edit: impl FnOnce(&mut Vec<Column>)) -> SourceShape {
        let mut columns = table().columns;
        edit(&mut columns);
        SourceShape { columns, key: Some(vec!["id".into()]) }
    }

    /// Decides with the columns `s` lacks counted as dropped.
    fn evolve(s: &SourceShape, policy: SchemaPolicy) -> Decision {
        decide(&table(), &BTreeSet::new(), s, &lacks(s), policy)
    }

    /// Everything `s` lacks or narrows, as observed.
    fn lacks(s: &SourceShape) -> Observed {
        let t = table();
        let dropped = t.columns.iter().filter(|c| !s.columns.iter().any(|x| x.name == c.name)).map(|c| c.name.clone());
        let narrowed = s.columns.iter().filter(|c| t.position(&c.name).is_some_and(|p| t.columns[p].ty != c.ty));
        Observed { dropped: dropped.collect(), narrowed: narrowed.map(|c| c.name.clone()).collect() }
    }

    #[test]
    fn the_same_shape_is_unchanged() {
        assert_eq!(evolve(&source(|_| {}), SchemaPolicy::Additive), Decision::Unchanged);
        assert_eq!(evolve(&source(|_| {}), SchemaPolicy::Manual), Decision::Unchanged);
    }

    #[test]
    fn additive_changes_evolve_in_place_and_append() {
        let s = source(|c| {
            c[1].ty = ColumnType::Long;
            c[2].ty = ColumnType::Decimal { precision: 12, scale: 2 };
            c[3].nullable = true;
            c.insert(1, col("note", ColumnType::String, true));
        });
        let Decision::Evolve { schema, changes, .. } = evolve(&s, SchemaPolicy::Additive) else { panic!("evolve") };
        assert_eq!(changes.len(), 4, "{changes:?}");
        let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "qty", "price", "name", "note"], "positions never move");
        assert_eq!(schema.columns[1].ty, ColumnType::Long);
        assert!(schema.columns[3].nullable && schema.columns[4].nullable);
        assert_eq!(evolve(&s, SchemaPolicy::Manual), Decision::Pause { changes });
    }

    #[test]
    fn drops_renames_and_narrowing_pause_unless_lenient() {
        let renamed = source(|c| c[3].name = "full_name".into());
        let Decision::Pause { changes } = evolve(&renamed, SchemaPolicy::Additive) else { panic!("pause") };
        assert_eq!(
            changes,
            vec![
                Change::AddColumn { name: "full_name".into(), ty: ColumnType::String },
                Change::DropColumn { name: "name".into() }
            ]
        );
        let Decision::Evolve { schema, retired, .. } = evolve(&renamed, SchemaPolicy::Lenient) else { panic!() };
        assert_eq!(schema.columns.len(), 5);
        assert!(schema.columns[3].nullable, "the dropped column is kept, nullable");
        assert!(retired.contains("name"));
        // Once retired, its absence is not drift again.
        assert_eq!(decide(&schema, &retired, &renamed, &lacks(&renamed), SchemaPolicy::Additive), Decision::Unchanged);

        let narrowed = source(|c| c[0].ty = ColumnType::Int);
        assert!(matches!(evolve(&narrowed, SchemaPolicy::Additive), Decision::Pause { .. }));
        assert!(matches!(evolve(&narrowed, SchemaPolicy::Lenient), Decision::Evolve { .. }));
    }

    #[test]
    fn absence_of_a_nullable_column_is_not_a_drop() {
        let lagging = source(|c| {
            c.remove(1);
        });
        let (none, nothing) = (BTreeSet::new(), Observed::default());
        assert_eq!(decide(&table(), &none, &lagging, &nothing, SchemaPolicy::Additive), Decision::Unchanged);
        // Nor is an older, narrower type (a partition lagging a widening).
        let older = source(|c| c[0].ty = ColumnType::Int);
        assert_eq!(decide(&table(), &none, &older, &nothing, SchemaPolicy::Additive), Decision::Unchanged);
        // A required column is never silently absent.
        let no_name = source(|c| {
            c.remove(3);
        });
        assert!(matches!(decide(&table(), &none, &no_name, &nothing, SchemaPolicy::Additive), Decision::Pause { .. }));
    }

    #[test]
    fn key_order_is_not_a_key_change() {
        let t = TableSchema::new(
            vec![col("a", ColumnType::Int, false), col("b", ColumnType::String, false)],
            &["a".to_string(), "b".to_string()],
        )
        .expect("schema");
        let s = SourceShape { columns: t.columns.clone(), key: Some(vec!["b".into(), "a".into()]) };
        assert_eq!(decide(&t, &BTreeSet::new(), &s, &Observed::default(), SchemaPolicy::Additive), Decision::Unchanged);
    }

    #[test]
    fn key_and_incompatible_changes_are_never_applied() {
        let mut rekeyed = source(|_| {});
        rekeyed.key = Some(vec!["name".into()]);
        let retyped = source(|c| c[1].ty = ColumnType::String);
        for s in [rekeyed, retyped] {
            let Decision::Pause { changes } = evolve(&s, SchemaPolicy::Lenient) else { panic!("pause") };
            assert!(changes.iter().any(|c| !c.is_approvable()));
            let e = apply(&table(), &BTreeSet::new(), &changes).expect_err("not approvable");
            assert!(e.to_string().contains("re-bootstrap"), "{e}");
        }
    }

    #[test]
    fn a_retired_column_that_shows_up_again_is_no_change() {
        let dropped = source(|c| {
            c.remove(1);
        });
        let Decision::Evolve { schema, retired, .. } = evolve(&dropped, SchemaPolicy::Lenient) else { panic!() };
        assert!(retired.contains("qty"));
        // Older records (say, re-read after an approval) still carry it.
        let older = SourceShape { columns: table().columns, key: Some(vec!["id".into()]) };
        let none = Observed::default();
        assert_eq!(decide(&schema, &retired, &older, &none, SchemaPolicy::Additive), Decision::Unchanged);
    }
}
