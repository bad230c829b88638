#!/bin/sh
# Make every Secret the manifests in deploy/k8s name, with fresh keys and passwords,
# into DIR (never into the repository), as Kubernetes YAML: DIR/secrets.yaml.
#
#   deploy/k8s/make-secrets.sh DIR [FRONTEND_NAME ...]
#   kubectl apply -n trustserve -f DIR/secrets.yaml      # then keep DIR offline, or shred it
#
# FRONTEND_NAME: extra DNS names for the frontend's certificate (the name clients use).
# Needs openssl, kubectl (it only formats the YAML: --dry-run=client, no cluster) and the
# trustserve CLI ($TRUSTSERVE, default: trustserve on PATH) for the Redis part.
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
TRUSTSERVE=${TRUSTSERVE:-trustserve}
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

# The KMS root key file (TRUSTSERVE_KMS_KEY_FILE): 32 random bytes.
openssl rand -out kms-root.key 32

# Redis: `trustserve redis config` makes its CA, server and per-role client certificates,
# passwords and ACL users (the least rights of each role; docs/redis.md). Its redis.conf
# is for a plain host; here only its `user` lines are kept (the ConfigMap has the rest),
# and KEDA gets a user of its own that can read queue lag and nothing else.
redis_host="trustserve-redis.$ns.svc.cluster.local"
$TRUSTSERVE redis config redis --host "$redis_host" > /dev/null
grep '^user ' redis/redis.conf > users.acl
openssl rand -hex 32 | tr -d '\n' > redis-keda.password
echo "user keda on #$(openssl dgst -sha256 -r redis-keda.password | cut -d' ' -f1) ~trustserve:q:* resetchannels -@all +ping +hello +xinfo|groups" >> users.acl
openssl ecparam -name prime256v1 -genkey -noout -out redis-keda-key.pem 2>/dev/null
openssl req -new -key redis-keda-key.pem -subj "/CN=keda" -out redis-keda.csr
printf 'extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n' > redis-keda.ext
openssl x509 -req -in redis-keda.csr -CA redis/tls/ca.pem -CAkey redis/tls/ca-key.pem \
  -CAcreateserial -sha256 -days "$days" -extfile redis-keda.ext -out redis-keda.pem 2>/dev/null
rm -f redis-keda.csr redis-keda.ext
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
  secret trustserve-frontend-tls --from-file=tls.crt=frontend.pem --from-file=tls.key=frontend-key.pem
  secret trustserve-ca --from-file=ca.pem=ca.pem
  secret trustserve-redis-tls --from-file=tls.crt=redis/tls/server.pem \
    --from-file=tls.key=redis/tls/server-key.pem --from-file=ca.crt=redis/tls/ca.pem
  secret trustserve-redis-acl --from-file=users.acl=users.acl
  for role in frontend worker; do
    secret "trustserve-redis-$role" --from-file=ca.crt=redis/tls/ca.pem \
      --from-file=tls.crt="redis/tls/$role.pem" --from-file=tls.key="redis/tls/$role-key.pem" \
      --from-file=password="redis/$role.password"
  done
  secret trustserve-redis-keda --from-file=username=redis-keda.username \
    --from-file=password=redis-keda.password --from-file=tls=keda-tls.flag \
    --from-file=ca=redis/tls/ca.pem --from-file=cert=redis-keda.pem --from-file=key=redis-keda-key.pem
} > secrets.yaml
echo "wrote $out/secrets.yaml (clients trust $out/ca.pem; keep ca.key and redis/tls/ca-key.pem offline)"
