# syntax=docker/dockerfile:1.7
# The ecom-pipeline image: one `ecom-pipeline run` per container, its durable
# log on a volume it alone owns. Built by `docker build -t ecom-pipeline .`
# from the repository root (needs BuildKit, the default builder since
# Docker 23, for the cache mounts below). Not built on the machines this
# repo is developed on (no Docker engine there); see README, "Deploy".

# Builder and runtime share one Debian release, so the binary's glibc is
# the runtime's. 1.95 is the toolchain the repo is tested with; the
# workspace's declared rust-version (1.91) is not checked anywhere.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# aws-lc-sys (rustls's crypto) compiles C; cmake is its fallback build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Dependency caching: cache mounts keep cargo's registry, git checkouts and
# the target directory between builds, so a source change recompiles only
# the workspace crates it touches, as a local incremental build would. (A
# cargo-chef layer would cache dependencies too, but not the workspace's
# own ten crates.) The target directory is a cache mount, so the binary is
# copied out in the same step. --locked: the image builds what Cargo.lock
# says, or fails.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ecom-pipeline \
 && install -D -m 0755 target/release/ecom-pipeline /out/ecom-pipeline

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to Google Cloud Pub/Sub and to Cassandra with
# --cassandra-tls. curl: the HEALTHCHECK below (the binary has no probe
# subcommand, and curl is what operators expect to find for poking
# /metrics by hand).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so Kubernetes' runAsUser/fsGroup and host-side volume
# permissions can name it.
RUN groupadd --system --gid 10001 ecom \
 && useradd --system --uid 10001 --gid ecom --home-dir /var/lib/ecom --shell /usr/sbin/nologin ecom \
 && install -d -o ecom -g ecom -m 0750 /var/lib/ecom /var/lib/ecom/log
COPY --from=builder /out/ecom-pipeline /usr/local/bin/ecom-pipeline

USER ecom:ecom
WORKDIR /var/lib/ecom
# Inside a container 127.0.0.1 cannot be scraped from outside: listen on
# every interface. The log directory is the instance's identity (its
# acknowledged messages live only there until projected), hence a volume;
# it is created above, owned by ecom, so a fresh named volume inherits that.
ENV ECOM_LOG_DIR=/var/lib/ecom/log \
    ECOM_METRICS_ADDR=0.0.0.0:9464
VOLUME ["/var/lib/ecom/log"]
EXPOSE 9464

# /healthz answers once `run` has opened its log and started serving; a
# big log takes a while to verify on open, hence the start period. The port
# is ECOM_METRICS_ADDR's: change both together.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9464/healthz"]

# No init process: ecom-pipeline handles SIGTERM itself (finish the batch,
# ack, checkpoint, exit 0). As PID 1 it ignores a SIGTERM that arrives
# before `run` installed its handler; the stop then ends in SIGKILL after
# the grace period, which the log makes safe.
ENTRYPOINT ["ecom-pipeline"]
CMD ["run", "--source", "pubsub", "--store", "cassandra"]
