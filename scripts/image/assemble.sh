#!/usr/bin/env bash
# assemble.sh ROOTFS OUTDIR: packs a root file system (scripts/image/rootfs.sh)
# into an OCI image without a container engine, deterministically:
#
#   OUTDIR/oci/                         OCI image layout, tag $IMAGE_VERSION
#   OUTDIR/sandbox-operator-$IMAGE_VERSION.docker.tar
#                                       the same image for `docker load`
#   OUTDIR/digest                       sha256:... of the image manifest
#
# Determinism: the single layer is written by GNU tar from a sorted file list
# with every mtime set to SOURCE_DATE_EPOCH, owner and group 0 and no
# extended headers; umoci (Debian) wraps it and writes the config with
# `created` = SOURCE_DATE_EPOCH and no other clock or random input, so the
# same inputs always give the same digest.
#
# Environment (all required; build.sh derives them from git and Cargo.toml):
#   IMAGE_VERSION SOURCE_DATE_EPOCH IMAGE_REVISION IMAGE_SOURCE
#   IMAGE_SBOM_DIGEST (sha256:... of the SBOM file) IMAGE_SBOM_FILE (its name)
set -euo pipefail

root=${1:?usage: assemble.sh ROOTFS OUTDIR}
out=${2:?usage: assemble.sh ROOTFS OUTDIR}
: "${IMAGE_VERSION:?} ${SOURCE_DATE_EPOCH:?} ${IMAGE_REVISION:?} ${IMAGE_SOURCE:?}"
: "${IMAGE_SBOM_DIGEST:?} ${IMAGE_SBOM_FILE:?}"
for tool in umoci skopeo tar jq sha256sum; do
  command -v "$tool" >/dev/null || { echo "assemble.sh: $tool is missing (scripts/image/tools.sh installs it)" >&2; exit 2; }
done

created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
layout=$out/oci
archive=$out/sandbox-operator-$IMAGE_VERSION.docker.tar
rm -rf "$layout" "$archive" "$out/digest"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The layer: entries in byte order, no "./" prefix, fixed metadata.
(cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$work/files"
tar --create --file "$work/layer.tar" --directory "$root" \
  --format=gnu --no-recursion --verbatim-files-from --files-from "$work/files" \
  --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner

image="$layout:$IMAGE_VERSION"
umoci init --layout "$layout"
umoci new --image "$image"
umoci raw add-layer --image "$image" \
  --history.created "$created" \
  --history.created_by "scripts/image/rootfs.sh + assemble.sh (sandbox-operator $IMAGE_VERSION)" \
  --history.comment "binary, its shared libraries, CA certificates, passwd/group" \
  "$work/layer.tar"

label=(
  "org.opencontainers.image.title=sandbox-operator"
  "org.opencontainers.image.description=Warm-pool sandboxes for AI agents on Kubernetes: controllers and admission webhook"
  "org.opencontainers.image.version=$IMAGE_VERSION"
  "org.opencontainers.image.revision=$IMAGE_REVISION"
  "org.opencontainers.image.source=$IMAGE_SOURCE"
  "org.opencontainers.image.created=$created"
  "org.opencontainers.image.licenses=Apache-2.0"
  "dev.sandbox-operator.sbom.file=$IMAGE_SBOM_FILE"
  "dev.sandbox-operator.sbom.digest=$IMAGE_SBOM_DIGEST"
  "dev.sandbox-operator.sbom.format=CycloneDX 1.5 JSON"
)
args=()
for l in "${label[@]}"; do args+=(--config.label "$l"); done
umoci config --image "$image" --no-history --created "$created" \
  --os linux --config.user 65532:65532 --config.workingdir / \
  --config.env PATH=/usr/local/bin \
  --config.entrypoint /usr/local/bin/sandbox-operator \
  --config.cmd run --config.cmd --metrics-addr=0.0.0.0:8080 --config.cmd --webhook-addr=0.0.0.0:9443 \
  --config.exposedports 8080/tcp --config.exposedports 9443/tcp \
  --manifest.annotation "org.opencontainers.image.created=$created" \
  --manifest.annotation "org.opencontainers.image.revision=$IMAGE_REVISION" \
  "${args[@]}"
umoci gc --layout "$layout"

digest=$(jq -er --arg tag "$IMAGE_VERSION" \
  '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $tag) | .digest' \
  "$layout/index.json")
echo "$digest" >"$out/digest"

# docker-archive: what `docker load -i` reads; the tag is the chart's default
# image (repository sandbox-operator, tag = appVersion).
skopeo --insecure-policy copy --quiet "oci:$image" "docker-archive:$archive:sandbox-operator:$IMAGE_VERSION"
