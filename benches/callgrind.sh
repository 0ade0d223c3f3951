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

if ! command -v valgrind >/dev/null 2>&1; then
    echo "benches/callgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
fi
bin=$(cargo bench --no-run --bench callcost "$@" --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("target", {}).get("name") == "callcost" and message.get("executable"):
        print(message["executable"])
')
instructions() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" 2>&1 |
        sed -n 's/.*Collected : *//p'
}
low=$(instructions 5000)
high=$(instructions 10000)
echo "$(( (high - low) / 5000 )) instructions per call ($bin)"
