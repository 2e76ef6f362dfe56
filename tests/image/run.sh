#!/usr/bin/env bash
# tests/image/run.sh (`make image-test`): the container image built by
# `make image`, proven without a container engine. Needs root (chroot,
# mounts) and, for the last run check, the local control plane
# (SANDBOX_KUBECONFIG; `make image-test` starts it).
#
#   build          `make image` (scripts/image/build.sh), timed
#   build-context  the Dockerfile alternative gets every input of the release
#                  build (tests/image/build-context.sh over the binary's
#                  dep-info): each one copied by a COPY, none excluded by
#                  .dockerignore; no container engine needed; and a copy
#                  of .dockerignore with charts/ appended fails it, naming
#                  the embedded charts/sandbox-operator/files/ (it bites)
#   reproducible   packing is stable: a second assembly of the same binary
#                  (a copy with a new mtime; the binary is not compiled
#                  again) from the same commit, another umask and fresh
#                  staging dirs, gives the same manifest digest, the same
#                  docker tarball and the same SBOM
#   contents       only the expected files: the binary, exactly the shared
#                  libraries it links (ELF NEEDED + interpreter), CA bundle,
#                  passwd/group (65532), licences; no shell; all root-owned,
#                  no setuid; size under 25 MiB compressed
#   metadata       user, entrypoint, OCI labels (revision = HEAD, created =
#                  commit time, version = Cargo = chart appVersion), the chart's
#                  default image = the docker tarball's tag, the build's
#                  `--set image.digest=` renders repository@digest, docker
#                  tarball config = OCI config, no label holds a URL with
#                  user-info (a credential)
#   source-label   a build with IMAGE_SOURCE=https://user:token@host/...
#                  labels https://host/... (the user-info removed)
#   sbom           CycloneDX, digest = image label, lists the locked versions
#   commands       from the unpacked image (umoci unpack), chroot, read-only
#                  root, user 65532: version, crd (= the chart's CRDs), policy
#                  check on examples/ (admitted) and on a privileged Pod
#                  (denied, field path named), no /bin/sh
#   chart-run      tests/image/chart-run.sh: `run` from the image with the
#                  chart's args, RBAC and token serves a warm claim
#   deny           cargo deny check licenses bans (deny.toml), and a stricter
#                  copy of it refuses the graph
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
source tests/image/lib.sh

[[ $(id -u) == 0 ]] || { echo "tests/image/run.sh needs root (chroot, mount namespaces)" >&2; exit 2; }
PATH="$(scripts/image/tools.sh):$PATH" || exit 2
export PATH
eval "$(tests/controlplane/cluster.sh env)" # helm, kubectl

target_dir=$(cargo metadata --no-deps --format-version 1 --locked | jq -er .target_directory)
out=$target_dir/image
version=$(cargo metadata --no-deps --format-version 1 --locked |
  jq -er '.packages[] | select(.name == "sandbox-operator") | .version')
work=$(mktemp -d "${TMPDIR:-/tmp}/image-test.XXXXXX")
trap 'rm -rf "$work"' EXIT

blob() { echo "$out/oci/blobs/${1/://}"; }
manifest() { blob "$(jq -er '.manifests[0].digest' "$out/oci/index.json")"; }
config() { blob "$(jq -er '.config.digest' "$(manifest)")"; }
layer() { blob "$(jq -er '.layers[0].digest' "$(manifest)")"; }

test_build() {
  scripts/image/build.sh
}

test_build_context() {
  local depinfo=$target_dir/release/sandbox-operator.d status
  tests/image/build-context.sh "$depinfo" || return 1
  # The same check with charts/ excluded again (a line appended after the
  # re-include of the embedded chart files) must fail, naming those files:
  # the check bites.
  { cat .dockerignore && printf '\ncharts/\n'; } >"$work/dockerignore-no-charts"
  tests/image/build-context.sh "$depinfo" Dockerfile "$work/dockerignore-no-charts" >"$work/no-charts.log" 2>&1 &&
    status=0 || status=$?
  cat "$work/no-charts.log"
  ((status == 1)) || fail "build-context exited $status with charts/ excluded from the context, expected 1"
  grep -q '^build-context: charts/sandbox-operator/files/.* excludes it (charts/)$' "$work/no-charts.log" ||
    fail "build-context did not name a file under charts/sandbox-operator/files/ excluded by charts/"
}

