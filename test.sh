#!/usr/bin/env bash
# The whole test suite: formatting, lints, every crate's tests (unit, black-box, doc),
# and a brief run of each fuzz target. Installs what it needs itself.
set -euo pipefail
cd "$(dirname "$0")"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
cargo test --workspace --doc
fuzz/run.sh "${WEIR_FUZZ_SECONDS:-15}"
