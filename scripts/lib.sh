# Shared by scripts/demo and scripts/test: install and start what Qiao needs on a fresh
# Debian/Ubuntu machine that has only the Rust toolchain.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/qiao-target}"

say() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  say "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null ||
    { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null; }
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pingora's build needs cmake (zlib-ng).
ensure_cmake() {
  command -v cmake >/dev/null || apt_install cmake
}

# RabbitMQ on 127.0.0.1:5672 (guest/guest).
ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  say "starting RabbitMQ"
  as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 120); do
    port_open 5672 && return 0
    sleep 0.5
  done
  echo "RabbitMQ did not come up on 127.0.0.1:5672" >&2
  return 1
}

# Redis for cluster-wide rate limits: the tests start private servers from this binary,
# and the development default (127.0.0.1:6379) runs for people trying `cluster:` limits.
ensure_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  port_open 6379 && return 0
  say "starting Redis"
  redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null 2>&1 || true
  for _ in $(seq 1 40); do
    port_open 6379 && return 0
    sleep 0.25
  done
  echo "Redis did not come up on 127.0.0.1:6379" >&2
  return 1
}
