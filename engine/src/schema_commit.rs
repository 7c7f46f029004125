//! Schema changes inside commits: which schema a commit makes current, and the audit
//! records and retired columns that travel with it.
//!
//! # Invariants
//! - Schemas never move back: a table whose current schema already covers a proposed one
//!   keeps its schema (a pulled version committed ahead of an epoch written under the
//!   version before it).
//! - An identical existing schema is reused by id; nothing is audited twice.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use iceberg::spec::{Schema, SchemaRef, TableMetadata, TableMetadataBuilder};
use tracing::debug;

use crate::error::Result;
use crate::schema_audit::{
    AuditEntry, HISTORY_PROPERTY, PENDING_PROPERTY, RETIRED_PROPERTY, history, history_json, merged, now_ms,
    retired_from, retired_value,
};

/// A schema the commit must make current (if it is not already), with its audit records.
#[derive(Clone, Debug)]
pub struct SchemaCommit {
    /// The new Iceberg schema (field ids fixed; its schema id is assigned at commit).
    pub schema: Schema,
    /// Columns kept after the source dropped them.
    pub retired: BTreeSet<String>,
    /// Changes to record (their schema ids are filled in at commit); entries already in the
    /// table's history are skipped.
    pub audit: Vec<AuditEntry>,
}

/// The id `schema` gets in `metadata`: an identical existing schema's, else a new one.
fn schema_id_for(metadata: &TableMetadata, schema: &Schema) -> (i32, bool) {
    for existing in metadata.schemas_iter() {
        if existing.as_struct() == schema.as_struct()
            && existing.identifier_field_ids().collect::<Vec<_>>() == schema.identifier_field_ids().collect::<Vec<_>>()
        {
            return (existing.schema_id(), false);
        }
    }
    (metadata.schemas_iter().map(|s| s.schema_id()).max().unwrap_or(0) + 1, true)
}

/// Whether `current` holds everything `proposed` does: each field (same id and name) at
/// least as wide and as optional, and the same identifier fields.
pub fn covers(current: &Schema, proposed: &Schema) -> bool {
    use iceberg::spec::{PrimitiveType as P, Type};
    let ids = |s: &Schema| s.identifier_field_ids().collect::<BTreeSet<_>>();
    let wider = |c: &Type, p: &Type| match (c, p) {
        (Type::Primitive(P::Long), Type::Primitive(P::Int)) => true,
        (Type::Primitive(P::Double), Type::Primitive(P::Float)) => true,
        (
            Type::Primitive(P::Decimal { precision: pc, scale: sc }),
            Type::Primitive(P::Decimal { precision: pp, scale: sp }),
        ) => sc == sp && pc >= pp,
        _ => c == p,
    };
    ids(current) == ids(proposed)
        && proposed.as_struct().fields().iter().all(|p| {
            current
                .field_by_id(p.id)
                .is_some_and(|c| c.name == p.name && (!c.required || p.required) && wider(&c.field_type, &p.field_type))
        })
}

/// Schemas never move back: whether the table is already past `change` (a pulled version
/// committed before an epoch written under the version before it), so it keeps its schema.
fn is_ahead(metadata: &TableMetadata, change: &SchemaCommit) -> bool {
    covers(metadata.current_schema(), &change.schema)
        && metadata.current_schema().as_struct() != change.schema.as_struct()
        && retired_from(metadata.properties()).is_superset(&change.retired)
}

/// The schema a commit's snapshot carries, with the id it has (or gets) in `metadata`: the
/// current schema without a change or when the table is ahead of it, else the change's.
/// Every manifest the commit writes is written under it, so a manifest's schema id always
/// names the schema its entries' bounds are typed by.
pub fn snapshot_schema(metadata: &TableMetadata, change: Option<&SchemaCommit>) -> Result<SchemaRef> {
    match change {
        Some(change) if !is_ahead(metadata, change) => {
            let (id, _) = schema_id_for(metadata, &change.schema);
            Ok(Arc::new(change.schema.clone().into_builder().with_schema_id(id).build()?))
        }
        _ => Ok(Arc::clone(metadata.current_schema())),
    }
}

