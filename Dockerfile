# syntax=docker/dockerfile:1
#
# The sandbox-operator image for those who build with Docker. `make image`
# builds the same image without any container engine (scripts/image/); both
# lay out the root file system with scripts/image/rootfs.sh, so the layout is
# the same: the binary, exactly the shared libraries `ldd` names, the CA
# bundle, /etc/passwd and /etc/group with the user 65532, no shell, no
# package manager, on an empty base (FROM scratch).
#
#   docker build -t sandbox-operator:0.1.0 \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u -d @$(git log -1 --format=%ct) +%Y-%m-%dT%H:%M:%SZ) .
#
# Differences from `make image`: the shared libraries and CA bundle come from
# the builder image (Debian trixie) instead of the build host, and there is
# no SBOM label (the SBOM needs cargo-sbom; `make image` writes it).
#
# glibc rather than musl on purpose: musl's allocator is slow under a
# multi-threaded tokio runtime, and claim latency is the product.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-trixie AS build
WORKDIR /src
# The workspace: manifests, sources, and the test/bench/example files that
# targets and include_str! refer to (.dockerignore keeps target/ out). From
# the chart, only the files the binary embeds (the ownership guard policy).
# `make image-test` checks that every input of the release build is copied
# here and kept by .dockerignore (tests/image/build-context.sh).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY webhook ./webhook
COPY certs ./certs
COPY benches ./benches
COPY tests ./tests
COPY examples ./examples
COPY charts/sandbox-operator/files ./charts/sandbox-operator/files
COPY scripts/image/rootfs.sh ./scripts/image/rootfs.sh
# --locked: the image builds exactly the dependency versions of Cargo.lock.
# The caches keep crates.io downloads and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin sandbox-operator \
 && install -D -m 0755 target/release/sandbox-operator /out/sandbox-operator \
 && /out/sandbox-operator version
RUN scripts/image/rootfs.sh /out/sandbox-operator /rootfs

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=unknown
COPY --from=build /rootfs/ /
LABEL org.opencontainers.image.title="sandbox-operator" \
      org.opencontainers.image.description="Warm-pool sandboxes for AI agents on Kubernetes: controllers and admission webhook" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/usr/local/bin
WORKDIR /
# Numeric, so the kubelet can enforce runAsNonRoot.
USER 65532:65532
# 8080: /metrics /healthz /readyz (plain HTTP); 9443: the admission webhook (HTTPS).
EXPOSE 8080 9443
ENTRYPOINT ["/usr/local/bin/sandbox-operator"]
CMD ["run", "--metrics-addr=0.0.0.0:8080", "--webhook-addr=0.0.0.0:9443"]
