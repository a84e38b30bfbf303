#!/usr/bin/env bash
# The whole test suite: formatting, lints, every crate's tests (unit, black-box with the
# dashboard in headless Chromium, doc), the model checks of the link's stream table
# (loom), a black-box stress run of the release binary under concurrent HTTP/1.1 and
# HTTP/2 load, the protocol conformance harness against that same binary, and a brief run
# of each fuzz target. Installs what it needs itself, and starts the machine's RabbitMQ
# broker and Redis if they are down.
set -euo pipefail
cd "$(dirname "$0")"

# The dashboard's browser test (crates/weir/tests/e2e/dashboard.rs) drives Debian's
# headless Chromium through chromedriver.
if [ ! -x /usr/bin/chromedriver ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# The RabbitMQ transport's tests (conformance suite and broker faults) use the machine's
# broker on 127.0.0.1:5672, and rabbitmqctl to close its connections; start it if it is down.
broker_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! broker_up; then
  echo "test.sh: RabbitMQ is not listening on 127.0.0.1:5672; starting it" >&2
  rabbitmq-server -detached
  for _ in $(seq 120); do broker_up && break; sleep 1; done
  broker_up || { echo "test.sh: RabbitMQ did not start" >&2; exit 1; }
  timeout 120 rabbitmqctl await_startup >/dev/null
fi

# The shared limits' tests (crates/shared, crates/weir/tests/e2e/replicas.rs) use the
# machine's Redis on 127.0.0.1:6379 (each under its own key prefix); start it if it is down.
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
if ! redis_up; then
  echo "test.sh: Redis is not listening on 127.0.0.1:6379; starting it" >&2
  command -v redis-server >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  }
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 60); do redis_up && break; sleep 0.5; done
  redis_up || { echo "test.sh: Redis did not start" >&2; exit 1; }
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
cargo test --workspace --doc
cargo test -p weir-transport --features loom --lib model
tests/stress/run
# The release binary tests/stress/run built (or the one WEIR named to it).
WEIR_BIN="${WEIR:-target/release/weir}" tests/conformance/run
fuzz/run.sh "${WEIR_FUZZ_SECONDS:-15}"
