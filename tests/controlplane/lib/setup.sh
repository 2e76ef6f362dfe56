# shellcheck shell=bash
# Setting up a new control plane: free ports, the test PKI, kubeconfigs,
# KWOK stages, the fake Node and the default StorageClass.
# Sourced by cluster.sh, which defines what these use (state, here, log,
# die, api, port, start_proc and the settings).

free_ports() { # free_ports N: N distinct free TCP ports on 127.0.0.1
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

gen_certs() {
  local pki=$state/pki
  mkdir -p "$pki"
  # A leaf certificate's section: NAME and its extended key usage.
  leaf() {
    printf '[%s]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n' "$1"
    printf 'extendedKeyUsage = %s\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n' "$2"
  }
  {
    cat <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
EOF
    leaf server serverAuth
    echo 'subjectAltName = IP:127.0.0.1, DNS:localhost, IP:10.0.0.1, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local'
    leaf client clientAuth
  } >"$pki/openssl.cnf"
  key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$1.key" 2>/dev/null; }
  ca() { # ca NAME COMMON-NAME
    key "$1"
    openssl req -config "$pki/openssl.cnf" -x509 -new -sha256 -key "$pki/$1.key" -days 3650 \
      -subj "/CN=$2" -extensions ca -out "$pki/$1.crt" 2>/dev/null
  }
  cert() { # cert NAME SUBJECT EXTENSION-SECTION [CA-NAME]
    local ca=${4:-ca}
    key "$1"
    openssl req -config "$pki/openssl.cnf" -new -key "$pki/$1.key" -subj "$2" -out "$pki/$1.csr" 2>/dev/null
    openssl x509 -req -sha256 -in "$pki/$1.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -days 365 \
      -extfile "$pki/openssl.cnf" -extensions "$3" -out "$pki/$1.crt" 2>/dev/null
    rm -f "$pki/$1.csr"
  }
  ca ca sandbox-operator-test-ca
  # Front-proxy (request header) CA: without it kube-controller-manager and
  # kube-scheduler keep logging "missing content for CA bundle".
  ca front-proxy-ca sandbox-operator-test-front-proxy-ca
  cert front-proxy-client "/CN=front-proxy-client" client front-proxy-ca
  cert apiserver "/CN=kube-apiserver" server
  cert admin "/O=system:masters/CN=sandbox-test-admin" client
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
  cert kube-controller-manager "/CN=system:kube-controller-manager" client
  cert kube-scheduler "/CN=system:kube-scheduler" client
  cert kwok "/O=system:masters/CN=kwok-controller" client
  key sa
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key
}

write_kubeconfig() { # write_kubeconfig FILE CERT-NAME
  local b64='base64 -w0'
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sandbox-test
  cluster:
    server: https://127.0.0.1:$(port APISERVER_PORT)
    certificate-authority-data: $($b64 <"$state/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 <"$state/pki/$2.crt")
    client-key-data: $($b64 <"$state/pki/$2.key")
contexts:
- name: sandbox-test
  context:
    cluster: sandbox-test
    user: $2
current-context: sandbox-test
EOF
  chmod 600 "$1"
}

pod_start_delay_ms() {
  local d=${SANDBOX_CP_POD_START_DELAY_MS:-0}
  [[ $d =~ ^[0-9]+$ ]] || die "SANDBOX_CP_POD_START_DELAY_MS must be a whole number of milliseconds, got '$d'"
  echo $((10#$d))
}

stages_for() { # stages_for DELAY_MS: kwok-stages.yaml with that default start delay
  sed -e "s/{{ \$defaultDelayMs := \"[0-9]*\" }}/{{ \$defaultDelayMs := \"$1\" }}/" \
    "$here/kwok-stages.yaml"
}

stages_match() { # stages_match DELAY_MS: whether the running kwok has these stages
  [[ -f $state/kwok-stages.yaml ]] && stages_for "$1" | cmp -s - "$state/kwok-stages.yaml"
}

write_stages() { # write_stages DELAY_MS
  stages_for "$1" >"$state/kwok-stages.yaml"
  grep -q "\$defaultDelayMs := \"$1\"" "$state/kwok-stages.yaml" ||
    die "could not set the default start delay in $state/kwok-stages.yaml"
  echo "$1" >"$state/pod-start-delay-ms"
}

create_node() {
  local code
  code=$(api /api/v1/nodes -o "$state/logs/create-node.json" -w '%{http_code}' \
    -X POST -H 'Content-Type: application/json' --data-binary @- <<EOF
{
  "apiVersion": "v1",
  "kind": "Node",
  "metadata": {
    "name": "$node_name",
    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
    "labels": {
      "type": "kwok",
      "kubernetes.io/hostname": "$node_name",
      "kubernetes.io/os": "linux",
      "kubernetes.io/arch": "amd64"
    }
  },
  "spec": {"podCIDR": "$pod_cidr", "podCIDRs": ["$pod_cidr"]},
  "status": {
    "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "10000"},
    "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "10000"}
  }
}
EOF
  )
  [[ $code == 201 || $code == 409 ]] || { cat "$state/logs/create-node.json" >&2; die "creating Node $node_name: HTTP $code"; }
}

# The default StorageClass; kwok provisions and binds its claims (see kwok-stages.yaml).
create_storage_class() {
  local code
  code=$(api /apis/storage.k8s.io/v1/storageclasses -o "$state/logs/create-storageclass.json" -w '%{http_code}' \
    -X POST -H 'Content-Type: application/json' --data-binary @- <<'EOF'
{
  "apiVersion": "storage.k8s.io/v1",
  "kind": "StorageClass",
  "metadata": {
    "name": "kwok-volume",
    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}
  },
  "provisioner": "kwok.x-k8s.io/volume",
  "reclaimPolicy": "Delete",
  "volumeBindingMode": "Immediate",
  "allowVolumeExpansion": true
}
EOF
  )
  [[ $code == 201 || $code == 409 ]] || { cat "$state/logs/create-storageclass.json" >&2; die "creating StorageClass kwok-volume: HTTP $code"; }
}