test_reproducible() {
  cp "$target_dir/release/sandbox-operator" "$work/binary" # new mtime, same bytes
  (umask 027 && IMAGE_BINARY=$work/binary IMAGE_OUT=$work/rebuild TMPDIR=$work scripts/image/build.sh) || return 1
  echo "first:  $(cat "$out/digest")"
  echo "second: $(cat "$work/rebuild/digest")"
  [[ $(cat "$out/digest") == "$(cat "$work/rebuild/digest")" ]] || fail "manifest digests differ"
  local file
  for file in "sandbox-operator-$version.docker.tar" "sandbox-operator-$version.cdx.json"; do
    cmp "$out/$file" "$work/rebuild/$file" || fail "$file differs between the builds"
  done
}

test_contents() {
  local listing files
  listing=$(tar -tvzf "$(layer)") || return 1
  files=$(tar -tzf "$(layer)")
  echo "$listing"
  local unexpected
  unexpected=$(grep -vxE 'etc/|etc/(passwd|group|nsswitch\.conf)|etc/ssl/|etc/ssl/certs/|etc/ssl/certs/ca-certificates\.crt|lib/|lib/[a-z0-9_-]+-linux-gnu/|lib/[a-z0-9_-]+-linux-gnu/lib[a-z0-9_+.-]+\.so[0-9.]*|lib64/|lib64/ld-linux-[a-z0-9_-]+\.so\.[0-9]+|usr/|usr/local/|usr/local/bin/|usr/local/bin/sandbox-operator|usr/share/|usr/share/doc/|usr/share/doc/[a-z0-9.+-]+/|usr/share/doc/[a-z0-9.+-]+/copyright' <<<"$files" || true)
  [[ -z $unexpected ]] || fail "unexpected entries in the image: $unexpected"
  grep -qE '(^|/)(sh|bash|dash|busybox)$' <<<"$files" && fail "a shell is in the image"
  awk '$2 != "0/0" { bad = 1; print "not root-owned: " $0 } END { exit bad }' <<<"$listing" || return 1
  awk '$1 ~ /[sS]/ { bad = 1; print "setuid/setgid: " $0 } END { exit bad }' <<<"$listing" || return 1
  # Exactly the libraries the binary links: ELF NEEDED entries + the interpreter.
  local binary=$target_dir/release/sandbox-operator needed shipped
  needed=$( (readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
    readelf -l "$binary" | sed -n 's/.*interpreter: \/.*\/\(.*\)\]/\1/p') | sort -u)
  shipped=$(grep -E '\.so' <<<"$files" | xargs -n1 basename | sort)
  echo "needed: ${needed//$'\n'/ }"
  echo "shipped: ${shipped//$'\n'/ }"
  [[ $needed == "$shipped" ]] || fail "shared libraries shipped ($shipped) != needed ($needed)"
  local size
  size=$(jq -er '[.layers[].size, .config.size] | add' "$(manifest)")
  echo "compressed size: $size bytes"
  ((size < 25 * 1024 * 1024)) || fail "image is $size bytes, over the 25 MiB budget"
}

