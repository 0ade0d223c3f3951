#!/usr/bin/env bash
# Instructions per sequential memory call: benches/callcost.rs under callgrind at 5,000 and
# 10,000 calls, (Ir(10000) - Ir(5000)) / 5000, so that start-up and shutdown cancel out.
# Needs valgrind. Extra arguments go to `cargo bench` (say `--features metrics` to count
# with metrics compiled in).
#
#   benches/callgrind.sh
#   benches/callgrind.sh --features metrics,opentelemetry
set -euo pipefail
cd "$(dirname "$0")/.."

source benches/callcost-bin.sh
require_tool valgrind
bin=$(callcost_bin "$@")
instructions() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" 2>&1 |
        sed -n 's/.*Collected : *//p'
}
low=$(instructions 5000)
high=$(instructions 10000)
echo "$(( (high - low) / 5000 )) instructions per call ($bin)"
