# Sourced by benches/callgrind.sh and benches/syscalls.sh, from the repository's root.

# Exits with a message naming the Debian package unless command $1 is installed.
require_tool() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "$0: $1 is not installed (apt-get install $1)" >&2
        exit 1
    fi
}

# Builds benches/callcost.rs (extra arguments go to `cargo bench`) and prints its path.
callcost_bin() {
    cargo bench --no-run --bench callcost "$@" --message-format=json |
        python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("target", {}).get("name") == "callcost" and message.get("executable"):
        print(message["executable"])
'
}
