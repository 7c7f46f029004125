"""The Spark side of `floe bench spark`: the seed platform's batch layer, Spark `MERGE INTO`
on Iceberg (merge-on-read, bucket(N, id), writes distributed by partition), over the same
warehouse floe writes.

    floe_race.py prepare WAREHOUSE CATALOG SOURCE TARGET BUCKETS          > ANSWER.json
        TARGET := a copy of SOURCE (floe's base table after the bootstrap), partitioned by
        bucket(BUCKETS, id), format 2, write.{merge,update,delete}.mode=merge-on-read,
        write.distribution-mode=hash.
    floe_race.py merge WAREHOUSE CATALOG CDC TARGET WINDOW.json FLOE_BASE [compare|no-compare]  > ANSWER.json
        The timed part: the latest change per key among CDC rows in WINDOW ({"partition":
        first offset}), then one MERGE INTO TARGET (delete / update / insert). Reports wall
        seconds, CPU seconds and peak RSS of the JVM and this process over that statement only.
        Then (not timed) compares TARGET with FLOE_BASE row for row.
    floe_race.py scan WAREHOUSE CATALOG ROUNDS TABLE...  > ANSWER.json
        Read cost: a full scan of each TABLE (every column of every row, deletes applied,
        written to Spark's no-op sink), one warm-up and ROUNDS timed rounds each, the
        tables interleaved; with each table's files, delete files and delete entries.
    floe_race.py rewrite WAREHOUSE CATALOG TABLE  > ANSWER.json
        Spark's own compaction of TABLE: rewrite_data_files (rewrite-all) then
        rewrite_position_delete_files; wall seconds and bytes read.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from floe_reader import spark_session  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak(pid):
    """Resets VmHWM (Linux: writing 5 to clear_refs); returns whether it worked."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def prepare(spark, catalog, source, target, buckets):
    ns = target.rsplit(".", 1)[0]
    spark.sql(f"create namespace if not exists {catalog}.{ns}")
    spark.sql(f"drop table if exists {catalog}.{target} purge")
    started = time.monotonic()
    spark.sql(
        f"""create table {catalog}.{target} using iceberg
            partitioned by (bucket({int(buckets)}, id))
            tblproperties ('format-version'='2',
                           'write.merge.mode'='merge-on-read',
                           'write.update.mode'='merge-on-read',
                           'write.delete.mode'='merge-on-read',
                           'write.distribution-mode'='hash')
            as select * from {catalog}.{source}"""
    )
    rows = spark.table(f"{catalog}.{target}").count()
    return {"rows": rows, "seconds": time.monotonic() - started}


def aggregates(spark, table):
    r = spark.sql(
        f"select count(*) as n, coalesce(sum(id), 0) as ids, coalesce(sum(visits), 0) as visits, "
        f"count_if(email is null) as null_emails from {table}"
    ).collect()[0]
    return {"rows": r["n"], "id_sum": r["ids"], "visits_sum": r["visits"], "null_emails": r["null_emails"]}


