#!/usr/bin/env bash
# Load test: Qiao's CRM→ERP message route against nginx proxy_pass (and, opt-in, the same
# route written by hand in Node.js), side by side in one run.
#
#   bench/load.sh                         # defaults below
#   DURATION=5 ROUNDS=5 bench/load.sh     # any knob from the list below
#
# What runs (all on 127.0.0.1, ports picked at runtime; everything started here is stopped
# on exit):
#   - the ERP stub:   qiao stub erp            (hyper, one tokio worker thread)
#   - Qiao:           qiao run --config routes (THREADS_QIAO pingora worker threads,
#                     --log-level warn: no per-request access line)
#   - nginx:          worker_processes THREADS_QIAO, access_log off, keepalive upstream
#   - the Node peer:  (with the target node) node bench/peers/node/server.js, one process
#                     (Node runs JavaScript on one thread, like Qiao --threads 1 and one
#                     nginx worker); its modules are installed with `npm ci` into
#                     NODE_PEER_CACHE when missing or when package-lock.json changed
# and wrk POSTs routes/examples/crm-order.json (887 bytes) with the same connection count
# to each target, alternating targets every round:
#   qiao        POST /crm/orders/801J000000k3QpRIAU   parse, validate, select, map,
#                                                     deliver with the hyper client, relay
#                                                     the ERP's answer
#   nginx       POST /crm/orders/801J000000k3QpRIAU   proxy_pass to the stub's Kingdee Save
#   qiao-proxy  POST /erp/k3cloud/...Save.common.kdsvc route erp-webapi-passthrough:
#                                                     pingora's proxy engine, no JSON work
#   node        POST /crm/orders/801J000000k3QpRIAU   (opt-in) the same route's work by hand
#                                                     in Node.js (bench/peers/node: fastify,
#                                                     Ajv with formats, undici): parse,
#                                                     validate, select, map, check the ERP
#                                                     schema, deliver, relay. Before any
#                                                     load, compare.js checks that it sends
#                                                     the ERP the body `qiao map` gives
#   qiao-edge   GET /bench/no-such-route              (opt-in) Qiao answers 404 itself:
#                                                     the edge alone, no upstream, no body
#   stub        POST the Save path on the stub        (opt-in) the stub alone: the ceiling
#   qiao-b, qiao-b-proxy                              (opt-in, with QIAO_BIN_B) the same as
#                                                     qiao and qiao-proxy on a second binary
# nginx and qiao-proxy forward the CRM body unchanged, so the stub answers them with a
# Kingdee business error (formid missing) under HTTP 200; Qiao sends the mapped order and
# gets a saved bill, which costs the stub more (its CPU per request is reported).
#
# Knobs (environment):
#   DURATION=10       seconds per measured run
#   CONNECTIONS=64    wrk connections (same for every target)
#   ROUNDS=3          measured runs per target; medians are over these
#   ORDER=alternate   every other round runs TARGETS in reverse (the first of a round loses a
#                     little; an even ROUNDS balances it); `fixed`: always in TARGETS order
#   THREADS_QIAO=1    Qiao worker threads; nginx gets as many worker processes
#   WRK_THREADS=1     wrk threads (see docs/performance.md for why 1 on 2 cores)
#   WARMUP=2          seconds of unrecorded load per target before the first round
#   TARGETS="qiao nginx qiao-proxy"   order within a round; add node, qiao-edge and/or stub
#   NODE_PEER_CACHE=~/.cache/qiao-node-peer   where the Node peer's node_modules are installed
#                     (outside the clone; the node target needs node >= 20.18 and npm)
#   PERF=0            1: after the rounds, for each of PERF_TARGETS: `perf record -g` of the
#                     Qiao process during one more run (Qiao targets only), and the system
#                     calls per request of the target's processes (`perf stat`) during
#                     another; reports go to OUT (keep them: OUT=/some/dir)
#   PERF_TARGETS="qiao nginx"   any of the targets
#   OUT=<tmp>         where logs, wrk outputs and perf reports are kept (printed at the end)
#   QIAO_BIN=$CARGO_TARGET_DIR/release/qiao   built with cargo when missing
#   QIAO_BUILD=missing   or `always`: run `cargo build --release` even if the binary exists
#   QIAO_BIN_B=       a second Qiao binary (a candidate change) run beside the first, with
#                     the same settings, for an A/B in one run: targets qiao-b, qiao-b-proxy
#   CONFIG_B=routes   the config directory for QIAO_BIN_B (an older build may not read
#                     today's routes/: give it a checkout's routes/ of its own time)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
ORDER=${ORDER:-alternate}
THREADS_QIAO=${THREADS_QIAO:-1}
WRK_THREADS=${WRK_THREADS:-1}
WARMUP=${WARMUP:-2}
TARGETS=${TARGETS:-qiao nginx qiao-proxy}
PERF=${PERF:-0}
PERF_TARGETS=${PERF_TARGETS:-qiao nginx}
NODE_PEER=$ROOT/bench/peers/node
NODE_PEER_CACHE=${NODE_PEER_CACHE:-$HOME/.cache/qiao-node-peer}
QIAO_BUILD=${QIAO_BUILD:-missing}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qiao-target}
QIAO_BIN=${QIAO_BIN:-$CARGO_TARGET_DIR/release/qiao}
QIAO_BIN_B=${QIAO_BIN_B:-}
CONFIG_B=${CONFIG_B:-routes}
BODY=$ROOT/routes/examples/crm-order.json
ORDER_ID=801J000000k3QpRIAU
SAVE_PATH=/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc

