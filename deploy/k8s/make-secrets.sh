#!/bin/sh
# Make every Secret the manifests in deploy/k8s name, with fresh keys and passwords,
# into DIR (never into the repository), as Kubernetes YAML: DIR/secrets.yaml.
#
#   deploy/k8s/make-secrets.sh DIR [FRONTEND_NAME ...]
#   kubectl apply -n trustserve -f DIR/secrets.yaml      # then keep DIR offline, or shred it
#
# FRONTEND_NAME: extra DNS names for the frontend's certificate (the name clients use).
# Needs openssl and kubectl (kubectl only formats the YAML: --dry-run=client, no cluster).
# No secret is ever put on a command line: every value goes through a file.
# For Confidential Containers, see docs/deploy.md: the KMS root key and the TLS keys of
# the frontend and the KMS must become sealed secrets, because the host sees plain ones.
set -eu

if [ $# -lt 1 ]; then
  echo "usage: $0 DIR [FRONTEND_NAME ...]" >&2
  exit 2
fi
out=$1
shift
ns=${TRUSTSERVE_NAMESPACE:-trustserve}
days=${TRUSTSERVE_CERT_DAYS:-365}
if [ -e "$out/secrets.yaml" ]; then
  echo "$out/secrets.yaml exists: refusing to replace keys in use" >&2
  exit 2
fi
umask 077
mkdir -p "$out"
cd "$out"

names() { # service -> the DNS names it is reached by inside the cluster
  echo "DNS:$1,DNS:$1.$ns.svc,DNS:$1.$ns.svc.cluster.local"
}

openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/O=trustserve/CN=trustserve deployment CA" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem

issue() { # name SANs -> name.pem, name-key.pem
  openssl ecparam -name prime256v1 -genkey -noout -out "$1-key.pem" 2>/dev/null
  openssl req -new -key "$1-key.pem" -subj "/O=trustserve/CN=$1" -out "$1.csr"
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 \
    -days "$days" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

frontend_sans=$(names trustserve-frontend)
for extra in "$@"; do frontend_sans="$frontend_sans,DNS:$extra"; done
# localhost: the model owner reaches the KMS through `kubectl port-forward` (docs/deploy.md)
issue kms "$(names trustserve-kms),DNS:localhost"
issue frontend "$frontend_sans"
issue redis "$(names trustserve-redis)"

# The KMS root key file (TRUSTSERVE_KMS_KEY_FILE): 32 random bytes.
openssl rand -out kms-root.key 32

# Redis ACL users (docs/redis.md): default gets the broker's rights and a password
# nobody keeps; trustserve is the frontends' and workers' user; keda reads lag only.
for user in default trustserve keda; do
  openssl rand -hex 32 | tr -d '\n' > "redis-$user.password"
done
hash() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }
broker_rights='~trustserve:* resetchannels -@all +@stream +@sortedset +@scripting +@connection +multi +exec +discard +ping +time +expire +del +set -@dangerous'
{
  echo "user default on #$(hash redis-default.password) $broker_rights"
  echo "user trustserve on #$(hash redis-trustserve.password) $broker_rights"
  echo "user keda on #$(hash redis-keda.password) ~trustserve:q:* resetchannels -@all +ping +xinfo|groups +xlen +xpending +hello +auth"
} > users.acl
rm -f redis-default.password
printf trustserve > redis-trustserve.username
printf keda > redis-keda.username
printf enable > keda-tls.flag

secret() { # name, then --from-file=key=file ...
  name=$1
  shift
  kubectl create secret generic "$name" -n "$ns" "$@" --dry-run=client -o yaml
  echo ---
}
{
  secret trustserve-kms-tls --from-file=tls.crt=kms.pem --from-file=tls.key=kms-key.pem
  secret trustserve-kms-root-key --from-file=key=kms-root.key
  secret trustserve-frontend-tls --from-file=ca.pem=ca.pem \
    --from-file=server.pem=frontend.pem --from-file=server-key.pem=frontend-key.pem
  secret trustserve-ca --from-file=ca.pem=ca.pem
  secret trustserve-redis-tls --from-file=tls.crt=redis.pem --from-file=tls.key=redis-key.pem \
    --from-file=ca.crt=ca.pem
  secret trustserve-redis-acl --from-file=users.acl=users.acl
  secret trustserve-redis-client --from-file=ca.crt=ca.pem --from-file=password=redis-trustserve.password
  secret trustserve-redis-keda --from-file=username=redis-keda.username \
    --from-file=password=redis-keda.password --from-file=tls=keda-tls.flag --from-file=ca=ca.pem
} > secrets.yaml
echo "wrote $out/secrets.yaml (clients trust $out/ca.pem; ca.key signs new certificates: keep it offline)"
