#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target in fuzz/fuzz_targets for N seconds each.
#
#   fuzz/run.sh [SECONDS]     (default 15; CI calls `fuzz/run.sh 15`)
#
# Installs cargo-fuzz only when `cargo fuzz` is missing. cargo-fuzz needs nightly-only
# compiler flags (sanitizers, coverage); RUSTC_BOOTSTRAP=1 allows them on the stable
# toolchain and is set for the cargo-fuzz commands alone, never for the rest of the build.
# A crash stops the script with a non-zero status; its input is kept in fuzz/artifacts/.
set -euo pipefail

seconds="${1:-15}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]  (a positive whole number, default 15)" >&2
    exit 2
fi

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it"
    cargo install cargo-fuzz --locked
fi

targets=()
for source in "$fuzz_dir"/fuzz_targets/*.rs; do
    targets+=("$(basename "$source" .rs)")
done
if [ "${#targets[@]}" -eq 0 ]; then
    echo "no fuzz targets in $fuzz_dir/fuzz_targets" >&2
    exit 1
fi

for target in "${targets[@]}"; do
    echo "== building fuzz target $target"
    RUSTC_BOOTSTRAP=1 cargo fuzz build "$target"
done

for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1
done

echo "fuzz: ${#targets[@]} target(s) ran ${seconds}s each without a crash"
