#!/usr/bin/env bash
# rootfs.sh BINARY DIR: lays out the operator image's root file system in DIR
# (which must not exist yet), like a distroless image and nothing more:
#
#   /usr/local/bin/sandbox-operator   the binary, symbols stripped
#   /lib64/ld-linux-*.so.*, /lib/<multiarch>/*.so.*
#                                     exactly the shared libraries `ldd` names
#   /etc/ssl/certs/ca-certificates.crt  CA bundle (rustls-native-certs reads it)
#   /etc/passwd, /etc/group           root and nonroot (65532), no login shell
#   /etc/nsswitch.conf                files first, then DNS
#   /usr/share/doc/<pkg>/copyright    licences of the Debian packages copied
#
# No shell, no package manager, no time-zone data (the operator only uses
# UTC timestamps). Modes are set explicitly (0755 for executables and
# directories, 0644 for the rest), so the result does not depend on the
# caller's umask; ownership is left to the layer writer (every file root's).
# Used by `make image` (scripts/image/build.sh) and by the Dockerfile.
set -euo pipefail

binary=${1:?usage: rootfs.sh BINARY DIR}
root=${2:?usage: rootfs.sh BINARY DIR}
[[ -x $binary ]] || { echo "rootfs.sh: $binary is not an executable" >&2; exit 2; }
[[ ! -e $root ]] || { echo "rootfs.sh: $root already exists" >&2; exit 2; }
for tool in ldd strip dpkg-query; do
  command -v "$tool" >/dev/null || { echo "rootfs.sh: $tool is missing" >&2; exit 2; }
done

mkdir -p "$root"
put() { # put SOURCE DEST MODE: copy SOURCE's content (symlinks followed) to $root/DEST
  install -D -m "$3" "$1" "$root/$2"
}

put "$binary" usr/local/bin/sandbox-operator 0755
strip --strip-unneeded "$root/usr/local/bin/sandbox-operator"

# Shared libraries: `ldd` lists "name => /path (addr)" and the loader as
# "/path (addr)"; the vDSO has no path and is skipped. Each is copied to the
# path the loader looks at, its symlinks resolved to the file itself.
libraries=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
[[ -n $libraries ]] || { echo "rootfs.sh: ldd found no libraries (static binary?)" >&2; exit 2; }
packages=()
for library in $libraries; do
  put "$library" "${library#/}" 0755
  real=$(readlink -f "$library")
  # dpkg knows the file by its path before or after merged-/usr symlinks.
  package=$(dpkg-query -S "$real" 2>/dev/null || dpkg-query -S "${real#/usr}" 2>/dev/null || true)
  [[ -n $package ]] && packages+=("${package%%:*}")
done

put /etc/ssl/certs/ca-certificates.crt etc/ssl/certs/ca-certificates.crt 0644
packages+=(ca-certificates)

# Licences of what was copied from Debian packages.
for package in $(printf '%s\n' "${packages[@]}" | sort -u); do
  copyright=/usr/share/doc/$package/copyright
  [[ -f $copyright ]] && put "$copyright" "usr/share/doc/$package/copyright" 0644
done

printf '%s\n' \
  'root:x:0:0:root:/root:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$root/etc/group"
printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
find "$root" -type d -exec chmod 0755 {} +
