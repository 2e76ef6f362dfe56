# syntax=docker/dockerfile:1
#
# The sandbox-operator image: one binary on a distroless base
# (glibc, CA certificates, tzdata; no shell, no package manager), running as
# the unprivileged user 65532.
#
#   docker build -t sandbox-operator:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/sandbox-operator:0.1.0 --push .
#
# glibc rather than musl on purpose: musl's allocator is slow under a
# multi-threaded tokio runtime, and claim latency is the product. The builder
# and the runtime share the Debian release (trixie), so the glibc matches.
# Each platform is compiled natively (under emulation for a foreign one).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-trixie AS build
WORKDIR /src
# The workspace: manifests, sources, and the test/bench/example files that
# targets and include_str! refer to (.dockerignore keeps target/ out).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY webhook ./webhook
COPY certs ./certs
COPY benches ./benches
COPY tests ./tests
COPY examples ./examples
# --locked: the image builds exactly the dependency versions of Cargo.lock.
# The caches keep crates.io downloads and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin sandbox-operator \
 && install -D -m 0755 target/release/sandbox-operator /out/sandbox-operator \
 && /out/sandbox-operator version

FROM gcr.io/distroless/cc-debian13:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="sandbox-operator" \
      org.opencontainers.image.description="Warm-pool sandboxes for AI agents on Kubernetes: controllers and admission webhook" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/sandbox-operator /usr/local/bin/sandbox-operator
# Numeric, so the kubelet can enforce runAsNonRoot.
USER 65532:65532
# 8080: /metrics /healthz /readyz (plain HTTP); 9443: the admission webhook (HTTPS).
EXPOSE 8080 9443
ENTRYPOINT ["/usr/local/bin/sandbox-operator"]
CMD ["run", "--metrics-addr=0.0.0.0:8080", "--webhook-addr=0.0.0.0:9443"]
