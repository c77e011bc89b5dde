#!/usr/bin/env bash
# Makes the certificates for the API server -> kaudit webhook path (mTLS),
# with openssl only:
#
#   ca.crt, ca.key                a private CA (keep ca.key off both machines)
#   kaudit.crt, kaudit.key        kaudit's server certificate, for the SANs given
#   apiserver-CLUSTER.crt/.key    one client certificate per cluster,
#                                 subject CN=kube-apiserver-CLUSTER
#
#   bash make-certs.sh OUTDIR "DNS:kaudit.example,IP:192.0.2.20" prod-eu-1 [CLUSTER...]
#
# Run it again with more clusters to add client certificates; the CA is
# kept. Then:
#   - kaudit: tls.cert=kaudit.crt, tls.key=kaudit.key, tls.client_ca=ca.crt,
#     and one `clients` entry per cluster (printed at the end);
#   - each control-plane node: ca.crt as /etc/kubernetes/audit/kaudit-ca.crt,
#     apiserver-CLUSTER.crt/.key as kaudit-client.crt/.key
#     (webhook-kubeconfig.yaml).
# DAYS (default 397) sets the leaf certificates' lifetime: renew before then.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 OUTDIR SUBJECT_ALT_NAMES CLUSTER..." >&2
  exit 2
fi
out=$1
sans=$2
shift 2
days=${DAYS:-397}

umask 077
mkdir -p "$out"
cd "$out"

# P-256 keys in PKCS#8 PEM (what kaudit and the API server both read).
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

if [ ! -f ca.key ]; then
  newkey ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 3650 \
    -subj "/CN=kaudit webhook CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt
fi

# sign NAME SUBJECT EXTENSIONS: a key and a certificate signed by the CA.
sign() {
  newkey "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%s\n' "$3" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -sha256 -days "$days" -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

sign kaudit "/CN=kaudit" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$sans"

for cluster in "$@"; do
  sign "apiserver-$cluster" "/CN=kube-apiserver-$cluster" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
done

chmod 0644 ./*.crt
echo "made in $PWD: ca.crt kaudit.crt kaudit.key$(printf ' apiserver-%s.crt/.key' "$@")"
echo "kaudit webhook source clients:"
for cluster in "$@"; do
  echo "  - {subject: kube-apiserver-$cluster, clusters: [$cluster]}"
done