TMP=$(mktemp -d "${TMPDIR:-/tmp}/qiao-load.XXXXXX")
OUT=${OUT:-$TMP}
mkdir -p "$OUT"
PIDS=()

log() { printf '%s\n' "$*" >&2; }
die() {
    log "load.sh: $*"
    exit 1
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        # SIGINT: fast shutdown for Qiao and nginx (SIGTERM would be Qiao's graceful one).
        # The stub has no handler and background jobs of a script ignore SIGINT: SIGTERM.
        # The Node peer closes on SIGTERM.
        if [[ $pid == "${STUB_PID:-}" || $pid == "${NODE_PID:-}" ]]; then kill -TERM "$pid" 2>/dev/null || true; else kill -INT "$pid" 2>/dev/null || true; fi
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ $OUT == "$TMP" ]] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Install what is missing from Debian (wrk, nginx, curl, ss), like scripts/test does.
. "$ROOT/scripts/lib.sh"
missing=()
for pair in wrk:wrk nginx:nginx-light curl:curl ss:iproute2; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[[ ${#missing[@]} == 0 ]] || apt_install "${missing[@]}" || die "cannot install ${missing[*]} (apt-get install -y ${missing[*]})"
if [[ $PERF == 1 ]]; then
    command -v perf >/dev/null || die "PERF=1 needs perf"
    [[ $DURATION -ge 4 ]] || die "PERF=1 needs DURATION >= 4 (perf skips the first and last second)"
fi
[[ -f $BODY ]] || die "no $BODY"
WANT_NODE=0
[[ " $TARGETS " == *" node "* ]] && WANT_NODE=1
if [[ $WANT_NODE == 1 ]]; then
    command -v node >/dev/null && command -v npm >/dev/null ||
        die "the node target needs Node.js (>= 20.18) and npm on PATH"
fi

# --- the binary ---------------------------------------------------------------------------
if [[ ! -x $QIAO_BIN || $QIAO_BUILD == always ]]; then
    log "building $QIAO_BIN (cargo build --release; may wait for the shared build lock)"
    (cd "$ROOT" && cargo build --release -p qiao --bin qiao) >&2
fi
[[ -x $QIAO_BIN ]] || die "no binary at $QIAO_BIN"
[[ -z $QIAO_BIN_B || -x $QIAO_BIN_B ]] || die "no binary at QIAO_BIN_B=$QIAO_BIN_B"

# --- free ports ---------------------------------------------------------------------------
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]]; then
            USED_PORTS+="$p "
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

wait_http() { # url [method]: until anything answers with an HTTP status
    local url=$1 code
    for _ in $(seq 1 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X "${2:-GET}" "$url" 2>/dev/null || true)
        [[ $code != 000 && -n $code ]] && return 0
        sleep 0.1
    done
    return 1
}

STUB_PORT=$(free_port)
QIAO_PORT=$(free_port)
ADMIN_PORT=$(free_port)
NGINX_PORT=$(free_port)
NODE_PORT=$(free_port)
QIAO_B_PORT=$(free_port)
ADMIN_B_PORT=$(free_port)
STUB=http://127.0.0.1:$STUB_PORT

# --- the ERP stub -------------------------------------------------------------------------
"$QIAO_BIN" --log-level warn stub erp --listen "127.0.0.1:$STUB_PORT" >"$OUT/stub.log" 2>&1 &
STUB_PID=$!
PIDS+=("$STUB_PID")
wait_http "$STUB/_stub/stats" || die "the ERP stub did not start; see $OUT/stub.log"

# --- Qiao ---------------------------------------------------------------------------------
(cd "$ROOT" && ERP_URL=$STUB exec "$QIAO_BIN" run --config routes --listen "127.0.0.1:$QIAO_PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --threads "$THREADS_QIAO" --log-level warn) >"$OUT/qiao.log" 2>&1 &
QIAO_PID=$!
PIDS+=("$QIAO_PID")
wait_http "http://127.0.0.1:$QIAO_PORT/" || die "Qiao did not start; see $OUT/qiao.log"
QIAO_B_PID=
if [[ -n $QIAO_BIN_B ]]; then
    (cd "$ROOT" && ERP_URL=$STUB exec "$QIAO_BIN_B" run --config "$CONFIG_B" --listen "127.0.0.1:$QIAO_B_PORT" \
        --admin-listen "127.0.0.1:$ADMIN_B_PORT" --threads "$THREADS_QIAO" --log-level warn) >"$OUT/qiao-b.log" 2>&1 &
    QIAO_B_PID=$!
    PIDS+=("$QIAO_B_PID")
    wait_http "http://127.0.0.1:$QIAO_B_PORT/" || die "Qiao B did not start; see $OUT/qiao-b.log"
fi

# --- nginx --------------------------------------------------------------------------------
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $THREADS_QIAO;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    upstream erp_stub {
        server 127.0.0.1:$STUB_PORT;
        keepalive 256;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /crm/orders/$ORDER_ID {
            proxy_pass http://erp_stub$SAVE_PATH;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # What Qiao's proxy route adds, so the stub does the same work for both
            # (it counts deliveries per message id): a unique id, the ERP's static headers.
            proxy_set_header x-qiao-message-id \$request_id;
            proxy_set_header X-KDApi-AcctID 5f8e2c1a9b7d3e40;
            proxy_set_header X-KDApi-LCID 2052;
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
        location / { return 404; }
    }
}
EOF
nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" >"$OUT/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http "http://127.0.0.1:$NGINX_PORT/" || die "nginx did not start; see $OUT/nginx.log and $TMP/nginx/error.log"

# --- the Node peer (opt-in) ---------------------------------------------------------------
NODE_PID=
if [[ $WANT_NODE == 1 ]]; then
    # Its modules live outside the clone; npm ci again when package-lock.json changed.
    mkdir -p "$NODE_PEER_CACHE"
    if [[ ! -d $NODE_PEER_CACHE/node_modules ]] || ! cmp -s "$NODE_PEER/package-lock.json" "$NODE_PEER_CACHE/package-lock.json"; then
        log "installing the Node peer's modules into $NODE_PEER_CACHE (npm ci)"
        cp "$NODE_PEER/package.json" "$NODE_PEER/package-lock.json" "$NODE_PEER_CACHE/"
        if ! npm ci --prefix "$NODE_PEER_CACHE" --no-audit --no-fund --loglevel=error >"$OUT/npm-ci.log" 2>&1; then
            rm -f "$NODE_PEER_CACHE/package-lock.json" # install again next time
            die "npm ci failed; see $OUT/npm-ci.log"
        fi
    fi
    # Before any load: the peer must send the ERP what Qiao sends (qiao map's body).
    if ! (cd "$ROOT" && NODE_PATH=$NODE_PEER_CACHE/node_modules node "$NODE_PEER/compare.js" "$QIAO_BIN" "$BODY" "$ORDER_ID") \
        >"$OUT/node-compare.txt" 2>&1; then
        die "the Node peer does not send the ERP what Qiao sends: $(cat "$OUT/node-compare.txt")"
    fi
    sed 's/^/check node against qiao map: /' "$OUT/node-compare.txt" >&2
    (cd "$ROOT" && ERP_URL=$STUB NODE_PATH=$NODE_PEER_CACHE/node_modules exec node "$NODE_PEER/server.js" \
        --listen "127.0.0.1:$NODE_PORT") >"$OUT/node.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    wait_http "http://127.0.0.1:$NODE_PORT/" || die "the Node peer did not start; see $OUT/node.log"
fi

# --- targets ------------------------------------------------------------------------------
url_of() {
    case $1 in
        qiao) echo "http://127.0.0.1:$QIAO_PORT/crm/orders/$ORDER_ID" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PORT/crm/orders/$ORDER_ID" ;;
        node) echo "http://127.0.0.1:$NODE_PORT/crm/orders/$ORDER_ID" ;;
        qiao-proxy) echo "http://127.0.0.1:$QIAO_PORT/erp$SAVE_PATH" ;;
        qiao-edge) echo "http://127.0.0.1:$QIAO_PORT/bench/no-such-route" ;; # GET: see script_of
        qiao-b) echo "http://127.0.0.1:$QIAO_B_PORT/crm/orders/$ORDER_ID" ;;
        qiao-b-proxy) echo "http://127.0.0.1:$QIAO_B_PORT/erp$SAVE_PATH" ;;
        stub) echo "$STUB$SAVE_PATH" ;;
        *) die "unknown target $1 (qiao, nginx, node, qiao-proxy, qiao-edge, stub, qiao-b, qiao-b-proxy)" ;;
    esac
}
# qiao-edge is a GET without a body: Qiao closes the connection after answering a POST on
# an unknown path (the body is not drained), and a new connection per request would
# measure accept() rather than the edge.
script_of() { if [[ $1 == qiao-edge ]]; then echo "$TMP/get.lua"; else echo "$TMP/post.lua"; fi; }
expected_status() { if [[ $1 == qiao-edge ]]; then echo 404; else echo 200; fi; }