/// Applies a schema change to a metadata builder: adds and selects the schema, records the
/// audit entries and retired columns, clears a pending change. Returns the builder and the
/// schema id that is current afterwards.
pub fn apply_schema_change(
    metadata: &TableMetadata,
    mut builder: TableMetadataBuilder,
    change: &SchemaCommit,
) -> Result<(TableMetadataBuilder, i32)> {
    let old_id = metadata.current_schema_id();
    if is_ahead(metadata, change) {
        debug!(schema_id = old_id, "the table's schema is ahead of this commit's; kept");
        return Ok((builder, old_id));
    }
    let (new_id, is_new) = schema_id_for(metadata, &change.schema);
    if is_new || new_id != old_id {
        builder = builder.add_current_schema(change.schema.clone())?;
    }
    let now = now_ms();
    // A table already at the schema (and retired columns) records nothing: the change was
    // applied and audited before, perhaps found another way (a push before a crash, a pull
    // after it). Retiring a nullable column changes no schema, but is a change.
    let unchanged = new_id == old_id && retired_from(metadata.properties()) == change.retired;
    let entries: Vec<AuditEntry> = match unchanged {
        true => Vec::new(),
        false => change
            .audit
            .iter()
            .map(|e| AuditEntry { old_schema_id: old_id, new_schema_id: new_id, applied_at_ms: now, ..e.clone() })
            .collect(),
    };
    let history = merged(history(metadata)?, &entries);
    let mut props = HashMap::from([(HISTORY_PROPERTY.to_string(), history_json(&history))]);
    if !change.retired.is_empty() || metadata.properties().contains_key(RETIRED_PROPERTY) {
        props.insert(RETIRED_PROPERTY.to_string(), retired_value(&change.retired));
    }
    builder = builder.set_properties(props)?;
    if metadata.properties().contains_key(PENDING_PROPERTY) {
        builder = builder.remove_properties(&[PENDING_PROPERTY.to_string()])?;
    }
    Ok((builder, new_id))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use iceberg::spec::{NestedField, PrimitiveType, Type};

    use super::*;

    fn schema(fields: &[(i32, &str, PrimitiveType, bool)]) -> Schema {
        let fields = fields
            .iter()
            .map(|(id, name, ty, required)| {
                Arc::new(NestedField::new(*id, *name, Type::Primitive(ty.clone()), *required))
            })
            .collect::<Vec<_>>();
        Schema::builder().with_fields(fields).with_identifier_field_ids([1]).build().expect("schema")
    }

    #[test]
    fn a_snapshot_schema_has_the_id_the_table_gives_it() {
        use PrimitiveType::{Int, Long};
        use iceberg::spec::{FormatVersion, PartitionSpec, SortOrder};
        let v0 = schema(&[(1, "id", Long, true), (2, "qty", Int, false)]);
        let metadata = TableMetadataBuilder::new(
            v0.clone(),
            PartitionSpec::unpartition_spec(),
            SortOrder::unsorted_order(),
            "memory:///t".into(),
            FormatVersion::V2,
            HashMap::new(),
        )
        .expect("builder")
        .build()
        .expect("metadata")
        .metadata;
        let change = |schema: Schema| SchemaCommit { schema, retired: BTreeSet::new(), audit: Vec::new() };
        assert_eq!(snapshot_schema(&metadata, None).expect("current").schema_id(), 0);
        let v1 = snapshot_schema(&metadata, Some(&change(schema(&[(1, "id", Long, true), (2, "qty", Long, false)]))))
            .expect("widened");
        assert_eq!(v1.schema_id(), 1, "a new schema gets the next id, not the 0 it was built with");
        assert_eq!(v1.field_by_id(2).map(|f| f.field_type.to_string()), Some("long".to_string()));
        assert_eq!(
            snapshot_schema(&metadata, Some(&change(v0))).expect("same").schema_id(),
            0,
            "an existing one its own"
        );
    }

    #[test]
    fn a_wider_schema_covers_the_ones_before_it_and_not_the_reverse() {
        use PrimitiveType::*;
        let v0 = schema(&[(1, "id", Long, true), (2, "qty", Int, true)]);
        let v1 = schema(&[(1, "id", Long, true), (2, "qty", Int, true), (3, "note", String, false)]);
        let v2 = schema(&[(1, "id", Long, true), (2, "qty", Long, false), (3, "note", String, false)]);
        assert!(covers(&v1, &v0) && covers(&v2, &v1) && covers(&v2, &v0) && covers(&v1, &v1));
        assert!(!covers(&v0, &v1), "a missing column");
        assert!(!covers(&v1, &v2), "narrower and required");
        let renamed = schema(&[(1, "id", Long, true), (2, "quantity", Int, true)]);
        assert!(!covers(&renamed, &v0));
        let dec = |p| schema(&[(1, "id", Long, true), (2, "d", Decimal { precision: p, scale: 2 }, false)]);
        assert!(covers(&dec(12), &dec(10)) && !covers(&dec(10), &dec(12)));
    }
}
