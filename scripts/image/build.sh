#!/usr/bin/env bash
# build.sh (`make image`): the operator's container image, built without a
# container engine, under target/image/:
#
#   oci/                                OCI image layout, tag = crate version
#   sandbox-operator-VERSION.docker.tar `docker load -i` (sandbox-operator:VERSION)
#   sandbox-operator-VERSION.cdx.json   CycloneDX SBOM of the Rust dependencies
#                                       (its digest is in an image label)
#   digest                              sha256 of the image manifest
#   summary.txt                         digest, sizes, labels, file list
#
# Steps: `cargo build --release --locked --bin sandbox-operator` (the release
# profile equals the bench profile, so after `cargo bench` nothing but the
# workspace crates is compiled), the SBOM, the root file system
# (rootfs.sh), then the image (assemble.sh). Inputs of the image: the binary,
# the host's shared libraries and CA bundle, the commit (revision, time).
#
# Environment: IMAGE_SOURCE (repository URL for the source label; default:
# the git remote `origin`; user-info such as user:token@ is removed),
# SOURCE_DATE_EPOCH (default: the commit time), IMAGE_BINARY (use this binary
# instead of building one), IMAGE_OUT (default target/image).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=scripts/image

tools_bin=$("$here/tools.sh" umoci skopeo cargo-sbom)
export PATH="$tools_bin:$PATH"

metadata=$(cargo metadata --no-deps --format-version 1 --locked)
version=$(jq -er '.packages[] | select(.name == "sandbox-operator") | .version' <<<"$metadata")
target_dir=$(jq -er '.target_directory' <<<"$metadata")
out=${IMAGE_OUT:-$target_dir/image}

revision=$(git rev-parse HEAD)
if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
  echo "build.sh: the work tree has uncommitted changes: revision label ${revision}-dirty" >&2
  revision=$revision-dirty
fi

# Built before SOURCE_DATE_EPOCH is exported: ring's build script reruns when
# it changes, and with it rustls, kube and everything above them, so the
# build would no longer reuse what `cargo bench` compiled.
binary=${IMAGE_BINARY:-}
if [[ -z $binary ]]; then
  start=$(date +%s)
  cargo build --release --locked --bin sandbox-operator
  echo "build.sh: cargo build --release: $(($(date +%s) - start)) s" >&2
  binary=$target_dir/release/sandbox-operator
fi

export IMAGE_VERSION=$version IMAGE_REVISION=$revision
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
# The source label names the repository, never a credential: a URL's
# user-info (https://user:token@host/..., as a remote cloned with a token
# has it) is dropped, or a pushed image would carry the token.
source_url=${IMAGE_SOURCE:-$(git config --get remote.origin.url || echo "unknown: set IMAGE_SOURCE")}
IMAGE_SOURCE=$(sed -E 's#^([A-Za-z][A-Za-z0-9+.-]*://)[^/]*@#\1#' <<<"$source_url")
[[ $IMAGE_SOURCE == "$source_url" ]] || echo "build.sh: the source URL's user-info is left out of the source label" >&2
export IMAGE_SOURCE

mkdir -p "$out"
sbom=sandbox-operator-$version.cdx.json
"$here/sbom.sh" "$out/$sbom"
export IMAGE_SBOM_FILE=$sbom
IMAGE_SBOM_DIGEST=sha256:$(sha256sum "$out/$sbom" | cut -d' ' -f1)
export IMAGE_SBOM_DIGEST

rootfs=$out/rootfs
rm -rf "$rootfs"
"$here/rootfs.sh" "$binary" "$rootfs"
"$here/assemble.sh" "$rootfs" "$out"
"$here/summary.sh" "$out" | tee "$out/summary.txt"
rm -rf "$rootfs"