# Check every target answers what the benchmark means to measure, before any load.
for t in $TARGETS; do
    want=$(expected_status "$t")
    if [[ $t == qiao-edge ]]; then
        got=$(curl -s -o "$OUT/check-$t.json" -w '%{http_code}' "$(url_of "$t")") || true
    else
        got=$(curl -s -o "$OUT/check-$t.json" -w '%{http_code}' -X POST -H 'content-type: application/json' \
            --data-binary "@$BODY" "$(url_of "$t")") || true
    fi
    [[ $got == "$want" ]] || die "$t answered $got, not $want: $(head -c 400 "$OUT/check-$t.json")"
    if [[ $t == qiao || $t == qiao-b || $t == node ]]; then
        grep -q '"IsSuccess": *true' "$OUT/check-$t.json" ||
            die "$t: the ERP did not save the order: $(head -c 400 "$OUT/check-$t.json")"
    fi
    log "check $t: $got ($(wc -c <"$OUT/check-$t.json") bytes)"
done

cat >"$TMP/post.lua" <<EOF
local f = assert(io.open("$BODY", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
EOF
echo 'wrk.method = "GET"' >"$TMP/get.lua"

# CPU time (user + system, every thread) of processes, in clock ticks.
TICK=$(getconf CLK_TCK)
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}
# Whole machine, all CPUs: "busy steal total" ticks since boot (busy excludes idle,
# iowait and steal).
box_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8, $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat; }
server_pids() {
    case $1 in
        qiao-b*) echo "$QIAO_B_PID" ;;
        qiao*) echo "$QIAO_PID" ;;
        nginx) echo "$NGINX_PID $(ps -o pid= --ppid "$NGINX_PID" | tr '\n' ' ')" ;;
        node) echo "$NODE_PID" ;;
        stub) echo "$STUB_PID" ;;
    esac
}

