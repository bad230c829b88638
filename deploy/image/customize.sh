#!/bin/sh
# mmdebstrap customize hook: turns the Debian rootfs at "$1" into the trustserve image.
#
# Called by deploy/image/build.py (as root, mmdebstrap's "root" mode), which sets:
#   TRUSTSERVE_WHEELHOUSE  host directory with every locked wheel, the trustserve wheel
#                          and requirements.lock (all checked against their hashes already)
#   TRUSTSERVE_PACKAGES    host file to write the installed Debian packages to (name=version)
#   TRUSTSERVE_APT_SOURCES the image's /etc/apt/sources.list, whichever mirror was used
# Nothing is downloaded here: pip installs from the wheelhouse only (--no-index).
set -eu

root="$1"
: "${TRUSTSERVE_WHEELHOUSE:?}" "${TRUSTSERVE_PACKAGES:?}" "${TRUSTSERVE_APT_SOURCES:?}"
umask 022
export PYTHONDONTWRITEBYTECODE=1 LC_ALL=C.UTF-8

# The application: a venv of Debian's python3, without pip (pip runs from Debian's pip wheel
# and stays out of the image). No bytecode is compiled: .pyc files are not reproducible
# byte for byte, and the root filesystem is read-only at run time anyway.
mkdir "$root/tmp/wheels"
cp "$TRUSTSERVE_WHEELHOUSE"/*.whl "$TRUSTSERVE_WHEELHOUSE/requirements.lock" "$root/tmp/wheels/"
chroot "$root" python3 -m venv --without-pip /opt/trustserve
pip_whl=$(cd "$root" && echo usr/share/python-wheels/pip-*.whl)
pip() {
    chroot "$root" /opt/trustserve/bin/python "/$pip_whl/pip" --isolated --no-cache-dir \
        --disable-pip-version-check "$@"
}
install="install --quiet --no-index --find-links /tmp/wheels --no-deps --no-compile"
pip $install --require-hashes -r /tmp/wheels/requirements.lock
pip $install trustserve
# The lock was compiled on another Python: every requirement must still be met here.
pip check
chroot "$root" /opt/trustserve/bin/trustserve --help >/dev/null
rm -rf "$root/tmp/wheels"
find "$root/opt/trustserve" -name __pycache__ -type d -prune -exec rm -rf {} +

# The user it runs as (no login, no password), and its state and cache directories,
# which the runtime mounts volumes over.
echo "trustserve:x:10001:10001:trustserve:/var/lib/trustserve:/usr/sbin/nologin" >>"$root/etc/passwd"
echo "trustserve:x:10001:" >>"$root/etc/group"
echo "trustserve:!:::::::" >>"$root/etc/shadow"
echo "trustserve:!::" >>"$root/etc/gshadow"
install -d -m 0700 -o 10001 -g 10001 "$root/var/lib/trustserve" "$root/var/cache/trustserve"

# Host-specific files mmdebstrap copies in: the same on every build host instead.
: >"$root/etc/resolv.conf"
echo trustserve >"$root/etc/hostname"
printf '%s' "$TRUSTSERVE_APT_SOURCES" >"$root/etc/apt/sources.list"

chroot "$root" dpkg-query -W -f '${Package}=${Version}\n' | LC_ALL=C sort >"$TRUSTSERVE_PACKAGES"
