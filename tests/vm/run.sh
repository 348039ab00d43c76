#!/usr/bin/env bash
# tests/vm/run.sh — run the privileged integration tests (or any command) inside a
# throwaway QEMU virtual machine whose kernel has a pure cgroup v2 hierarchy.
#
# Why: the sandbox must work on cgroup v1, hybrid and pure v2 hosts. A CI or developer
# machine is only one of those (this project's CI host is hybrid), so this script boots a
# stock Debian kernel with `cgroup_no_v1=all` and runs the same, already-built test binaries
# there. The guest sees the host's whole file system read-only (virtio-9p, at the same
# paths), so nothing is copied and nothing is compiled in the guest.
#
# Usage (as root; run from anywhere):
#   tests/vm/run.sh                 build the tests on the host (`cargo test --no-run`) and run
#                                   every test binary (lib unit tests, bin unit tests,
#                                   tests/*.rs) in the VM with CI=true; prints a per-binary
#                                   summary; exit 0 only if all passed.
#   tests/vm/run.sh [--] CMD ARG... run CMD in the VM (cwd: the repo root); exit with its status.
#   Exit status 125: the VM never reported a status (boot failure, crash or VM_TIMEOUT).
#
# Environment:
#   VM_TIMEOUT=600     seconds before qemu is killed (the run then fails with 125)
#   VM_MEM=2048        guest memory in MiB          VM_CPUS=2   guest vCPUs
#   VM_CWD=<repo>      directory the command runs in (in the guest)
#   VM_ENV="A B"       names of extra host variables to pass to the guest
#   VM_TEST_ARGS="..." extra arguments for each test binary in the default mode
#                      (e.g. a test-name filter, or --test-threads=1)
#   VM_KERNEL=/boot/vmlinuz-X   kernel to boot (default: the newest /boot/vmlinuz-* that
#                      has its /lib/modules; the guest loads modules from there over 9p)
#   VM_CACHE=/var/tmp/sandbox-runner-vm   where the initramfs is cached
#   VM_KLOG=1          show the kernel's boot log
#   Passed to the guest when set on the host: CI, RUST_BACKTRACE, RUST_LOG,
#   RUST_TEST_THREADS, RUST_TEST_NOCAPTURE, PATH, HOME, LANG. TMPDIR is always /tmp.
#
# The guest (see tests/vm/init): host root read-only at /, fresh /proc, /sys, /dev (devtmpfs,
# devpts, /dev/shm), cgroup2 on /sys/fs/cgroup (nsdelegate), tmpfs on /tmp, /run, /var/tmp.
# The command runs as root in the root cgroup (/proc/self/cgroup is `0::/`), no network
# except loopback. Host paths under /tmp, /run or /var/tmp that the run needs (a repo cloned
# there) are bound back in, read-only.
#
# Acceleration: software emulation (TCG, multi-threaded). KVM is not used: on the project's
# machines /dev/kvm is kvm_pvm, which cannot boot a stock kernel. VM_ACCEL=kvm forces KVM
# where a normal KVM is available.
#
# Needs (installed automatically with apt-get when missing): qemu-system-x86,
# linux-image-amd64, busybox-static, cpio, kmod.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

VM_TIMEOUT=${VM_TIMEOUT:-600}
VM_MEM=${VM_MEM:-2048}
VM_CPUS=${VM_CPUS:-2}
VM_CWD=${VM_CWD:-$repo}
VM_CACHE=${VM_CACHE:-/var/tmp/sandbox-runner-vm}

log() { echo "vm: $*" >&2; }
die() {
	echo "vm: error: $*" >&2
	exit 125
}
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "${1:-}" = "--" ] && shift
[ "$(id -u)" -eq 0 ] || die "must run as root (the tests are privileged; the kernel image is root-only)"

# ---------------------------------------------------------------------------------------
# 1. Packages: install only what is missing (apt-get update only then).
# ---------------------------------------------------------------------------------------
missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
# Debian's stock kernel (its modules land in /lib/modules, which the guest reads over 9p).
[ -n "${VM_KERNEL:-}" ] || dpkg -s linux-image-amd64 >/dev/null 2>&1 || missing+=(linux-image-amd64)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static) # the static build
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
command -v modprobe >/dev/null 2>&1 || missing+=(kmod)
if [ "${#missing[@]}" -gt 0 ]; then
	log "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