run_wrk() { # target seconds outfile: runs wrk; appends a `qiao-load:` line with CPU and connections
    local t=$1 secs=$2 f=$3 spids s0 u0 s1 u1 b0 st0 all0 b1 st1 all1 wrk_pid conns
    curl -s -o /dev/null -X DELETE "$STUB/_stub/requests" || true # same stub state for every run
    spids=$(server_pids "$t")
    # shellcheck disable=SC2086
    s0=$(cpu_ticks $spids)
    u0=$(cpu_ticks "$STUB_PID")
    read -r b0 st0 all0 < <(box_ticks)
    wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${secs}s" --latency -s "$(script_of "$t")" "$(url_of "$t")" >"$f" 2>&1 &
    wrk_pid=$!
    sleep "$(awk -v d="$secs" 'BEGIN {print d / 2}')"
    # Connections the target holds open to the stub halfway through (wrk's own for `stub`):
    # a pool that works keeps this near the concurrency.
    local owner=$spids
    [[ $t == stub ]] && owner=$wrk_pid
    conns=$(ss -Htnp state established "( dport = :$STUB_PORT )" 2>/dev/null |
        grep -cE "pid=($(echo $owner | tr ' ' '|'))," || true)
    wait "$wrk_pid" || die "wrk failed on $t: $(cat "$f")"
    # shellcheck disable=SC2086
    s1=$(cpu_ticks $spids)
    u1=$(cpu_ticks "$STUB_PID")
    read -r b1 st1 all1 < <(box_ticks)
    echo "qiao-load: server_cpu_ticks=$((s1 - s0)) stub_cpu_ticks=$((u1 - u0)) box_busy_ticks=$((b1 - b0))" \
        "box_steal_ticks=$((st1 - st0)) box_all_ticks=$((all1 - all0)) tick_hz=$TICK stub_conns=$conns" >>"$f"
}

