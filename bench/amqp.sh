#!/usr/bin/env bash
# AMQP throughput: Qiao's HTTP → AMQP and AMQP → HTTP paths beside raw lapin loops on the
# same broker, in one run (gateway/benches/amqp.rs does the work; its header lists what it
# measures and every knob).
#
#   bench/amqp.sh                                   # defaults: 20000 messages, 3 rounds
#   QIAO_BENCH_N=10000 QIAO_BENCH_ROUNDS=5 bench/amqp.sh
#   QIAO_BENCH_PREFETCH=256 QIAO_BENCH_CONCURRENCY=64 bench/amqp.sh
#   QIAO_BENCH_PERF=1 QIAO_BENCH_OUT=/tmp/qiao-amqp bench/amqp.sh   # + perf profiles of Qiao
#   QIAO_BIN_B=old/qiao QIAO_BENCH_TARGETS="raw-http-publish qiao-publish qiao-publish-b" bench/amqp.sh
#                                                   # A/B: the build before a change, same run
#
# Builds $CARGO_TARGET_DIR/release/qiao when it is missing (QIAO_BUILD=always: every time),
# then runs `cargo bench -p qiao --bench amqp`. Needs RabbitMQ on AMQP_URL (default
# amqp://guest:guest@127.0.0.1:5672/%2f) and wrk. Every queue and exchange it makes starts
# with qiao.bench.<random> and is deleted at the end; on the way out this script also
# deletes, with rabbitmqctl when it is usable, any qiao.bench.* name of this run left over.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qiao-target}
export QIAO_BIN=${QIAO_BIN:-$CARGO_TARGET_DIR/release/qiao}
QIAO_BUILD=${QIAO_BUILD:-missing}

. "$ROOT/scripts/lib.sh"
command -v wrk >/dev/null || apt_install wrk || { echo "amqp.sh: cannot install wrk (apt-get install -y wrk)" >&2; exit 1; }
ensure_rabbitmq
if [[ ! -x $QIAO_BIN || $QIAO_BUILD == always ]]; then
    echo "building $QIAO_BIN (cargo build --release; may wait for the shared build lock)" >&2
    (cd "$ROOT" && cargo build --release -p qiao --bin qiao) >&2
fi

OUT=${QIAO_BENCH_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/qiao-amqp.XXXXXX")}
export QIAO_BENCH_OUT=$OUT
mkdir -p "$OUT"

cleanup() {
    # The bench deletes its names itself; this is the safety net after a crash. The prefix
    # is printed by the bench ("names qiao.bench.xxxx.*").
    local prefix
    prefix=$(grep -o 'names qiao\.bench\.[0-9a-f]*' "$OUT/bench.txt" 2>/dev/null | head -1 | cut -d' ' -f2) || true
    if [[ -n $prefix ]] && command -v rabbitmqctl >/dev/null && rabbitmqctl -q status >/dev/null 2>&1; then
        rabbitmqctl -q list_queues name 2>/dev/null | grep -F "$prefix." | while read -r q; do
            rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
        done || true # nothing left over: grep finds nothing, which pipefail would report
    fi
    return 0
}
trap cleanup EXIT

cd "$ROOT"
cargo bench -p qiao --bench amqp | tee "$OUT/bench.txt"
