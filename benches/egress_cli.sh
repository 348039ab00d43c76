#!/usr/bin/env bash
# Egress through the product, with real processes: 1 GiB from a client program to a sink
# program on 127.0.0.1, directly and through the CONNECT proxy that `sandbox-run
# --allow-net` serves inside the sandbox, the client running in that sandbox. It completes
# `cargo bench --bench egress` (one process, tokio tasks) with what a plugin sees.
#
# Four ways, interleaved round-robin `ROUNDS` times (default 5):
#   direct           client → sink, no sandbox
#   tunnel           sandbox-run --allow-net 127.0.0.1:PORT -- client (CONNECT via HTTPS_PROXY)
#   direct, 1 CPU    the same, with sink, client (and sandbox-run) all on CPU 0 (taskset)
#   tunnel, 1 CPU
# On one CPU the wall time is the CPU time every party spent, so the two "1 CPU" ways give
# what a GiB costs each way. From that it prints the ceiling of the tunnel on this machine:
# with N CPUs kept busy all the time, it cannot move more than N / (its CPU s per GiB) GiB/s,
# and that ceiling as a ratio to the direct transfer's rate (the issue's target: >= 0.8x).
# The same with the CPU time the machine was busy during each free-placement run
# (/proc/stat), where the parties run on different CPUs and pay for crossing them; and each
# party's own CPU time per GiB (the client's getrusage, the sink's /proc/PID/stat, and
# sandbox-run's with everything it waited for, minus the client's, for the relay): a
# stream's relay is one thread, whose CPU time per GiB bounds the tunnel on any machine.
#
# Only 127.0.0.1: the sink listens there and the sandbox's rule names exactly that address.
# Needs root (or what sandbox-run needs), a C compiler (cc) and taskset (util-linux).
#
# Usage: [ROUNDS=5] [MIB=1024] bash benches/egress_cli.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin sandbox-run >/dev/null
bin="$PWD/target/release/sandbox-run"
ROUNDS="${ROUNDS:-5}"
MIB="${MIB:-1024}"
work="$(mktemp -d /var/tmp/egress-cli-bench.XXXXXX)"
sink_pid=""
cleanup() {
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null && wait "$sink_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"

cat >"$work/sink.c" <<'EOF'
/* Accepts on 127.0.0.1:PORT; reads each connection to end of file, then answers one byte. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 16)) { perror("sink: bind"); return 1; }
  socklen_t n = sizeof a;
  getsockname(l, (void *)&a, &n);
  FILE *f = fopen(argv[1], "w");
  fprintf(f, "%d\n", ntohs(a.sin_port));
  fclose(f);
  static char buf[1 << 17];
  for (;;) {
    int s = accept(l, 0, 0);
    if (s < 0) continue;
    while (read(s, buf, sizeof buf) > 0) {}
    if (write(s, "!", 1) != 1) perror("sink: write");
    close(s);
  }
}
EOF
cat >"$work/client.c" <<'EOF'
/* client PORT MIB [tunnel]: writes MIB MiB in 128 KiB writes to 127.0.0.1:PORT, directly or
   through a CONNECT tunnel of the proxy in $HTTPS_PROXY, half-closes, waits for the sink's
   byte, and prints the seconds from the first write to that byte and its own CPU seconds. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static int dial(const char *ip, int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1 || connect(s, (void *)&a, sizeof a)) {
    perror("client: connect");
    exit(1);
  }
  return s;
}
int main(int argc, char **argv) {
  int port = atoi(argv[1]), s;
  long total = atol(argv[2]) << 20;
  if (argc > 3) {
    const char *px = getenv("HTTPS_PROXY");
    char ip[64], req[256], head[2048];
    int pport, got = 0;
    if (!px || sscanf(px, "http://%63[^:]:%d", ip, &pport) != 2) {
      fprintf(stderr, "client: no usable HTTPS_PROXY\n");
      return 1;
    }
    s = dial(ip, pport);
    int n = snprintf(req, sizeof req, "CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port, port);
    if (write(s, req, n) != n) { perror("client: write"); return 1; }
    while (got < 4 || memcmp(head + got - 4, "\r\n\r\n", 4)) {
      if (got == (int)sizeof head || read(s, head + got, 1) != 1) { fprintf(stderr, "client: bad proxy answer\n"); return 1; }
      got++;
    }
    if (strncmp(head, "HTTP/1.1 200", 12)) { fprintf(stderr, "client: proxy said %.*s\n", got, head); return 1; }
  } else {
    s = dial("127.0.0.1", port);
  }
  static char buf[1 << 17];
  memset(buf, 'x', sizeof buf);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long sent = 0; sent < total;) {
    long k = write(s, buf, sizeof buf);
    if (k <= 0) { perror("client: write"); return 1; }
    sent += k;
  }
  shutdown(s, SHUT_WR);
  char c;
  if (read(s, &c, 1) != 1) { fprintf(stderr, "client: no answer\n"); return 1; }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%.6f %.6f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
         ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
  return 0;
}
EOF
cc -O2 -o "$work/sink" "$work/sink.c"
cc -O2 -o "$work/client" "$work/client.c"

# One sink per placement: free, and pinned to CPU 0 for the "1 CPU" ways.
# Sets sink_pid and port (not in a subshell: the sink must stay this shell's child).
start_sink() {
  rm -f "$work/port"
  "$@" "$work/sink" "$work/port" </dev/null >/dev/null &
  sink_pid=$!
  for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
  port="$(cat "$work/port")"
}

# way port pin -> "seconds client_cpu_seconds [cli_total_cpu_seconds]": for the tunnel, the
# CPU time of sandbox-run and every process it waited for (bash's `time`: its relay, its
# init, and the client).
run_way() {
  local way="$1" port="$2" pin=() out TIMEFORMAT='%U %S'
  [ "$3" = 1 ] && pin=(taskset -c 0)
  case "$way" in
    direct) "${pin[@]}" "$work/client" "$port" "$MIB" ;;
    tunnel)
      { time "${pin[@]}" "$bin" --stdin null --allow-net "127.0.0.1:$port" \
          --ro-bind "$work" "$work" -- "$work/client" "$port" "$MIB" tunnel \
          >"$work/out"; } 2>"$work/time"
      read -r out <"$work/out"
      echo "$out $(awk '{print $1 + $2}' "$work/time")"
      ;;
  esac
}

sink_ticks() { awk '{print $14 + $15}' "/proc/$sink_pid/stat"; }

# Busy CPU time of the whole machine so far, in clock ticks (user, nice, system, irq,
# softirq, steal of /proc/stat's first line).
busy_ticks() {
  local _cpu user nice system _idle _iowait irq softirq steal _rest
  read -r _cpu user nice system _idle _iowait irq softirq steal _rest </proc/stat
  echo $((user + nice + system + irq + softirq + steal))
}
hz="$(getconf CLK_TCK)"

declare -A times busy client cli sink
for pin in 0 1; do
  if [ "$pin" = 1 ]; then start_sink taskset -c 0; else start_sink; fi
  for r in $(seq "$ROUNDS"); do
    for way in direct tunnel; do
      b0="$(busy_ticks)"
      s0="$(sink_ticks)"
      read -r t c total < <(run_way "$way" "$port" "$pin")
      s1="$(sink_ticks)"
      b1="$(busy_ticks)"
      times[$way.$pin]+="$t "
      client[$way.$pin]+="$c "
      cli[$way.$pin]+="${total:-0} "
      sink[$way.$pin]+="$(((s1 - s0) * 1000 / hz)) "
      busy[$way.$pin]+="$(((b1 - b0) * 1000 / hz)) "
    done
  done
  kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true; sink_pid=""
done

python3 - "$MIB" "$(nproc)" "${times[direct.0]}" "${times[tunnel.0]}" "${times[direct.1]}" "${times[tunnel.1]}" "${busy[direct.0]}" "${busy[tunnel.0]}" \
  "${client[direct.0]}" "${client[tunnel.0]}" "${cli[tunnel.0]}" "${sink[direct.0]}" "${sink[tunnel.0]}" <<'EOF'
import statistics, sys
mib, ncpu = int(sys.argv[1]), int(sys.argv[2])
busy_direct, busy_tunnel = (statistics.median(int(x) for x in a.split()) for a in sys.argv[7:9])
gib = mib / 1024
ways = ["direct", "tunnel", "direct, 1 CPU", "tunnel, 1 CPU"]
med = {}
print(f"{mib} MiB per run, {len(sys.argv[3].split())} runs per way, interleaved; {ncpu} CPUs")
for name, arg in zip(ways, sys.argv[3:7]):
    t = sorted(float(x) for x in arg.split())
    med[name] = statistics.median(t)
    rates = ", ".join(f"{gib / x:.2f}" for x in t)
    print(f"  {name:14} median {gib / med[name]:5.2f} GiB/s ({med[name] * 1000:6.1f} ms)   runs: {rates}")
ratio = med["direct"] / med["tunnel"]
print(f"tunnel / direct: {ratio:.2f}x (target >= 0.8x)")
cpu_d = med["direct, 1 CPU"] / gib
cpu_t = med["tunnel, 1 CPU"] / gib
print(f"CPU s per GiB (1 CPU): direct {cpu_d:.3f}, tunnel {cpu_t:.3f} ({cpu_t / cpu_d:.2f}x)")
ceiling = ncpu / cpu_t
print(f"tunnel ceiling on {ncpu} CPUs all busy, at the 1-CPU cost: {ceiling:.2f} GiB/s = "
      f"{ceiling / (gib / med['direct']):.2f}x the direct rate")
# Free placement: the machine's busy time during each run (the tunnel's includes starting
# and ending a sandbox, a few ms), so also what crossing CPUs adds to the cost.
cpu_t2 = busy_tunnel / 1000 / gib
print(f"CPU s per GiB, free placement (machine busy time per run): direct "
      f"{busy_direct / 1000 / gib:.3f}, tunnel {cpu_t2:.3f}; CPUs busy during the tunnel "
      f"{busy_tunnel / 1000 / med['tunnel']:.2f} of {ncpu}")
ceiling2 = ncpu / cpu_t2
print(f"tunnel ceiling on {ncpu} CPUs all busy, at the free-placement cost: {ceiling2:.2f} "
      f"GiB/s = {ceiling2 / (gib / med['direct']):.2f}x the direct rate")
# Each party's CPU per GiB, free placement (medians): a stream's relay is one thread, so the
# tunnel cannot be faster than that thread's CPU time for a GiB, whatever the CPUs.
m = lambda a: statistics.median(float(x) for x in a.split()) / gib
c_d, c_t, cli_t, s_d, s_t = (m(a) for a in sys.argv[9:14])
s_d, s_t = s_d / 1000, s_t / 1000
relay = cli_t - c_t
print(f"CPU s per GiB by party, free placement: direct: client {c_d:.3f}, sink {s_d:.3f}; "
      f"tunnel: client {c_t:.3f}, relay (sandbox-run with its start and end) {relay:.3f}, "
      f"sink {s_t:.3f}")
print(f"one relay thread per stream: the tunnel is at most {1 / relay:.2f} GiB/s = "
      f"{(1 / relay) / (gib / med['direct']):.2f}x the direct rate, even with a CPU of its own")
EOF