def merge(spark, catalog, cdc, target, window, floe_base, started_job, compare=True):
    columns = [f.name for f in spark.table(f"{catalog}.{target}").schema.fields]
    where = " or ".join(f"(_kafka_partition = {int(p)} and _kafka_offset >= {int(o)})" for p, o in window.items())
    changes = f"""
        select * from (
            select *, row_number() over (partition by id order by _kafka_partition desc, _kafka_offset desc) as _rank
            from {catalog}.{cdc} where {where or 'false'}
        ) where _rank = 1"""
    update = ", ".join(f"t.`{c}` = s.`{c}`" for c in columns)
    insert_cols = ", ".join(f"`{c}`" for c in columns)
    insert_vals = ", ".join(f"s.`{c}`" for c in columns)
    statement = f"""
        merge into {catalog}.{target} t using ({changes}) s on t.id = s.id
        when matched and s._op = 'd' then delete
        when matched then update set {update}
        when not matched and s._op <> 'd' then insert ({insert_cols}) values ({insert_vals})"""

    jvm = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    me = os.getpid()
    reset = reset_peak(jvm) and reset_peak(me)
    cpu0 = cpu_seconds(jvm) + cpu_seconds(me)
    started = time.monotonic()
    spark.sql(statement)
    seconds = time.monotonic() - started
    cpu = cpu_seconds(jvm) + cpu_seconds(me) - cpu0
    answer = {
        "seconds": seconds,
        "job_seconds": time.monotonic() - started_job,
        "cpu_seconds": cpu,
        "peak_rss_bytes": peak_rss(jvm) + peak_rss(me),
        "peak_rss_is_whole_process": not reset,
    }
    # Not timed: what the merge consumed and made, and whether both tables are the same.
    answer["window_rows"] = spark.sql(f"select count(*) from {catalog}.{cdc} where {where or 'false'}").collect()[0][0]
    answer["latest_per_key"] = spark.sql(f"select count(*) from ({changes})").collect()[0][0]
    snap = spark.sql(
        f"select operation, summary from {catalog}.{target}.snapshots order by committed_at desc limit 1"
    ).collect()[0]
    answer["merge_snapshot"] = {"operation": snap["operation"], "summary": dict(snap["summary"])}
    if not compare:
        answer["compare"] = {
            "spark": {"rows": 0, "id_sum": 0, "visits_sum": 0, "null_emails": 0},
            "floe": {"rows": 0, "id_sum": 0, "visits_sum": 0, "null_emails": 0},
            "only_in_spark": 0, "only_in_floe": 0, "sample_only_in_spark": [], "sample_only_in_floe": [],
        }
        return answer
    # Each table is read once (floe's with its equality deletes applied by Spark) and kept.
    from pyspark import StorageLevel

    a = spark.table(f"{catalog}.{target}").select(*columns).persist(StorageLevel.MEMORY_AND_DISK)
    b = spark.table(f"{catalog}.{floe_base}").select(*columns).persist(StorageLevel.MEMORY_AND_DISK)
    a.createOrReplaceTempView("spark_final")
    b.createOrReplaceTempView("floe_final")
    only_spark = a.exceptAll(b).persist(StorageLevel.MEMORY_AND_DISK)
    only_floe = b.exceptAll(a).persist(StorageLevel.MEMORY_AND_DISK)
    answer["compare"] = {
        "spark": aggregates(spark, "spark_final"),
        "floe": aggregates(spark, "floe_final"),
        "only_in_spark": only_spark.count(),
        "only_in_floe": only_floe.count(),
        "sample_only_in_spark": [r.asDict() for r in only_spark.orderBy("id").limit(5).collect()],
        "sample_only_in_floe": [r.asDict() for r in only_floe.orderBy("id").limit(5).collect()],
    }
    return answer


def table_layout(spark, table):
    files = spark.sql(f"select count(*), coalesce(sum(file_size_in_bytes), 0), coalesce(sum(record_count), 0) from {table}.data_files").collect()[0]
    deletes = spark.sql(f"select count(*), coalesce(sum(record_count), 0) from {table}.delete_files").collect()[0]
    return {"data_files": files[0], "data_bytes": files[1], "records": files[2], "delete_files": deletes[0], "delete_entries": deletes[1]}


def scan(spark, catalog, rounds, tables):
    answer = {}
    for t in tables:
        name = f"{catalog}.{t}"
        spark.table(name).write.format("noop").mode("overwrite").save()  # warm-up
        answer[t] = {"seconds": [], "rows": spark.table(name).count(), **table_layout(spark, name)}
    for _ in range(rounds):
        for t in tables:
            started = time.monotonic()
            spark.table(f"{catalog}.{t}").write.format("noop").mode("overwrite").save()
            answer[t]["seconds"].append(time.monotonic() - started)
    for t in tables:
        s = sorted(answer[t]["seconds"])
        answer[t]["median_seconds"] = s[len(s) // 2]
    return answer


def rewrite(spark, catalog, table):
    name = f"{catalog}.{table}"
    before = table_layout(spark, name)
    started = time.monotonic()
    data = spark.sql(
        f"call {catalog}.system.rewrite_data_files(table => '{name}', options => map('rewrite-all', 'true'))"
    ).collect()[0].asDict()
    middle = time.monotonic()
    deletes = spark.sql(
        f"call {catalog}.system.rewrite_position_delete_files(table => '{name}', options => map('rewrite-all', 'true'))"
    ).collect()[0].asDict()
    ended = time.monotonic()
    return {
        "seconds": ended - started,
        "data_seconds": middle - started,
        "before": before,
        "after": table_layout(spark, name),
        "rewrite_data_files": {k: v for k, v in data.items()},
        "rewrite_position_delete_files": {k: v for k, v in deletes.items()},
    }


def main():
    mode, warehouse, catalog = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
    started = time.monotonic()
    spark = spark_session(warehouse, catalog)
    if mode == "prepare":
        answer = prepare(spark, catalog, sys.argv[4], sys.argv[5], sys.argv[6])
    elif mode == "merge":
        with open(sys.argv[6]) as f:
            window = json.load(f)
        compare = len(sys.argv) < 9 or sys.argv[8] != "no-compare"
        answer = merge(spark, catalog, sys.argv[4], sys.argv[5], window, sys.argv[7], started, compare)
    elif mode == "scan":
        answer = scan(spark, catalog, int(sys.argv[4]), sys.argv[5:])
    elif mode == "rewrite":
        answer = rewrite(spark, catalog, sys.argv[4])
    else:
        sys.exit(f"unknown mode {mode}")
    json.dump(answer, sys.stdout, default=str)
    spark.stop()


if __name__ == "__main__":
    main()
