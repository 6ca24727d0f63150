#!/usr/bin/env bash
# The workload's server, measured in instructions instead of seconds: one
# variant per process under callgrind (`--only`), a fixed count of requests
# (default 20,000 over 32 keep-alive connections), and the instructions the
# server's threads ran per request. Callgrind counts the same on a loaded
# machine as on a quiet one, so this ratio does not swing with the machine as
# requests/s does (BENCHMARKS.md, section 4). Needs valgrind.
# Arguments: the number of requests (default 20000).
set -euo pipefail
cd "$(dirname "$0")/../.."
requests=${1:-20000}
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind" >&2; exit 1; }
dirty=$(git diff --quiet HEAD 2>/dev/null || echo " + uncommitted changes")
echo "workload instructions: commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty, $requests requests"
cargo build --quiet --release -p cancel-scope-workload
bin=target/release/cancel-scope-workload
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
declare -A per_request
for variant in scope by-hand; do
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/$variant.%p" \
        "$bin" --only "$variant" --requests "$requests" >"$out/$variant.log" 2>&1
    served=$(grep -o '[0-9]* requests served' "$out/$variant.log" | cut -d' ' -f1)
    # Thread 1 is the main thread, which runs the load generator's
    # single-thread runtime; every other thread is the server's runtime.
    server=0
    for file in "$out/$variant".*-*; do
        case "$file" in *-01) continue ;; esac
        ir=$(grep -m1 '^summary:' "$file" | awk '{print $2}')
        server=$((server + ${ir:-0}))
    done
    per_request[$variant]=$((server / served))
    echo "$variant: $served requests, ${per_request[$variant]} server instructions per request"
done
awk -v a="${per_request[scope]}" -v b="${per_request[by-hand]}" \
    'BEGIN { printf "ratio, cancel-scope / by hand: %.3fx\n", a / b }'