# outfile -> "rps p50 p99 non2xx sockerr server_us/req stub_us/req stub_conns box_us/req idle% steal%"
parse_wrk() {
    local f=$1
    awk -v tick="$TICK" '
        function ms(v,  n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000; return n }
        / requests in / { reqs = $1 }
        /^Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
        /^qiao-load:/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); x[kv[1]] = kv[2] } }
        END {
            per = reqs > 0 ? 1e6 / tick / reqs : 0
            all = x["box_all_ticks"] > 0 ? x["box_all_ticks"] : 1
            printf "%s %.3f %.3f %d %d %.1f %.1f %d %.1f %.0f %.0f\n", rps + 0, p50, p99, non2xx, sockerr,
                x["server_cpu_ticks"] * per, x["stub_cpu_ticks"] * per, x["stub_conns"], x["box_busy_ticks"] * per,
                100 * (all - x["box_busy_ticks"] - x["box_steal_ticks"]) / all, 100 * x["box_steal_ticks"] / all
        }' "$f"
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {
    if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

log ""
log "Qiao $("$QIAO_BIN" --version 2>/dev/null | awk '{print $2}') ($QIAO_BIN${QIAO_BIN_B:+; B: $QIAO_BIN_B}), $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}')"
[[ $WANT_NODE == 0 ]] || log "Node peer: node $(node --version), $(cd "$NODE_PEER_CACHE" && node -p "['fastify', 'ajv', 'ajv-formats', 'undici'].map((m) => m + ' ' + require('./node_modules/' + m + '/package.json').version).join(', ')"), one process"
log "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "load: $CONNECTIONS connections, $WRK_THREADS wrk thread(s), ${DURATION}s x $ROUNDS rounds, Qiao --threads $THREADS_QIAO, nginx worker_processes $THREADS_QIAO"
log "body: $BODY ($(wc -c <"$BODY") bytes); targets: $TARGETS"
log ""

if [[ $WARMUP -gt 0 ]]; then
    for t in $TARGETS; do run_wrk "$t" "$WARMUP" "$OUT/warmup-$t.txt"; done
fi

declare -A RPS P50 P99 ERR SCPU UCPU BCPU MED
# server/stub/box us/req: CPU time (user + system) per request of the target's processes,
# of the stub, and of the whole machine (wrk, kernel and neighbours included).
HDR='%-5s %-11s %8s %8s %8s %6s %8s %8s %8s %5s %6s %6s\n'
ROW='%-5s %-11s %8.0f %8.2f %8.2f %6d %8.1f %8.1f %8.1f %5d %5s%% %5s%%\n'
# shellcheck disable=SC2059
printf "$HDR" round target "req/s" "p50 ms" "p99 ms" errors "server" "stub" "box" conns idle steal
printf '%-17s %26s %15s %17s %5s\n' "" "" "" "(CPU us/req)" "(to stub)"
# The first target of a round measures up to ~13% slower than the next on the 2-core boxes,
# whichever it is (docs/performance.md): with ORDER=alternate every other round runs the
# targets in reverse, so an even number of rounds gives each target every place equally.
order_of_round() {
    if [[ $ORDER == alternate && $(($1 % 2)) == 0 ]]; then
        printf '%s\n' $TARGETS | tac | tr '\n' ' '
    else
        echo "$TARGETS"
    fi
}
for r in $(seq 1 "$ROUNDS"); do
    for t in $(order_of_round "$r"); do
        f=$OUT/round$r-$t.txt
        run_wrk "$t" "$DURATION" "$f"
        read -r rps p50 p99 non2xx sockerr scpu ucpu conns bcpu idle steal < <(parse_wrk "$f")
        # qiao-edge is meant to answer 404: only transport errors count there.
        err=$((sockerr + ($(expected_status "$t") == 200 ? non2xx : 0)))
        RPS[$t]+="$rps "
        P50[$t]+="$p50 "
        P99[$t]+="$p99 "
        SCPU[$t]+="$scpu "
        UCPU[$t]+="$ucpu "
        BCPU[$t]+="$bcpu "
        ERR[$t]=$((${ERR[$t]:-0} + err))
        # shellcheck disable=SC2059
        printf "$ROW" "$r" "$t" "$rps" "$p50" "$p99" "$err" "$scpu" "$ucpu" "$bcpu" "$conns" "$idle" "$steal"
    done
done

echo
echo "medians over $ROUNDS rounds ($CONNECTIONS connections, ${DURATION}s each):"
printf '%-11s %8s %8s %8s %6s %8s %8s %8s %9s %9s\n' target "req/s" "p50 ms" "p99 ms" errors server stub box "vs nginx" "vs node"
for t in $TARGETS; do MED[$t]=$(echo "${RPS[$t]}" | median); done
ratio_to() { # target reference: "1.23x", or "-" when the reference was not measured
    if [[ -n ${MED[$2]:-} && ${MED[$2]} != 0 ]]; then
        awk -v a="${MED[$1]}" -v b="${MED[$2]}" 'BEGIN {printf "%.2fx", a / b}'
    else
        echo -
    fi
}
for t in $TARGETS; do
    printf '%-11s %8.0f %8.2f %8.2f %6d %8.1f %8.1f %8.1f %9s %9s\n' "$t" "${MED[$t]}" "$(echo "${P50[$t]}" | median)" \
        "$(echo "${P99[$t]}" | median)" "${ERR[$t]}" "$(echo "${SCPU[$t]}" | median)" \
        "$(echo "${UCPU[$t]}" | median)" "$(echo "${BCPU[$t]}" | median)" "$(ratio_to "$t" nginx)" "$(ratio_to "$t" node)"
done
echo
if [[ -n ${MED[qiao]:-} && -n ${MED[nginx]:-} ]]; then
    awk -v a="${MED[qiao]}" -v b="${MED[nginx]}" \
        'BEGIN {printf "Qiao/nginx throughput ratio: %.2f (target >= 0.70)\n", a / b}'
fi
if [[ -n ${MED[qiao]:-} && -n ${MED[node]:-} ]]; then
    awk -v a="${MED[qiao]}" -v b="${MED[node]}" \
        'BEGIN {printf "Qiao/node throughput ratio:  %.2f (the same route written by hand in Node.js)\n", a / b}'
fi

# --- profile (opt-in) ---------------------------------------------------------------------
SYSCALLS="read write writev sendto recvfrom sendmsg recvmsg epoll_wait epoll_ctl futex accept4 close"
if [[ $PERF == 1 ]]; then
    for t in $PERF_TARGETS; do
        spids=$(server_pids "$t")
        echo
        echo "perf: $t (pids $spids) under ${DURATION}s of load"
        run_wrk "$t" 1 "$OUT/perf-warm-$t.txt"
        if [[ $t == qiao* ]]; then
            # perf starts 1 s in and stops 1 s early, so it sees only steady load.
            (sleep 1 && perf record -F 999 -g --call-graph dwarf,16384 -p "$spids" -o "$OUT/perf-$t.data" \
                -- sleep "$((DURATION - 2))") >"$OUT/perf-record-$t.log" 2>&1 &
            perf_pid=$!
            run_wrk "$t" "$DURATION" "$OUT/perf-wrk-$t.txt"
            wait "$perf_pid" || true
            perf report -i "$OUT/perf-$t.data" --no-children --percent-limit 0.5 --stdio -g none --sort symbol \
                >"$OUT/perf-$t-self.txt" 2>/dev/null || true
            perf report -i "$OUT/perf-$t.data" --children --percent-limit 1 --stdio -g none --sort symbol \
                >"$OUT/perf-$t-children.txt" 2>/dev/null || true
            echo "  profile: $OUT/perf-$t-self.txt, $OUT/perf-$t-children.txt"
        fi
        # System calls of the target's processes during a whole run, per request.
        events=$(for e in $SYSCALLS; do printf 'syscalls:sys_enter_%s,' "$e"; done)
        perf stat -x, -e "${events%,}" -p "$(echo $spids | tr ' ' ',')" -o "$OUT/perf-syscalls-$t.csv" &
        perf_pid=$!
        sleep 0.5
        run_wrk "$t" "$DURATION" "$OUT/perf-syscalls-wrk-$t.txt"
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        read -r rps _ _ _ _ scpu _ < <(parse_wrk "$OUT/perf-syscalls-wrk-$t.txt")
        reqs=$(awk '/ requests in / {print $1}' "$OUT/perf-syscalls-wrk-$t.txt")
        echo "  $rps req/s, $scpu us CPU per request (with syscall counting attached)"
        awk -F, -v n="$reqs" '$3 ~ /syscalls:sys_enter_/ && $1 + 0 > 0 {
            sub(/syscalls:sys_enter_/, "", $3); printf "    %-11s %6.2f per request\n", $3, $1 / n }' \
            "$OUT/perf-syscalls-$t.csv"
    done
fi

echo
echo "outputs: $OUT"
