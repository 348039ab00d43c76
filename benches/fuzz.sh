#!/usr/bin/env bash
# Fuzzes the go-plugin handshake parser and the profile loader (fuzz/fuzz_targets/) with
# cargo-fuzz (libFuzzer, coverage-guided), each for a bounded time, on the stable toolchain.
#
# Usage: [FUZZ_SECONDS=60] [FUZZ_TARGETS="handshake profile"] [FUZZ_SANITIZER=address|none]
#        bash benches/fuzz.sh
#
# Each target starts from a temporary copy of its seeds (fuzz/corpus/TARGET/seed-*), so the
# corpus it grows is thrown away. Prints, per target, the executions, exec/s and the final
# coverage (libFuzzer's `cov:` edges and `ft:` features). Exits 1 if any target found a crash,
# a timeout or an out-of-memory input: the reproducer is kept in fuzz/artifacts/TARGET/ (not
# in git), and is replayed with `RUSTC_BOOTSTRAP=1 cargo fuzz run -O --debug-assertions
# TARGET fuzz/artifacts/TARGET/crash-...`.
#
# cargo-fuzz passes nightly-only flags to rustc (-Zsanitizer, -Cpasses=sancov-module, ...).
# RUSTC_BOOTSTRAP=1 makes the stable compiler accept them; the ASan runtime ships with stable's
# rust-std on x86_64 Linux. Set FUZZ_SANITIZER=none to fuzz without ASan (faster; the parsers
# are safe Rust), which rebuilds every dependency once.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-handshake profile}"
sanitizer="${FUZZ_SANITIZER:-address}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
# Release code with debug assertions: integer overflow panics too.
flags=(-O --debug-assertions --sanitizer "$sanitizer")

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fuzz: building the targets ($targets; sanitizer $sanitizer)" >&2
cargo fuzz build "${flags[@]}"

# The value after `key` in a libFuzzer line such as `#123 DONE cov: 580 ft: 1797 corp: ...`.
field() { sed -n "s/.* $1: \([^ ]*\).*/\1/p" <<<"$2"; }

failed=()
summary=()
for t in $targets; do
    corpus="$work/corpus-$t"
    mkdir -p "$corpus"
    if compgen -G "fuzz/corpus/$t/*" >/dev/null; then
        cp fuzz/corpus/"$t"/* "$corpus"/
    fi
    seeds=$(find "$corpus" -type f | wc -l)
    args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
    if [[ -f "fuzz/dict/$t.dict" ]]; then
        args+=(-dict="fuzz/dict/$t.dict")
    fi
    log="$work/$t.log"
    echo "fuzz: running $t for ${seconds}s from $seeds seed(s)" >&2
    status=0
    cargo fuzz run "${flags[@]}" "$t" "$corpus" -- "${args[@]}" >"$log" 2>&1 || status=$?

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    last=$(grep -E '^#[0-9]+[[:space:]]+(INITED|NEW|REDUCE|pulse|DONE)' "$log" | tail -n1 || true)
    first=$(grep -E '^#[0-9]+[[:space:]]+INITED' "$log" | head -n1 || true)
    size=$(find "$corpus" -type f | wc -l)
    line="$t: ${execs:-?} execs, ${rate:-?} exec/s, cov: $(field cov "$last") (seeds: $(field cov "$first")), ft: $(field ft "$last"), corpus: $size input(s) from $seeds seed(s)"
    if [[ $status -eq 0 ]]; then
        summary+=("$line, no crash")
    else
        failed+=("$t")
        summary+=("$line, FAILED (exit $status)")
        echo "fuzz: $t FAILED (exit $status); libFuzzer's report:" >&2
        grep -E "^(Error|error)|ERROR: libFuzzer|==[0-9]+==ERROR|SUMMARY|Test unit written|Base64:" \
            "$log" >&2 || tail -n 40 "$log" >&2
        grep -A3 "panicked at" "$log" >&2 || true
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
        if [[ -n "$artifact" && -f "$artifact" ]]; then
            echo "fuzz: input ($(wc -c <"$artifact") bytes) in $artifact, hex:" >&2
            od -An -tx1 -v "$artifact" | head -n 64 >&2
            echo "fuzz: replay with: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $t $artifact" >&2
        fi
        cp "$log" "fuzz/artifacts/$t.log" 2>/dev/null || true
    fi
done

echo "fuzz results (${seconds}s per target, sanitizer $sanitizer):"
for s in "${summary[@]}"; do
    echo "  $s"
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: failures in: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
