#!/usr/bin/env bash
# The workload benchmark (see BENCHMARKS.md and benches/workload/src/main.rs):
# a release build, then one run; arguments go to the harness
# (--rounds, --seconds, --connections, --drain, --workers).
set -euo pipefail
cd "$(dirname "$0")/../.."
dirty=$(git diff --quiet HEAD 2>/dev/null || echo " + uncommitted changes")
echo "workload: commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty"
cargo run --quiet --release -p cancel-scope-workload -- "$@"
