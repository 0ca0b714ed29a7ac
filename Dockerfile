# Qiao, the integration gateway, as a container image: `qiao run` on the shipped routes, as a
# non-root user, listening on all interfaces. docs/operations.md says how to run it.
#
#   docker build -t qiao .
#   podman build --format docker -t qiao .        # --format docker keeps the HEALTHCHECK
#
# The base images are build arguments. Where no registry can be reached, make local ones with
# scripts/container-bases and pass them:
#
#   podman build --format docker --network host \
#     --build-arg BUILDER_IMAGE=localhost/qiao-base-builder:bookworm \
#     --build-arg RUNTIME_IMAGE=localhost/qiao-base-runtime:bookworm -t qiao .
#
# The build keeps cargo's registry and target directory in cache mounts (BuildKit, or podman/
# buildah), so a rebuild after a change compiles only what changed.

ARG BUILDER_IMAGE=rust:1.88-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
# pingora's build needs cmake (zlib-ng); the local builder base has it already.
RUN command -v cmake >/dev/null || { apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake \
      && rm -rf /var/lib/apt/lists/*; }
# Where the cache mounts below are: the rust images' CARGO_HOME, and the local builder base's.
ENV CARGO_HOME=/usr/local/cargo \
    CARGO_TERM_COLOR=never
WORKDIR /src
# Only the build's inputs, so that a change to docs, tests or routes reuses this stage.
COPY Cargo.toml Cargo.lock ./
COPY third_party third_party
COPY connectors connectors
COPY gateway gateway
# The release profile keeps line tables for backtraces and profiles; compressed, they take a
# third of the room (177 MB -> 66 MB).
RUN --mount=type=cache,id=qiao-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=qiao-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=qiao-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p qiao --bin qiao \
 && cp target/release/qiao /usr/local/bin/qiao \
 && objcopy --compress-debug-sections=zlib /usr/local/bin/qiao

FROM ${RUNTIME_IMAGE}
# TLS roots for amqps:// brokers (HTTPS receivers use the roots built into the binary). The
# local runtime base has them; on another base they are installed.
RUN [ -e /etc/ssl/certs/ca-certificates.crt ] || { apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
      && rm -rf /var/lib/apt/lists/*; }
# A fixed, unprivileged uid and gid (Kubernetes' runAsUser in deploy/k8s/ names it too).
RUN echo 'qiao:x:10001:10001:Qiao:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'qiao:x:10001:' >> /etc/group
COPY --from=build /usr/local/bin/qiao /usr/local/bin/qiao
COPY deploy/container/healthcheck /usr/local/bin/qiao-healthcheck
# The shipped routes are the default config; mount your own directory over /etc/qiao/routes.
COPY routes /etc/qiao/routes

# Every QIAO_* variable is also a flag of `qiao run` (`qiao run --help`); the routes read
# ERP_URL, CRM_URL, OA_URL, WMS_URL, MES_URL, AMQP_URL and AMQP_PREFIX (routes/systems.yaml),
# and traces go where OTEL_EXPORTER_OTLP_ENDPOINT says (export is off without it).
ENV QIAO_CONFIG=/etc/qiao/routes \
    QIAO_LISTEN=0.0.0.0:8080 \
    QIAO_ADMIN_LISTEN=0.0.0.0:9090 \
    QIAO_LOG_FORMAT=json
USER 10001:10001
WORKDIR /etc/qiao
# 8080: the HTTP ingress; 9090: /healthz, /readyz and /metrics (keep it private).
EXPOSE 8080 9090
# SIGTERM is Qiao's graceful stop: no new connections, work in progress finishes within
# grace_period_seconds (routes/qiao.yaml). Give the runtime's stop timeout more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/qiao-healthcheck"]
ENTRYPOINT ["/usr/local/bin/qiao"]
CMD ["run"]
