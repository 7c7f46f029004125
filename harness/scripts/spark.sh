#!/usr/bin/env bash
# Installs the reference reader, idempotently: Spark 3.5 (pyspark) with the Iceberg 1.10
# runtime, the SQLite JDBC driver for Iceberg's JDBC catalog, and pyiceberg, all under
# $FLOE_CACHE (default ~/.cache/floe). Prints nothing when everything is in place.
#
# The Iceberg runtime jar comes from the PyPI package snowpark-connect-deps-iceberg, which
# ships it without its relocated Jackson; that piece is rebuilt from pyspark's Jackson 2.15
# jars with jarjar (rule: com.fasterxml.jackson.** → org.apache.iceberg.shaded.…).
set -euo pipefail
FLOE_CACHE="${FLOE_CACHE:-$HOME/.cache/floe}"
venv="$FLOE_CACHE/venv"
spark="$FLOE_CACHE/spark"
mkdir -p "$spark"

need=()
for pkg in libjarjar-java libxerial-sqlite-jdbc-java zip unzip; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c "import pyspark, pyiceberg, pyarrow, snowpark_connect_deps_iceberg" >/dev/null 2>&1; then
  echo "installing pyspark 3.5.9, the Iceberg 1.10 runtime and pyiceberg into $venv" >&2
  "$venv/bin/pip" install -q "pyspark==3.5.9" "snowpark-connect-deps-iceberg==1.0.3" "pyiceberg[sql-sqlite,pyarrow]==0.12.0"
fi

site="$("$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(os.path.dirname(pyspark.__file__)))')"
runtime="$site/snowpark_connect_deps_iceberg/jars/iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
[ -f "$runtime" ] || { echo "missing $runtime" >&2; exit 1; }
jackson="$spark/iceberg-jackson-relocated.jar"
if [ ! -f "$jackson" ]; then
  echo "relocating Jackson for the Iceberg runtime" >&2
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/classes"
  for j in jackson-core jackson-databind jackson-annotations; do
    (cd "$work/classes" && unzip -qo "$(ls "$site"/pyspark/jars/$j-2.15*.jar | head -1)")
  done
  # Multi-release copies would collide once relocated; signatures no longer match.
  rm -rf "$work/classes/META-INF/versions" "$work/classes"/META-INF/*.SF "$work/classes"/META-INF/*.RSA \
    "$work/classes"/META-INF/*.DSA "$work/classes/module-info.class"
  (cd "$work/classes" && zip -qr "$work/jackson.jar" .)
  echo "rule com.fasterxml.jackson.** org.apache.iceberg.shaded.com.fasterxml.jackson.@1" > "$work/rules.txt"
  java -jar /usr/share/java/jarjar.jar process "$work/rules.txt" "$work/jackson.jar" "$jackson.tmp"
  mv "$jackson.tmp" "$jackson"
fi
printf '%s\n' "$runtime" "$jackson" /usr/share/java/xerial-sqlite-jdbc.jar > "$spark/jars.txt"
