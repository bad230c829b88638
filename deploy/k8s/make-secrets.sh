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

issue() { # name SANs [EKU [CA]] -> name.pem, name-key.pem, signed by CA.pem / CA.key (default: ca)
  eku=${3:-serverAuth}
  ca=${4:-ca}
  openssl ecparam -name prime256v1 -genkey -noout -out "$1-key.pem" 2>/dev/null
  openssl req -new -key "$1-key.pem" -subj "/O=trustserve/CN=$1" -out "$1.csr"
  {
    if [ -n "$2" ]; then printf 'subjectAltName=%s\n' "$2"; fi
    printf 'extendedKeyUsage=%s\nbasicConstraints=critical,CA:FALSE\n' "$eku"
  } > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -sha256 \
    -days "$days" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

pods() { # statefulset headless-service count -> the DNS names of its pods, short and long
  n=0
  while [ "$n" -lt "$3" ]; do
    printf ',DNS:%s-%s.%s,DNS:%s-%s.%s.%s.svc,DNS:%s-%s.%s.%s.svc.cluster.local' \
      "$1" "$n" "$2" "$1" "$n" "$2" "$ns" "$1" "$n" "$2" "$ns"
    n=$((n + 1))
  done
}

frontend_sans=$(names trustserve-frontend)
for extra in "$@"; do frontend_sans="$frontend_sans,DNS:$extra"; done
# localhost: the model owner reaches the KMS through `kubectl port-forward` (docs/deploy.md);
# each replica by its own name too (clients and joining replicas list them all)
issue kms "$(names trustserve-kms),DNS:localhost$(pods trustserve-kms trustserve-kms-pods 3)"
issue frontend "$frontend_sans"

# etcd (the KMS replicas' state): a CA of its own, so that no other certificate of the
# deployment opens etcd. One certificate for the three members, as servers and as peers
# (etcd checks a peer's address against the names in its certificate; localhost:
# etcdctl inside a member's pod, e.g. for `etcdctl snapshot save`), and the KMS's client one.
openssl ecparam -name prime256v1 -genkey -noout -out etcd-ca.key 2>/dev/null
openssl req -x509 -new -key etcd-ca.key -sha256 -days "$days" -subj "/O=trustserve/CN=trustserve etcd CA" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -out etcd-ca.pem
issue etcd "DNS:localhost$(pods trustserve-etcd trustserve-etcd-pods 3)" serverAuth,clientAuth etcd-ca
issue etcd-kms "" clientAuth etcd-ca

# The KMS root key file (TRUSTSERVE_KMS_KEY_FILE): 32 random bytes.
openssl rand -out kms-root.key 32

# Redis: `trustserve redis config` makes its CA, per-role client certificates, passwords
# and ACL users (the least rights of each role; docs/redis.md), and with --replica and
# --sentinel the replication and Sentinel users, passwords and client certificate. Its
# files are for plain hosts; here only the users and passwords are kept (the ConfigMap
# has the rest), the server certificate is made again to also name the Service (KEDA),
# and KEDA gets a user of its own that can read queue lag and nothing else.
# (The names given here only go into that unused certificate; the short forms, since a
# certificate's common name has at most 64 characters.)
set -- --replica trustserve-redis-1.trustserve-redis-pods:6380
for n in 0 1 2; do set -- "$@" --sentinel "trustserve-redis-sentinel-$n.trustserve-redis-sentinel:26380"; done
$TRUSTSERVE redis config redis --host trustserve-redis-0.trustserve-redis-pods "$@" > /dev/null
grep '^user ' redis/redis.conf > users.acl
grep -E '^(masteruser|masterauth) ' redis/redis.conf > redis-masterauth.conf
grep -E '^(sentinel (auth-pass|sentinel-user|sentinel-pass) |user )' redis/sentinel-1.conf > redis-sentinel-auth.conf
cp redis/tls/ca-key.pem redis-ca.key
cp redis/tls/ca.pem redis-ca.pem
issue redis-server "$(names trustserve-redis)$(pods trustserve-redis trustserve-redis-pods 2)$(pods trustserve-redis-sentinel trustserve-redis-sentinel 3)" serverAuth redis-ca
rm -f redis-ca.key
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
  secret trustserve-etcd-tls --from-file=ca.crt=etcd-ca.pem --from-file=tls.crt=etcd.pem \
    --from-file=tls.key=etcd-key.pem
  secret trustserve-etcd-client --from-file=ca.crt=etcd-ca.pem --from-file=tls.crt=etcd-kms.pem \
    --from-file=tls.key=etcd-kms-key.pem
  secret trustserve-frontend-tls --from-file=tls.crt=frontend.pem --from-file=tls.key=frontend-key.pem
  secret trustserve-ca --from-file=ca.pem=ca.pem
  secret trustserve-redis-tls --from-file=tls.crt=redis-server.pem \
    --from-file=tls.key=redis-server-key.pem --from-file=ca.crt=redis/tls/ca.pem
  secret trustserve-redis-acl --from-file=users.acl=users.acl
  secret trustserve-redis-replication --from-file=tls.crt=redis/tls/replication.pem \
    --from-file=tls.key=redis/tls/replication-key.pem --from-file=masterauth.conf=redis-masterauth.conf
  secret trustserve-redis-sentinel --from-file=auth.conf=redis-sentinel-auth.conf
  for role in frontend worker; do
    secret "trustserve-redis-$role" --from-file=ca.crt=redis/tls/ca.pem \
      --from-file=tls.crt="redis/tls/$role.pem" --from-file=tls.key="redis/tls/$role-key.pem" \
      --from-file=password="redis/$role.password"
  done
  secret trustserve-redis-keda --from-file=username=redis-keda.username \
    --from-file=password=redis-keda.password --from-file=tls=keda-tls.flag \
    --from-file=ca=redis/tls/ca.pem --from-file=cert=redis-keda.pem --from-file=key=redis-keda-key.pem
} > secrets.yaml
echo "wrote $out/secrets.yaml (clients trust $out/ca.pem; keep ca.key, etcd-ca.key and redis/tls/ca-key.pem offline)"
