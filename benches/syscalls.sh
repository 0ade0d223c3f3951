#!/usr/bin/env bash
# System calls per sequential memory call on a 2-worker multi_thread runtime, rodario's and
# the raw mpsc + oneshot baseline's: benches/callcost.rs (words `mt`, and `raw` for the
# baseline) under `strace -c -f` at 10,000 and 20,000 calls, (count(20000) - count(10000))
# / 10,000 for futex, epoll_wait and write (tokio wakes a worker parked on its I/O driver
# through an eventfd write), so that start-up and shutdown cancel out. Needs strace. Extra
# arguments go to `cargo bench`.
#
#   benches/syscalls.sh
set -euo pipefail
cd "$(dirname "$0")/.."

source benches/callcost-bin.sh
require_tool strace
bin=$(callcost_bin "$@")
counts=$(mktemp)
trap 'rm -f "$counts"' EXIT
# Prints "futex epoll_wait write" for `calls` calls of the given kind.
syscalls() {
    strace -c -f -o "$counts" "$bin" "$1" mt ${2:+"$2"} 2>/dev/null
    python3 - "$counts" <<'PY'
import sys
counts = {}
for line in open(sys.argv[1]):
    fields = line.split()
    if fields and fields[-1] in ("futex", "epoll_wait", "write"):
        counts[fields[-1]] = int(fields[3])
print(*(counts.get(name, 0) for name in ("futex", "epoll_wait", "write")))
PY
}
for kind in raw rodario; do
    word=""
    [ "$kind" = raw ] && word=raw
    read -r low_futex low_epoll low_write < <(syscalls 10000 "$word")
    read -r high_futex high_epoll high_write < <(syscalls 20000 "$word")
    python3 -c '
import sys
kind, *n = sys.argv[1:]
low, high = list(map(int, n[:3])), list(map(int, n[3:]))
per = [max(0, h - l) / 10000 for l, h in zip(low, high)]
print(f"{kind:8} per call: {per[0]:.2f} futex, {per[1]:.2f} epoll_wait, {per[2]:.2f} write")
' "$kind" "$low_futex" "$low_epoll" "$low_write" "$high_futex" "$high_epoll" "$high_write"
done
