"""The reference readers over a floe warehouse: Spark 3.5 + Iceberg 1.10 (JDBC catalog on
floe's SQLite file) and pyiceberg (SqlCatalog). Used by the interop tests and `floe bench`.

    floe_reader.py spark WAREHOUSE CATALOG_NAME REQUEST.json  > ANSWER.json

REQUEST: {"export": {"ns.table": "/out/dir", ...},      # Spark reads the table (equality
                                                         # deletes applied by Spark), writes Parquet
          "metadata": ["ns.table", ...]}                # entries (files added per snapshot) and snapshots
    floe_reader.py pyiceberg WAREHOUSE CATALOG_NAME [scan:|export:]TABLE[=DIR]...  > ANSWER.json

Spark writes timestamps as INT64 micros so Arrow readers see exactly the values read.
"""
import json
import os
import sys


def jars():
    cache = os.environ.get("FLOE_CACHE") or os.path.expanduser("~/.cache/floe")
    with open(os.path.join(cache, "spark", "jars.txt")) as f:
        return [line.strip() for line in f if line.strip()]


def spark_session(warehouse, catalog):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master("local[2]")
        .appName("floe-reference-reader")
        .config("spark.jars", ",".join(jars()))
        .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        .config(f"spark.sql.catalog.{catalog}", "org.apache.iceberg.spark.SparkCatalog")
        .config(f"spark.sql.catalog.{catalog}.type", "jdbc")
        .config(f"spark.sql.catalog.{catalog}.uri", f"jdbc:sqlite:{warehouse}/catalog.db")
        .config(f"spark.sql.catalog.{catalog}.warehouse", warehouse)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", os.environ.get("FLOE_SPARK_MEMORY", "2g"))
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def spark_main(warehouse, catalog, request_path):
    with open(request_path) as f:
        request = json.load(f)
    spark = spark_session(warehouse, catalog)
    answer = {"export": {}, "files": {}, "snapshots": {}}
    for table, out in request.get("export", {}).items():
        df = spark.table(f"{catalog}.{table}")
        df.write.mode("overwrite").parquet(out)
        answer["export"][table] = {"rows": df.count(), "schema": df.schema.simpleString()}
    for table in request.get("metadata", []):
        # Entries added by each snapshot (status 1), with the file they added.
        files = spark.sql(
            f"select snapshot_id, data_file.content as content, data_file.equality_ids as equality_ids, "
            f"data_file.partition as partition, data_file.record_count as record_count, "
            f"data_file.file_path as file_path, data_file.file_format as file_format, "
            f"data_file.referenced_data_file as referenced_data_file, sequence_number "
            f"from {catalog}.{table}.all_entries where status = 1"
        ).collect()
        answer["files"][table] = [
            {
                "snapshot_id": r["snapshot_id"],
                "content": r["content"],
                "equality_ids": list(r["equality_ids"]) if r["equality_ids"] is not None else None,
                "partition": r["partition"].asDict() if r["partition"] is not None else None,
                "record_count": r["record_count"],
                "file_path": r["file_path"],
                "file_format": r["file_format"],
                "referenced_data_file": r["referenced_data_file"],
                "sequence_number": r["sequence_number"],
            }
            for r in files
        ]
        # The current snapshot's live delete files, and the table's format version.
        live = spark.sql(
            f"select content, file_format, referenced_data_file from {catalog}.{table}.delete_files"
        ).collect()
        answer.setdefault("live_deletes", {})[table] = [
            {"content": r["content"], "file_format": r["file_format"], "referenced_data_file": r["referenced_data_file"]}
            for r in live
        ]
        props = {r["key"]: r["value"] for r in spark.sql(f"show tblproperties {catalog}.{table}").collect()}
        answer.setdefault("format_version", {})[table] = props.get("format-version")
        snaps = spark.sql(
            f"select snapshot_id, parent_id, operation, summary from {catalog}.{table}.snapshots order by committed_at"
        ).collect()
        answer["snapshots"][table] = [
            {"snapshot_id": r["snapshot_id"], "parent_id": r["parent_id"], "operation": r["operation"], "summary": dict(r["summary"])}
            for r in snaps
        ]
    for table in request.get("read_snapshots", []):
        # Every retained snapshot read in full (every column, deletes applied): a file a
        # snapshot references and cleanup removed fails the read.
        reads = []
        ids = [r["snapshot_id"] for r in spark.sql(f"select snapshot_id from {catalog}.{table}.snapshots").collect()]
        for sid in ids:
            df = spark.read.option("snapshot-id", sid).table(f"{catalog}.{table}")
            df.write.format("noop").mode("overwrite").save()
            reads.append({"snapshot_id": sid, "rows": df.count()})
        answer.setdefault("snapshot_reads", {})[table] = reads
    json.dump(answer, sys.stdout, default=str)
    spark.stop()


def pyiceberg_main(warehouse, catalog, tables):
    from pyiceberg.catalog.sql import SqlCatalog

    cat = SqlCatalog(catalog, uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}")
    answer = {}
    for arg in tables:
        # "scan:ns.table" also reads the rows (pyiceberg cannot apply equality deletes, so
        # only tables without them are scanned); "export:ns.table=/dir" writes them as
        # Parquet there, with position deletes and deletion vectors applied by pyiceberg.
        export = None
        if arg.startswith("export:"):
            arg, export = arg[7:].split("=", 1)
            arg = "scan:" + arg
        scan, name = (True, arg[5:]) if arg.startswith("scan:") else (False, arg)
        table = cat.load_table(name)
        entry = {
            "snapshots": [s.snapshot_id for s in table.metadata.snapshots],
            "current": table.metadata.current_snapshot_id,
            "identifier_fields": sorted(table.schema().identifier_field_names()),
        }
        if scan:
            arrow = table.scan().to_arrow()
            entry["rows"] = arrow.num_rows
            if export:
                import pyarrow.parquet as pq

                os.makedirs(export, exist_ok=True)
                pq.write_table(arrow, os.path.join(export, "rows.parquet"))
            if "_kafka_partition" in arrow.column_names:
                entry["offsets"] = sorted(
                    zip(arrow.column("_kafka_partition").to_pylist(), arrow.column("_kafka_offset").to_pylist())
                )
        answer[name] = entry
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    mode, warehouse, catalog = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
    if mode == "spark":
        spark_main(warehouse, catalog, sys.argv[4])
    elif mode == "pyiceberg":
        pyiceberg_main(warehouse, catalog, sys.argv[4:])
    else:
        sys.exit(f"unknown mode {mode}")
