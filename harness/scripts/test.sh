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

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi

cargo build --release --workspace --all-targets
cargo nextest run --release --workspace --no-fail-fast "$@"
cargo test --release --workspace --doc
