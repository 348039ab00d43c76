#!/bin/bash
# Runs inside the test VM (see tests/vm/run.sh): executes already-built test binaries, one
# after the other, and prints a per-binary summary. Never compiles anything.
#
# usage (in the guest, from the repo root): guest-tests.sh TEST_EXECUTABLE...
#   VM_TEST_ARGS   extra arguments for every test binary (e.g. "--test-threads=1" or a filter)
#   VM_TEST_COLOR  auto, always or never (libtest's --color)
# Exit status: 0 when every binary passed, 1 otherwise, 2 when the guest is not pure cgroup v2.
set -uo pipefail

# The point of the VM is a pure cgroup v2 host: refuse to report success on anything else.
cg=$(cat /proc/self/cgroup)
if [ "$cg" != "0::/" ] || ! grep -qw memory /sys/fs/cgroup/cgroup.controllers ||
	! grep -qw pids /sys/fs/cgroup/cgroup.controllers; then
	echo "guest-tests: not a pure cgroup v2 guest (/proc/self/cgroup: $cg)" >&2
	exit 2
fi

names=() results=() times=()
failed=0
for exe in "$@"; do
	name=${exe##*/}
	echo
	echo "===== $name ($exe)"
	start=$EPOCHREALTIME
	# shellcheck disable=SC2086 # VM_TEST_ARGS is a word list on purpose
	"$exe" --color "${VM_TEST_COLOR:-auto}" ${VM_TEST_ARGS:-}
	rc=$?
	end=$EPOCHREALTIME
	t=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
	names+=("$name") times+=("$t")
	if [ "$rc" -eq 0 ]; then
		results+=("ok")
	else
		results+=("FAILED (exit $rc)")
		failed=1
	fi
done

echo
echo "===== summary (in the VM, $(uname -r), cgroup v2)"
for i in "${!names[@]}"; do
	printf '  %-40s %8ss  %s\n' "${names[$i]}" "${times[$i]}" "${results[$i]}"
done
[ "$failed" -eq 0 ] && echo "  all test binaries passed" || echo "  SOME TEST BINARIES FAILED"
exit "$failed"
