# syntax=docker/dockerfile:1
# The Tether node image: both binaries (core-node, edge-node), run as a non-root user.
# The Helm chart (helm/tether) runs `core-node` or `edge-node --config <file>`.
#
#   docker build -t tether:0.0.0 .
#
# Stage 1 builds with the workspace's toolchain (rust-version in Cargo.toml) and its
# Cargo.lock; stage 2 is distroless: glibc and CA certificates, no shell, no package
# manager. Both are Debian 12, so the binaries find the glibc they were linked against.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# ring and zstd build C code with the image's gcc; nothing else is needed.
COPY . .
# The registry and target caches survive between builds (BuildKit); the binaries are
# copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p core-node -p edge-node \
    && mkdir -p /out/bin /out/data \
    && cp target/release/core-node target/release/edge-node /out/bin/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
# The node keeps everything under its data_dir; the chart mounts its volume here. Owned
# by the node's user, so that `docker run` without a volume works too.
COPY --from=build --chown=10001:10001 /out/data/ /var/lib/tether/
WORKDIR /var/lib/tether
# A numeric user, so that Kubernetes can check runAsNonRoot; the chart's default too.
USER 10001:10001
# HTTP (page, API, /healthz, /readyz, /metrics) and, at a core, QUIC for the edges.
EXPOSE 8080/tcp 7000/udp
# No entrypoint: the command names the binary, `core-node` or `edge-node` (the chart sets
# it from role), e.g. `docker run --rm tether:0.0.0 edge-node --print-config`.
CMD ["core-node", "--help"]
