#!/usr/bin/env bash
# The one command that runs every floe test, on a fresh machine or an old one.
#
# It installs what the tests need (idempotently), builds the workspace in release (the
# dependency stack compiles once and serves the demo and the benchmarks too), then runs
# the unit, integration and end-to-end tests with nextest, and the doctests.
#
#   harness/scripts/test.sh            # everything
#   harness/scripts/test.sh -E 'test(oracle)'   # extra arguments go to nextest
set -euo pipefail
cd "$(dirname "$0")/../.."

# Everything installed for the tests lives here (kept between runs, safe to delete).
export FLOE_CACHE="${FLOE_CACHE:-$HOME/.cache/floe}"
mkdir -p "$FLOE_CACHE"

# System packages: librdkafka is built from source by rdkafka (make, OpenSSL, zlib), and
# the Python clients run in a venv.
need=()
for pkg in build-essential pkg-config libssl-dev zlib1g-dev python3-venv; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi

# tansu: a Kafka-protocol broker the Kafka tests start on loopback. Its build takes ~12
# minutes, so the binary is cached and installed only when missing.
if [ -z "${FLOE_TANSU:-}" ]; then
  if command -v tansu >/dev/null 2>&1; then
    FLOE_TANSU="$(command -v tansu)"
  else
    FLOE_TANSU="$FLOE_CACHE/bin/tansu"
    if [ ! -x "$FLOE_TANSU" ]; then
      echo "installing tansu 0.6.0 into $FLOE_CACHE (one-time, ~12 min)" >&2
      cargo install --locked tansu --version 0.6.0 --features dynostore,libsql --root "$FLOE_CACHE"
    fi
  fi
fi
export FLOE_TANSU

# Python clients (kafka-python, an independent Kafka client) in a venv.
venv="$FLOE_CACHE/venv"
if ! "$venv/bin/python" -c "import kafka" >/dev/null 2>&1; then
  echo "creating $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "kafka-python==3.0.12"
fi
export FLOE_PYTHON="$venv/bin/python"

# The reference reader: Spark 3.5 + Iceberg 1.10 and pyiceberg (same venv).
harness/scripts/spark.sh

cargo build --release --workspace --all-targets
cargo nextest run --release --workspace --no-fail-fast "$@"
cargo test --release --workspace --doc
