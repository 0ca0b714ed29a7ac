#!/usr/bin/env bash
# Instructions per request, counted by callgrind: an A/B of two Qiao builds that the noise of
# a small shared machine cannot blur (the same binary, input and settings give the same count
# whatever else runs). Throughput still comes from bench/load.sh; this says whether a change
# made the work per request larger or smaller.
#
#   QIAO_BIN=new/qiao QIAO_BIN_B=old/qiao CONFIG_B=old/routes bench/instructions.sh
#
# For each binary and each of the CRM → ERP message route and the Kingdee pass-through proxy
# route: Qiao runs under `valgrind --tool=callgrind` with instrumentation off, WARMUP requests
# go through, instrumentation is switched on (callgrind_control), curl sends exactly REQUESTS
# requests over CONNECTIONS kept-alive connections (`curl --parallel`; the same count for every
# build, so that fixed costs such as the connections' setup weigh the same), the counters are
# dumped, and the instructions (Ir) are divided by REQUESTS. The ERP stub runs natively.
#
# Knobs: REQUESTS=1500, CONNECTIONS=8, WARMUP=200, OUT=<tmp>, CONFIG=routes, CONFIG_B=routes,
# PUBLISH=1 (also the HTTP → AMQP route: needs RabbitMQ, like bench/amqp.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
REQUESTS=${REQUESTS:-1500}
CONNECTIONS=${CONNECTIONS:-8}
WARMUP=${WARMUP:-200}
CONFIG=${CONFIG:-routes}
CONFIG_B=${CONFIG_B:-routes}
OUT=${OUT:-$(mktemp -d)}
QIAO_BIN=${QIAO_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/qiao-target}/release/qiao}
QIAO_BIN_B=${QIAO_BIN_B:-}
BODY=$ROOT/routes/examples/crm-order.json
MESSAGE=/crm/orders/801J000000k3QpRIAU
PROXY=/erp/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc

for tool in valgrind:valgrind curl:curl; do
    command -v "${tool%%:*}" >/dev/null || apt-get install -y -qq "${tool##*:}" >/dev/null
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
# SIGINT for Qiao (a fast stop); SIGTERM for the stub: a stub older than its own signal
# handling (an A/B against an old build) ignores SIGINT as a script's background job, and
# `wait` would then never return.
cleanup() {
    for p in "${pids[@]}"; do
        if [[ $p == "${STUB_PID:-}" ]]; then kill -TERM "$p" 2>/dev/null || true; else kill -INT "$p" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

STUB_PORT=$(free_port)
"$QIAO_BIN" --log-level warn stub erp --listen "127.0.0.1:$STUB_PORT" >"$OUT/stub.log" 2>&1 &
STUB_PID=$!
pids+=("$STUB_PID")
# start NAME BIN CONFIG [ENV...]: Qiao under callgrind (instrumentation off), once healthy;
# sets PORT and PID.
start() {
    local name=$1 bin=$2 config=$3 admin
    shift 3
    PORT=$(free_port)
    admin=$(free_port)
    env ERP_URL="http://127.0.0.1:$STUB_PORT" "$@" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$OUT/$name.%p.cg" "$bin" --log-level warn run --config "$config" \
        --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$admin" --threads 1 >"$OUT/$name.log" 2>&1 &
    PID=$!
    pids+=("$PID")
    for _ in $(seq 1 600); do
        curl -fs "http://127.0.0.1:$admin/${PROBE:-healthz}" >/dev/null 2>&1 && break
        sleep 0.2
    done
}

# count CG WHAT PATH BODY CODE: WARMUP requests, then REQUESTS counted in the Qiao started
# as CG; prints "NAME WHAT <Ir/request>" (NAME: CG without "-pub"; every request must be
# answered CODE).
count() {
    local cg=$1 what=$2 path=$3 body=$4 code=$5 requests ir
    local name=${cg%-pub}
    for _ in $(seq 1 "$WARMUP"); do
        curl -fs -o /dev/null -X POST -H 'content-type: application/json' --data-binary "@$body" \
            "http://127.0.0.1:$PORT$path" || true
    done
    callgrind_control -z "$PID" >/dev/null 2>&1
    callgrind_control -i on "$PID" >/dev/null 2>&1
    for i in $(seq 1 "$REQUESTS"); do
        [[ $i == 1 ]] || echo next
        printf 'url = "http://127.0.0.1:%s%s"\nrequest = "POST"\nheader = "content-type: application/json"\ndata-binary = "@%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' \
            "$PORT" "$path" "$body"
    done >"$OUT/$name-$what.curl"
    curl -s --no-progress-meter --parallel --parallel-max "$CONNECTIONS" --config "$OUT/$name-$what.curl" >"$OUT/$name-$what.codes"
    callgrind_control -i off "$PID" >/dev/null 2>&1
    rm -f "$OUT/$cg".*.cg*
    callgrind_control -d "$PID" >/dev/null 2>&1
    sleep 1
    requests=$(grep -c "^$code\$" "$OUT/$name-$what.codes" || true)
    [[ $requests == "$REQUESTS" ]] || echo "$name $what: only $requests of $REQUESTS requests answered $code (see $OUT)" >&2
    ir=$(cat "$OUT/$cg".*.cg* | awk '/^totals:/ {s += $2} END {print s}')
    echo "$name $what $REQUESTS requests $((ir / REQUESTS)) Ir/request"
    # Kept for callgrind_annotate (where the instructions went), one directory per run.
    mkdir -p "$OUT/$name-$what.dump"
    mv "$OUT/$cg".*.cg* "$OUT/$name-$what.dump/"
}

# measure NAME BIN CONFIG: the message and the proxy route; with PUBLISH=1 also the HTTP →
# AMQP route of bench/amqp-config (schema, then a confirmed publish to RabbitMQ on
# AMQP_URL, on names of its own that nothing consumes; deleted after).
measure() {
    local name=$1 bin=$2 config=$3
    start "$name" "$bin" "$config"
    count "$name" message "$MESSAGE" "$BODY" 200
    count "$name" proxy "$PROXY" "$BODY" 200
    kill -INT "$PID" 2>/dev/null || true
    if [[ ${PUBLISH:-0} == 1 ]]; then
        # One fixed prefix: a rerun reuses the exchange and queues instead of adding more.
        local prefix=qiao.instructions
        PROBE=readyz start "$name-pub" "$bin" "$ROOT/bench/amqp-config" AMQP_PREFIX=$prefix \
            WMS_URL="http://127.0.0.1:$STUB_PORT" AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
        count "$name-pub" publish /mes/production-completions "$ROOT/routes/examples/mes-production-performance.json" 202
        kill -INT "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        rabbitmqctl -q purge_queue "$prefix.published" >/dev/null 2>&1 || true
    fi
}

measure a "$QIAO_BIN" "$CONFIG"
[[ -n $QIAO_BIN_B ]] && measure b "$QIAO_BIN_B" "$CONFIG_B"
echo "outputs: $OUT (callgrind dumps: $OUT/<a|b>-<message|proxy|publish>.dump/, read with callgrind_annotate)"
