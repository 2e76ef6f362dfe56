#!/usr/bin/env bash
# sbom.sh OUTFILE: the CycloneDX SBOM (JSON, spec 1.5) of the Rust crates of
# the operator package, from cargo-sbom (installed by tools.sh; chosen over
# cargo-cyclonedx, which builds the whole of cargo and took 20 minutes to
# install here, against under 2 for cargo-sbom).
#
# Made reproducible, since the image carries its digest in a label: the
# components and dependencies are sorted (cargo-sbom emits them in hash
# order), the
# random serialNumber becomes a UUID derived from Cargo.lock and the
# revision, the timestamp becomes SOURCE_DATE_EPOCH, and the checkout's
# absolute path in path-dependency references becomes /src.
# Environment: SOURCE_DATE_EPOCH, IMAGE_REVISION (as for assemble.sh).
set -euo pipefail
out=${1:?usage: sbom.sh OUTFILE}
: "${SOURCE_DATE_EPOCH:?} ${IMAGE_REVISION:?}"
cd "$(dirname "$0")/../.."

name=$(mktemp sbom-XXXXXX.json)
trap 'rm -f "$name"' EXIT
cargo sbom --cargo-package sandbox-operator --output-format cyclone_dx_json_1_5 >"$name"

created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
seed=$( (cat Cargo.lock; echo "$IMAGE_REVISION") | sha256sum | cut -c1-32)
serial="urn:uuid:${seed:0:8}-${seed:8:4}-5${seed:13:3}-8${seed:17:3}-${seed:20:12}"
sed "s|file://$PWD|file:///src|g; s|\"$PWD|\"/src|g" "$name" |
  jq --arg serial "$serial" --arg created "$created" \
    '.serialNumber = $serial | .metadata.timestamp = $created
     | .components |= sort_by(."bom-ref")
     | if .dependencies then .dependencies |= (map(if .dependsOn then .dependsOn |= sort else . end) | sort_by(.ref)) else . end' >"$out"
echo "sbom.sh: $out ($(jq '.components | length' "$out") components)" >&2
