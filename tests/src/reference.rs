//! The reference readers: Spark 3.5 with Iceberg 1.10, and pyiceberg, run over a scratch
//! warehouse through `harness/python/floe_reader.py` (installed by
//! `harness/scripts/spark.sh`, which the test script calls).
//!
//! # Invariants
//! - Spark applies the equality deletes itself: tables are read by Spark and exported as
//!   plain Parquet, which is then read here with arrow only (no Iceberg logic of ours).
//! - A failure shows the reader's stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

use floe_harness::verify::{TableRows, batch_rows};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::python;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../harness/python/floe_reader.py")
}

/// Runs Spark over `warehouse` with `request` (see `floe_reader.py`); returns its answer.
pub fn spark(warehouse: &Path, catalog: &str, request: &serde_json::Value) -> serde_json::Value {
    let req = warehouse.join("spark-request.json");
    std::fs::write(&req, request.to_string()).expect("request");
    let out = Command::new(python())
        .arg(script())
        .args(["spark".as_ref(), warehouse.as_os_str(), catalog.as_ref(), req.as_os_str()])
        .output()
        .expect("run the Spark reader");
    assert!(out.status.success(), "Spark failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("Spark's answer")
}

/// pyiceberg over `warehouse`: `tables` may be prefixed `scan:` to also read rows.
pub fn pyiceberg(warehouse: &Path, catalog: &str, tables: &[String]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(script())
        .args(["pyiceberg".as_ref(), warehouse.as_os_str(), catalog.as_ref()])
        .args(tables)
        .output()
        .expect("run pyiceberg");
    assert!(out.status.success(), "pyiceberg failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("pyiceberg's answer")
}

/// Reads a folder of Parquet files (Spark's export) as rows.
pub fn read_parquet_dir(dir: &Path) -> TableRows {
    let mut out = TableRows::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("export folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).expect("open"))
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            if out.columns.is_empty() {
                out.columns = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
            }
            out.rows.extend(batch_rows(&batch).expect("rows"));
        }
    }
    out
}
