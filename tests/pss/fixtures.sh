#!/usr/bin/env bash
# Prints the directory of the official Pod Security fixtures
# (`<dir>/<level>/v1.37/{pass,fail}/*.yaml`) of the Go module
# k8s.io/pod-security-admission, pinned by version and by its go.sum hash.
# Downloads through the Go module proxy into the module cache once; later
# runs only read the cache. Used by tests/integration/pss.rs.
set -euo pipefail

module=k8s.io/pod-security-admission
version=v0.37.2
sum='h1:mnfCR7fUzsvtiSiYZD9HTcTJ9cpJDMnQn++9Rq1mlrc='

# Outside any Go module, so no go.mod is read or written.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
info=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$module@$version")
dir=$(sed -n 's/.*"Dir": "\(.*\)",*/\1/p' <<<"$info")
got=$(sed -n 's/.*"Sum": "\(.*\)",*/\1/p' <<<"$info")
if [[ "$got" != "$sum" ]]; then
    echo "fixtures.sh: $module@$version has sum $got, expected $sum" >&2
    exit 1
fi
testdata="$dir/test/testdata"
if [[ ! -d "$testdata/baseline/v1.37/fail" ]]; then
    echo "fixtures.sh: no fixtures under $testdata/baseline/v1.37" >&2
    exit 1
fi
echo "$testdata"