test_metadata() {
  local cfg head epoch created chart_version chart_image
  cfg=$(cat "$(config)")
  label() { jq -er --arg k "$1" '.config.Labels[$k]' <<<"$cfg"; }
  jq . <<<"$cfg"
  [[ $(jq -r .config.User <<<"$cfg") == 65532:65532 ]] || fail "user is not 65532:65532"
  [[ $(jq -c .config.Entrypoint <<<"$cfg") == '["/usr/local/bin/sandbox-operator"]' ]] || fail "entrypoint"
  head=$(git rev-parse HEAD)
  [[ $(label org.opencontainers.image.revision) =~ ^$head(-dirty)?$ ]] || fail "revision label is not $head"
  epoch=$(git log -1 --format=%ct)
  created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
  [[ $(label org.opencontainers.image.created) == "$created" ]] || fail "created label is not the commit time $created"
  [[ $(jq -r .created <<<"$cfg") == "$created" ]] || fail "config.created is not the commit time $created"
  [[ $(label org.opencontainers.image.version) == "$version" ]] || fail "version label is not $version"
  label org.opencontainers.image.source || return 1
  no_credentials "$cfg" || return 1
  chart_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/sandbox-operator/Chart.yaml)
  [[ $chart_version == "$version" ]] || fail "chart appVersion $chart_version != crate version $version"
  chart_image=$(helm template rel charts/sandbox-operator --kube-version 1.30.0 | sed -n 's/^ *image: "\(.*sandbox-operator:.*\)"$/\1/p' | head -n1)
  echo "chart default image: $chart_image"
  local archive=$out/sandbox-operator-$version.docker.tar
  local tags
  tags=$(tar -xOf "$archive" manifest.json | jq -r '.[0].RepoTags[]')
  echo "docker tarball tag: $tags"
  # docker.io/library/ is what a bare name means to docker and the kubelet.
  [[ ${tags#docker.io/library/} == "$chart_image" ]] || fail "docker tarball tag $tags != the chart's default image $chart_image"
  # The build prints the chart's --set that pins this build, and it renders
  # repository@digest.
  local digest pinned
  digest=$(cat "$out/digest")
  grep -qF -- "--set image.digest=$digest" "$out/summary.txt" || fail "the build's summary prints no --set image.digest=$digest"
  pinned=$(helm template rel charts/sandbox-operator --kube-version 1.30.0 --set "image.digest=$digest" |
    sed -n 's/^ *image: "\(.*sandbox-operator@.*\)"$/\1/p' | head -n1)
  echo "chart image pinned by digest: $pinned"
  [[ $pinned == "sandbox-operator@$digest" ]] || fail "the chart with image.digest=$digest renders $pinned"
  local docker_config
  docker_config=$(skopeo --insecure-policy inspect --config --raw "docker-archive:$archive" | sha256sum | cut -d' ' -f1)
  [[ sha256:$docker_config == "$(jq -er .config.digest "$(manifest)")" ]] || fail "the docker tarball's config differs from the OCI image's"
}

# Fails when a label of the image config CFG holds a URL with user-info
# (scheme://user:token@host): a credential in a pushed image.
no_credentials() {
  local found
  found=$(jq -r '.config.Labels | to_entries[] | select(.value | test("://[^/]*@")) | .key' <<<"$1")
  [[ -z $found ]] || fail "labels with user-info in a URL (a credential in the image): ${found//$'\n'/ }"
}

test_source_label() {
  # A remote cloned with a token: build.sh keeps the token out of the label.
  local layout=$work/credentials/oci manifest_digest config_digest cfg source
  IMAGE_SOURCE=https://image-test:not-a-token@example.invalid/sandbox-operator.git \
    IMAGE_BINARY=$target_dir/release/sandbox-operator IMAGE_OUT=$work/credentials TMPDIR=$work \
    scripts/image/build.sh >/dev/null || return 1
  manifest_digest=$(cat "$work/credentials/digest")
  config_digest=$(jq -er .config.digest "$layout/blobs/${manifest_digest/://}")
  cfg=$(cat "$layout/blobs/${config_digest/://}")
  source=$(jq -er '.config.Labels["org.opencontainers.image.source"]' <<<"$cfg")
  echo "source label: $source"
  [[ $source == https://example.invalid/sandbox-operator.git ]] || fail "source label is $source"
  no_credentials "$cfg"
}

test_sbom() {
  local cfg file digest
  cfg=$(cat "$(config)")
  file=$out/$(jq -er '.config.Labels["dev.sandbox-operator.sbom.file"]' <<<"$cfg")
  digest=$(jq -er '.config.Labels["dev.sandbox-operator.sbom.digest"]' <<<"$cfg")
  [[ sha256:$(sha256sum "$file" | cut -d' ' -f1) == "$digest" ]] || fail "SBOM digest differs from the label"
  jq -e '.bomFormat == "CycloneDX"' "$file" >/dev/null || fail "not CycloneDX"
  echo "components: $(jq '.components | length' "$file"), spec $(jq -r .specVersion "$file")"
  local crate locked
  for crate in kube tokio rustls hyper k8s-openapi prometheus; do
    locked=$(grep -A1 "^name = \"$crate\"$" Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p' | head -n1)
    jq -e --arg n "$crate" --arg v "$locked" \
      '[.. | objects | select(.name? == $n and .version? == $v)] | length > 0' "$file" >/dev/null ||
      fail "SBOM does not list $crate $locked"
    echo "$crate $locked listed"
  done
}

# The image as a runtime sees it: root file system and runtime config
# (process args, and the user resolved through the image's /etc/passwd).
unpacked=$work/bundle
user=
unpack() {
  umoci unpack --image "$out/oci:$version" "$unpacked" >"$logs/unpack.log" 2>&1 &&
    user=$(jq -er '"\(.process.user.uid):\(.process.user.gid)"' "$unpacked/config.json")
}

test_commands() {
  local root=$unpacked/rootfs entry file
  entry=$(jq -er '.process.args[0]' "$unpacked/config.json")
  echo "entrypoint $entry as $user"
  [[ $user == 65532:65532 ]] || fail "the runtime config's user is $user"
  IMAGE_ENV=(PATH=/usr/local/bin)
  [[ $(in_image "$root" "$user" -- "$entry" version) == "sandbox-operator $version" ]] || fail "version"
  in_image "$root" "$user" -- "$entry" crd >"$work/crds.yaml" || fail "crd"
  cmp "$work/crds.yaml" charts/sandbox-operator/crds/crds.yaml || fail "the image's CRDs differ from the chart's"
  local examples=()
  for file in examples/*.yaml; do examples+=("/$file"); done
  in_image "$root" "$user" "$PWD/examples:/examples" -- "$entry" policy check "${examples[@]}" || fail "policy check examples/"
  cat >"$work/privileged.yaml" <<'EOF'
apiVersion: agents.x-k8s.io/v1alpha1
kind: Sandbox
metadata: {name: privileged}
spec:
  podTemplate:
    spec:
      containers:
        - name: agent
          image: busybox
          securityContext: {privileged: true}
EOF
  local denial status
  denial=$(in_image "$root" "$user" "$work/privileged.yaml:/input/privileged.yaml" -- "$entry" policy check /input/privileged.yaml) &&
    status=0 || status=$?
  echo "$denial"
  ((status == 1)) || fail "policy check of a privileged Pod exited $status, expected 1"
  grep -q 'spec.podTemplate.spec.containers\[0\].securityContext.privileged' <<<"$denial" || fail "the denial does not name the field"
  if in_image "$root" "$user" -- /bin/sh -c true 2>/dev/null; then fail "/bin/sh ran in the image"; fi
}

test_chart_run() {
  ROOTFS=$unpacked/rootfs IMAGE_USER=$user WORK=$work tests/image/chart-run.sh
}

test_deny() {
  cargo deny --offline --locked check licenses bans || return 1
  # The same check with MIT no longer allowed must fail: the check bites.
  grep -v '^  "MIT",$' deny.toml >"$work/deny-strict.toml"
  if cargo deny --offline --locked --config "$work/deny-strict.toml" check licenses >"$work/strict.log" 2>&1; then
    fail "cargo deny accepted the graph without MIT"
  fi
  grep -E '^error\[rejected\]' "$work/strict.log" | sort | uniq -c
  grep -q 'licenses FAILED' "$work/strict.log" || { cat "$work/strict.log"; fail "no licence rejection in the strict run"; }
}

check build test_build
check build-context test_build_context
if [[ -s $out/digest ]]; then
  check reproducible test_reproducible
  check contents test_contents
  check metadata test_metadata
  check source-label test_source_label
  check sbom test_sbom
  unpack || echo "umoci unpack failed: $(cat "$logs/unpack.log")"
  check commands test_commands
  check chart-run test_chart_run
fi
check deny test_deny
echo "image: $(grep -E '^(digest|size):' "$out/summary.txt" 2>/dev/null | tr -s ' ' | paste -sd ' ')"
summary
