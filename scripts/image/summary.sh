#!/usr/bin/env bash
# summary.sh OUTDIR: what `make image` built, read back from the OCI layout:
# reference, manifest digest (and the chart's `--set image.digest=...` that
# pins it), sizes (compressed = what a registry stores and a node pulls;
# uncompressed = the unpacked root file system), user, entrypoint, labels,
# and every file of the layer.
set -euo pipefail
out=${1:?usage: summary.sh OUTDIR}
layout=$out/oci
blob() { echo "$layout/blobs/${1/://}"; }

manifest_digest=$(jq -er '.manifests[0].digest' "$layout/index.json")
tag=$(jq -er '.manifests[0].annotations["org.opencontainers.image.ref.name"]' "$layout/index.json")
manifest=$(blob "$manifest_digest")
config=$(blob "$(jq -er '.config.digest' "$manifest")")
compressed=$(jq -er '[.layers[].size, .config.size] | add' "$manifest")
uncompressed=0
for layer in $(jq -er '.layers[].digest' "$manifest"); do
  uncompressed=$((uncompressed + $(gzip -dc "$(blob "$layer")" | wc -c)))
done
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

echo "image:        oci:$layout:$tag"
echo "docker load:  $(ls "$out"/*.docker.tar)"
echo "digest:       $manifest_digest"
# A tag names every build of a version; the digest names this one (the chart's
# image.digest). --preserve-digests: the push fails rather than change it.
echo "helm:         --set image.repository=REGISTRY/sandbox-operator --set image.digest=$manifest_digest"
echo "              once pushed: skopeo copy --preserve-digests oci:$layout:$tag docker://REGISTRY/sandbox-operator:$tag"
echo "size:         $(mib "$compressed") compressed ($compressed bytes), $(mib "$uncompressed") unpacked"
echo "user:         $(jq -r '.config.User' "$config")"
echo "entrypoint:   $(jq -c '.config.Entrypoint' "$config") cmd $(jq -c '.config.Cmd' "$config")"
echo "labels:"
jq -r '.config.Labels | to_entries[] | "  \(.key)=\(.value)"' "$config"
echo "files:"
for layer in $(jq -er '.layers[].digest' "$manifest"); do
  tar -tvzf "$(blob "$layer")" | awk '{ printf "  %s %s %10s %s\n", $1, $2, $3, $6 }'
done
