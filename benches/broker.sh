#!/usr/bin/env bash
# The cost of the brokered connect (`[sockets] broker`, on in the go-plugin profile): every
# connect() of the plugin makes a round trip to the runner's supervisor thread.
#
# Side by side, in one run, `ROUNDS` times interleaved (default 3), each timing `N` connects
# (default 3000) from python3 inside a go-plugin sandbox:
#   inside, broker off   connect to a unix listener in the plugin's own socket directory
#   inside, broker on    the same: the supervisor answers CONTINUE
#   brokered             connect to a host listener `$TMPDIR/plugin<digits>` made after the
#                        start: the supervisor checks it and connects the plugin's socket
# and prints the median per-connect time of each and the ratios to "inside, broker off".
#
# Usage: [N=3000] [ROUNDS=3] bash benches/broker.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin sandbox-run >/dev/null
bin="$PWD/target/release/sandbox-run"
N="${N:-3000}"
ROUNDS="${ROUNDS:-3}"
work="$(mktemp -d /var/tmp/broker-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# The sandbox's init binds probe.py as an unprivileged host id: it must pass through.
chmod 755 "$work"
export TMPDIR="$work"
printf 'extends = "go-plugin"\n[sockets]\nbroker = false\n' >"$work/off.toml"

# Inside: N connects to `$1` (a path; "own" = a listener of its own in its socket directory),
# after the first one succeeds; prints microseconds per connect on stderr.
cat >"$work/probe.py" <<'EOF'
import os, socket, sys, threading, time
n, target = int(sys.argv[1]), sys.argv[2]
if target == "own":
    target = os.path.join(os.environ["PLUGIN_UNIX_SOCKET_DIR"], "own.sock")
    l = socket.socket(socket.AF_UNIX)
    l.bind(target)
    l.listen(1024)
    def serve():
        while True:
            c, _ = l.accept()
            c.close()
    threading.Thread(target=serve, daemon=True).start()
deadline = time.time() + 20
while True:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(target)
        s.close()
        break
    except OSError:
        s.close()
        if time.time() > deadline:
            sys.exit("never connected to " + target)
        time.sleep(0.01)
t = time.perf_counter()
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(target)
    s.close()
print("%.2f" % ((time.perf_counter() - t) / n * 1e6), file=sys.stderr)
EOF
# A host listener that accepts and closes, until killed.
cat >"$work/host.py" <<'EOF'
import socket, sys
l = socket.socket(socket.AF_UNIX)
l.bind(sys.argv[1])
l.listen(1024)
while True:
    c, _ = l.accept()
    c.close()
EOF

py=/usr/bin/python3
run() { # profile target -> microseconds per connect
  "$bin" --profile "$1" --stdin null --ro-bind "$work/probe.py" /probe.py -- \
    "$py" /probe.py "$N" "$2" 2>&1 >/dev/null | tail -1
}
brokered() {
  local sock="$work/plugin$RANDOM$RANDOM" out
  # The sandbox first: a broker socket must be younger than the sandbox.
  "$bin" --profile go-plugin --stdin null --ro-bind "$work/probe.py" /probe.py -- \
    "$py" /probe.py "$N" "$sock" 2>"$work/brokered.err" >/dev/null &
  local pid=$!
  sleep 0.3
  "$py" "$work/host.py" "$sock" &
  local host=$!
  wait "$pid" || true
  kill "$host" 2>/dev/null; wait "$host" 2>/dev/null || true
  rm -f "$sock"
  tail -1 "$work/brokered.err"
}

declare -a off on br
for r in $(seq "$ROUNDS"); do
  off+=("$(run "$work/off.toml" own)")
  on+=("$(run go-plugin own)")
  br+=("$(brokered)")
  echo "round $r: inside, broker off ${off[-1]} us; inside, broker on ${on[-1]} us; brokered ${br[-1]} us"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo="$(median "${off[@]}")"; mn="$(median "${on[@]}")"; mb="$(median "${br[@]}")"
echo
echo "median per connect ($N connects x $ROUNDS rounds, python3 inside a go-plugin sandbox):"
awk -v o="$mo" -v n="$mn" -v b="$mb" 'BEGIN {
  printf "  inside, broker off  %8.2f us  1.00x\n", o
  printf "  inside, broker on   %8.2f us  %.2fx  (+%.2f us per connect)\n", n, n / o, n - o
  printf "  brokered (host)     %8.2f us  %.2fx\n", b, b / o
}'
