//! The table verifier: reads tables back and compares them with the reference model.
//! Format version 2 tables are read through iceberg-rust's scan (which applies equality and
//! position deletes); version 3 tables, whose deletion vectors that scan does not apply yet,
//! through the spec's rules directly (manifests, data files, vectors: `floe_engine::
//! table_files`), which the interop tests cross-check against Spark and pyiceberg.
//!
//! # Invariants
//! - Reading never trusts floe's own bookkeeping (key index, snapshot summaries): rows come
//!   from the table's current snapshot as any Iceberg reader would see them.
//! - Every mismatch report lists the differing rows (up to a limit), so a failure explains
//!   itself; callers add the seed.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use arrow_array::RecordBatch;
use floe_engine::arrow_value::value_at;
use floe_engine::catalog::TableCatalog;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::value::{Row, Value};
use futures::TryStreamExt;
use iceberg::TableIdent;

use crate::model::{TableModel, fingerprint};

/// A table read back: column names and rows.
#[derive(Clone, Debug, Default)]
pub struct TableRows {
    /// Column names in field order.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Row>,
}

impl TableRows {
    /// Position of a column.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// Reads a table's current snapshot (equality deletes applied).
pub async fn read_table(catalog: &dyn TableCatalog, ident: &TableIdent) -> Result<TableRows> {
    let table = catalog.table(ident).await?;
    let columns: Vec<String> =
        table.metadata().current_schema().as_struct().fields().iter().map(|f| f.name.clone()).collect();
    if table.metadata().current_snapshot().is_none() {
        return Ok(TableRows { columns, rows: Vec::new() });
    }
    if table.metadata().format_version() >= iceberg::spec::FormatVersion::V3 {
        return read_v3(catalog, table.metadata(), columns).await;
    }
    let scan = table.scan().select_all().build()?;
    let batches: Vec<RecordBatch> = scan.to_arrow().await?.try_collect().await?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(batch_rows(batch)?);
    }
    Ok(TableRows { columns, rows })
}

/// Reads a version 3 table by the spec: every live data file, minus the positions its
/// deletion vectors and position deletes name. (floe writes no equality deletes to v3
/// tables in vector mode; a table that has them is refused here rather than misread.)
async fn read_v3(
    catalog: &dyn TableCatalog,
    metadata: &iceberg::spec::TableMetadata,
    columns: Vec<String>,
) -> Result<TableRows> {
    use floe_engine::table_files::{positional_deletes, read_columns, schema_fields, snapshot_files};
    let file_io = catalog.file_io();
    let files = snapshot_files(file_io, metadata, floe_engine::manifests::ManifestCache::global()).await?;
    let fields = schema_fields(metadata.current_schema())?;
    let mut rows = Vec::new();
    for part in &files.partitions {
        if part.deletes.iter().any(|d| d.file.content_type() == iceberg::spec::DataContentType::EqualityDeletes) {
            return Err(Error::new(ErrorKind::Data, "the v3 verifier does not apply equality deletes"));
        }
        let deletes = positional_deletes(file_io, part).await?;
        for data in &part.data {
            let deleted = deletes.by_file.get(data.file.file_path());
            let mut pos = 0u64;
            for batch in read_columns(file_io, data.file.file_path(), &fields).await? {
                for row in batch_rows(&batch)? {
                    if !deleted.is_some_and(|d| d.contains(pos)) {
                        rows.push(row);
                    }
                    pos += 1;
                }
            }
        }
    }
    Ok(TableRows { columns, rows })
}

/// Converts a record batch to rows of values.
pub fn batch_rows(batch: &RecordBatch) -> Result<Vec<Row>> {
    let mut rows: Vec<Vec<Value>> = (0..batch.num_rows()).map(|_| Vec::with_capacity(batch.num_columns())).collect();
    for col in batch.columns() {
        for (i, row) in rows.iter_mut().enumerate() {
            row.push(value_at(col.as_ref(), i)?);
        }
    }
    Ok(rows.into_iter().map(Row::new).collect())
}

const SHOW: usize = 10;

/// Rows of `read` rearranged into the model's column order (by name).
fn in_model_order(model: &TableModel, read: &TableRows) -> Result<Vec<Row>> {
    let mut positions = Vec::with_capacity(model.schema.columns.len());
    for c in &model.schema.columns {
        let p = read
            .position(&c.name)
            .ok_or_else(|| Error::new(ErrorKind::Data, format!("table has no column `{}`", c.name)))?;
        positions.push(p);
    }
    Ok(read.rows.iter().map(|r| Row(positions.iter().map(|&p| r.0[p].clone()).collect())).collect())
}