fi

# The newest kernel image that has its modules installed.
kernel=${VM_KERNEL:-$(for k in /boot/vmlinuz-*; do
	[ -d "/lib/modules/${k#/boot/vmlinuz-}" ] && echo "$k"
done | sort -V | tail -n1)}
[ -r "$kernel" ] || die "no readable kernel image ($kernel)"
kver=${kernel##*/vmlinuz-}
[ -d "/lib/modules/$kver" ] || die "no /lib/modules/$kver for $kernel"

# ---------------------------------------------------------------------------------------
# 2. The initramfs: busybox, the modules to reach the host over virtio-9p, and tests/vm/init.
#    Cached per kernel version and init script, so it is built once per machine.
# ---------------------------------------------------------------------------------------
initrd_key=$(cat "$here/init" /bin/busybox | sha256sum | cut -c1-12)
initrd=$VM_CACHE/initrd-$kver-$initrd_key.cpio.gz
if [ ! -s "$initrd" ]; then
	log "building the initramfs for $kver"
	mkdir -p "$VM_CACHE"
	work=$(mktemp -d)
	mkdir -p "$work"/{bin,dev,proc,sys,host,modules}
	cp /bin/busybox "$work/bin/busybox"
	cp "$here/init" "$work/init"
	chmod 0755 "$work/init"
	# `modprobe --show-depends` lists each module after its dependencies, as insmod lines;
	# built-in modules print "builtin ..." and need nothing.
	for m in virtio_pci 9pnet_virtio 9p qemu_fw_cfg; do
		modprobe -S "$kver" --show-depends "$m"
	done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' |
		while read -r ko; do
			name=${ko##*/}
			case "$name" in # busybox insmod wants plain .ko files
			*.ko.xz) xz -dc "$ko" >"$work/modules/${name%.xz}" ;;
			*.ko.zst) zstd -qdc "$ko" >"$work/modules/${name%.zst}" ;;
			*.ko.gz) gzip -dc "$ko" >"$work/modules/${name%.gz}" ;;
			*) cp "$ko" "$work/modules/$name" ;;
			esac
			echo "${name%.ko*}.ko" >>"$work/modules/order"
		done
	touch "$work/modules/order"
	(cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd.tmp.$$"
	mv "$initrd.tmp.$$" "$initrd"
	rm -rf "$work"
	# Drop initramfs images of older versions of tests/vm/init.
	find "$VM_CACHE" -maxdepth 1 -name "initrd-$kver-*.cpio.gz" ! -name "${initrd##*/}" -delete
fi

# ---------------------------------------------------------------------------------------
# 3. What to run. Default: the test binaries from a host build (no compiling in the guest).
# ---------------------------------------------------------------------------------------
if [ $# -eq 0 ]; then
	export CI=true # in the VM, a privileged test that would skip must fail instead
	# The guest's stdout is a serial console (a tty): colours only if ours is a terminal too.
	if [ -t 1 ]; then VM_TEST_COLOR=${VM_TEST_COLOR:-always}; else VM_TEST_COLOR=${VM_TEST_COLOR:-never}; fi
	export VM_TEST_COLOR
	VM_ENV="${VM_ENV:-} VM_TEST_ARGS VM_TEST_COLOR"
	log "building the test binaries on the host (cargo test --no-run)"
	json=$(mktemp)
	cargo test --no-run --locked --message-format=json >"$json" ||
		{ rm -f "$json"; die "cargo test --no-run failed"; }
	# Every artifact built with the test profile: the lib and bin unit-test binaries and each
	# integration test in tests/*.rs — exactly what `cargo test` would run (no doctests).
	mapfile -t tests < <(jq -r 'select(.reason == "compiler-artifact" and .profile.test
		and .executable != null) | .executable' "$json" 2>/dev/null | sort ||
		grep '"reason":"compiler-artifact"' "$json" | grep -E '"profile":\{[^}]*"test":true' |
		sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | sort)
	rm -f "$json"
	[ "${#tests[@]}" -gt 0 ] || die "cargo built no test executables"
	log "test binaries: ${tests[*]##*/}"
	set -- bash "$here/guest-tests.sh" "${tests[@]}"
fi

# Host paths the guest needs but would hide under its scratch tmpfs (/tmp, /run, /var/tmp):
# the repo and the directories of absolute paths on the command line (test binaries).
keep=$(mktemp)
for p in "$repo" "$VM_CWD" "$@"; do
	case "$p" in /*) ;; *) continue ;; esac
	[ -e "$p" ] || continue
	[ -d "$p" ] || p=$(dirname "$p")
	case "$p" in /tmp/* | /run/* | /var/tmp/*)
		# bind the top directory below the scratch mount, to also cover sibling paths
		# (e.g. target/debug/sandbox-run next to target/debug/deps/…)
		echo "$p" | awk -F/ '{ print ($2 == "var" ? "/var/tmp/" $4 : "/" $2 "/" $3) }' ;;
	esac
done | sort -u >"$keep"

# The command script, run by bash in the guest: environment, preamble, cd, command.
cmd=$(mktemp)
status=$(mktemp)
trap 'rm -f "$keep" "$cmd" "$status"' EXIT
# shellcheck disable=SC2016 # the preamble's $(...) are expanded in the guest
{
	echo "# written by tests/vm/run.sh"
	for v in CI RUST_BACKTRACE RUST_LOG RUST_TEST_THREADS RUST_TEST_NOCAPTURE PATH HOME LANG \
		${VM_ENV:-}; do
		if [ -n "${!v+set}" ]; then printf 'export %s=%q\n' "$v" "${!v}"; fi
	done
	echo "export TMPDIR=/tmp"
	# What the tests will see: pure cgroup v2 and the guest kernel.
	echo 'echo "vm: uname -r: $(uname -r)"'
	echo 'echo "vm: /proc/self/cgroup: $(cat /proc/self/cgroup)"'
	echo 'echo "vm: /sys/fs/cgroup/cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"'
	printf 'cd %q || exit 125\n' "$VM_CWD"
	printf 'exec'
	printf ' %q' "$@"
	echo
} >"$cmd"

# ---------------------------------------------------------------------------------------
# 4. Boot. The console (ttyS0) is the guest's output, shown live; the guest writes the
#    command's exit status to its second serial port (ttyS1), which is the file $status.
# ---------------------------------------------------------------------------------------
case "${VM_ACCEL:-tcg}" in
kvm) accel=(-accel kvm -cpu host) ;;
*) accel=(-accel "tcg,thread=multi" -cpu max) ;;
esac
append="console=ttyS0 panic=-1 rdinit=/init cgroup_no_v1=all mitigations=off"
append+=" systemd.unified_cgroup_hierarchy=1 $([ -n "${VM_KLOG:-}" ] && echo loglevel=7 || echo quiet loglevel=3)"

log "booting $kernel (${VM_ACCEL:-tcg}, $VM_CPUS vCPUs, $VM_MEM MiB, timeout ${VM_TIMEOUT}s)"
t0=$(now)
set +e
# --foreground: qemu stays in our process group, so Ctrl-C stops it too.
timeout --foreground -k 10 "$VM_TIMEOUT" \
	qemu-system-x86_64 "${accel[@]}" -M q35 -smp "$VM_CPUS" -m "$VM_MEM" \
	-nodefaults -no-user-config -display none -monitor none -no-reboot \
	-chardev stdio,id=console,signal=on -serial chardev:console \
	-serial "file:$status" \
	-kernel "$kernel" -initrd "$initrd" -append "$append" \
	-fw_cfg "name=opt/vm/cmd,file=$cmd" -fw_cfg "name=opt/vm/keep,file=$keep" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	</dev/null 2>&1 |
	while IFS= read -r line || [ -n "$line" ]; do
		case "$line" in
		*=====VM-COMMAND-START*) log "booted to the command in $(since "$t0")s (host wall clock)" ;;
		*=====VM-COMMAND-END*) log "command finished after $(since "$t0")s in total" ;;
		esac
		printf '%s\n' "${line%$'\r'}"
	done
qrc=${PIPESTATUS[0]}
set -e

rc=$(tr -dc '0-9\n' <"$status" | head -n1)
if [ -z "$rc" ]; then
	if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
		log "timeout: killed qemu after ${VM_TIMEOUT}s (VM_TIMEOUT)"
	else
		log "the guest did not report an exit status (qemu exit status $qrc)"
	fi
	exit 125
fi
log "exit status $rc"
exit "$rc"