/// Compares a base table with the model: same keys, same rows, no duplicates.
pub fn compare_base(model: &TableModel, read: &TableRows) -> std::result::Result<(), String> {
    let rows = in_model_order(model, read).map_err(|e| e.to_string())?;
    let mut actual: BTreeMap<Row, Vec<Row>> = BTreeMap::new();
    for row in rows {
        actual.entry(row.project(&model.schema.key)).or_default().push(row);
    }
    let mut report = String::new();
    let (mut missing, mut extra, mut differ, mut dups) = (0, 0, 0, 0);
    for (key, expected) in &model.rows {
        match actual.get(key) {
            None => {
                missing += 1;
                if missing <= SHOW {
                    let _ = writeln!(report, "  missing key {key}: expected {expected}");
                }
            }
            Some(found) if found.len() > 1 => {
                dups += 1;
                if dups <= SHOW {
                    let _ = writeln!(
                        report,
                        "  key {key} appears {} times: {:?}",
                        found.len(),
                        found.iter().map(|r| r.to_string()).collect::<Vec<_>>()
                    );
                }
            }
            Some(found) if &found[0] != expected => {
                differ += 1;
                if differ <= SHOW {
                    let _ = writeln!(report, "  key {key}:\n    expected {expected}\n    actual   {}", found[0]);
                }
            }
            Some(_) => {}
        }
    }
    for (key, found) in &actual {
        if !model.rows.contains_key(key) {
            extra += 1;
            if extra <= SHOW {
                let _ = writeln!(report, "  unexpected key {key}: {}", found[0]);
            }
        }
    }
    if missing + extra + differ + dups == 0 {
        Ok(())
    } else {
        Err(format!(
            "base table for {} differs from the model: {missing} missing, {extra} unexpected, {differ} different, {dups} duplicated (model {} rows, table {} rows)\n{report}",
            model.topic,
            model.rows.len(),
            read.rows.len()
        ))
    }
}

/// Compares a CDC table with the model: every event exactly once, with its op, source
/// time and image.
pub fn compare_cdc(model: &TableModel, read: &TableRows) -> std::result::Result<(), String> {
    let pos = |n: &str| read.position(n).ok_or_else(|| format!("CDC table has no `{n}` column"));
    let (op, ts, part, off) = (pos("_op")?, pos("_source_ts")?, pos("_kafka_partition")?, pos("_kafka_offset")?);
    let images = in_model_order(model, read).map_err(|e| e.to_string())?;
    let mut actual: HashMap<(i32, i64), Vec<u64>> = HashMap::new();
    for (row, image) in read.rows.iter().zip(&images) {
        let (Value::Int(p), Value::Long(o)) = (&row.0[part], &row.0[off]) else {
            return Err(format!("CDC row without partition/offset: {row}"));
        };
        let Value::String(op_text) = &row.0[op] else { return Err(format!("CDC row without _op: {row}")) };
        let ts_ms = match &row.0[ts] {
            Value::TimestampTz(us) => Some(us / 1000),
            _ => None,
        };
        actual.entry((*p, *o)).or_default().push(fingerprint(op_text, ts_ms, &image.0));
    }
    let mut report = String::new();
    let (mut missing, mut extra, mut differ, mut dups) = (0, 0, 0, 0);
    for (at, fp) in &model.cdc {
        match actual.get(at) {
            None => {
                missing += 1;
                if missing <= SHOW {
                    let _ = writeln!(report, "  missing event at partition {} offset {}", at.0, at.1);
                }
            }
            Some(found) if found.len() > 1 => {
                dups += 1;
                if dups <= SHOW {
                    let _ =
                        writeln!(report, "  event at partition {} offset {} appears {} times", at.0, at.1, found.len());
                }
            }
            Some(found) if found[0] != *fp => {
                differ += 1;
                if differ <= SHOW {
                    let row = read.rows.iter().find(|r| r.0[part] == Value::Int(at.0) && r.0[off] == Value::Long(at.1));
                    let _ = writeln!(
                        report,
                        "  event at partition {} offset {} differs: {}",
                        at.0,
                        at.1,
                        row.map(|r| r.to_string()).unwrap_or_default()
                    );
                }
            }
            Some(_) => {}
        }
    }
    for at in actual.keys() {
        if !model.cdc.contains_key(at) {
            extra += 1;
            if extra <= SHOW {
                let _ = writeln!(report, "  unexpected event at partition {} offset {}", at.0, at.1);
            }
        }
    }
    if missing + extra + differ + dups == 0 {
        Ok(())
    } else {
        Err(format!(
            "CDC table for {} differs from the model: {missing} missing, {extra} unexpected, {differ} different, {dups} duplicated (model {} events, table {} rows)\n{report}",
            model.topic,
            model.cdc.len(),
            read.rows.len()
        ))
    }
}
