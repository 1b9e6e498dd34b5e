#!/usr/bin/env bash
# plugin/build-rootfs.sh: build the managed plugin's root filesystem without a registry.
#
#   plugin/build-rootfs.sh OUT_DIR            -> OUT_DIR/rootfs/
#   plugin/build-rootfs.sh --wheel WHEEL_DIR  -> WHEEL_DIR/logbridge-*.whl only (plugin/Dockerfile's context)
#
# The result is a Debian bookworm userland with python3 and a venv at /opt/logbridge that holds the
# project's wheel and its PyPI dependencies; config.json starts /opt/logbridge/bin/python -m driver.
#
# Two layers, each cached as an uncompressed tar under $LOGBRIDGE_ROOTFS_CACHE:
#   base-<key>.tar    mmdebstrap --variant=extract (python3 and its dependency closure, dash);
#                     key: its recipe (the shell functions that build it), suite, apt sources,
#                     package list.
#   rootfs-<key>.tar  base + venv + pip install of the wheel built from this checkout;
#                     key: base key + its recipe + the project's source files (not the wheel: wheels
#                     are not byte-reproducible) + the host CA bundle.  PyPI dependencies are resolved when this layer is built
#                     and stay as they were until the sources change.
# A warm build only unpacks the cached tar.  Concurrent builds serialise on a lock in the cache.
#
# Environment:
#   LOGBRIDGE_ROOTFS_CACHE   default /var/cache/logbridge-rootfs
#   LOGBRIDGE_ROOTFS_SOURCES apt source lines, one per line (default: the host's bookworm sources,
#                            else deb.debian.org)
#   PYTHON                   interpreter with pip used to build the wheel (default python3; without
#                            pip a throwaway venv is made)
# Needs root (mmdebstrap, chroot, unshare) and mmdebstrap (scripts/install-deps.sh installs it).
set -euo pipefail

SUITE=bookworm
# libstdc++6: protobuf's C extension (upb) links against it; without it protobuf silently falls back to its
# pure-Python parser, which made frame decoding several times slower (found by make bench).
PACKAGES=python3,python3-venv,dash,libstdc++6
VENV=/opt/logbridge
CACHE="${LOGBRIDGE_ROOTFS_CACHE:-/var/cache/logbridge-rootfs}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { echo "build-rootfs: $*" >&2; }
die() { log "$*"; exit 1; }

WHEEL_ONLY=0
if [[ "${1:-}" == --wheel ]]; then
  WHEEL_ONLY=1
  shift
fi
OUT="${1:-}"
[[ -n "$OUT" && $# -eq 1 ]] || die "usage: $0 OUT_DIR | --wheel WHEEL_DIR"
if ((!WHEEL_ONLY)); then
  [[ $(id -u) == 0 ]] || die "must run as root (mmdebstrap, chroot)"
  command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: run scripts/install-deps.sh"
fi

apt_sources() {
  if [[ -n "${LOGBRIDGE_ROOTFS_SOURCES:-}" ]]; then
    printf '%s\n' "$LOGBRIDGE_ROOTFS_SOURCES"
    return
  fi
  local lines
  lines="$(apt-get indextargets --format '$(IDENTIFIER) $(REPO_URI) $(RELEASE)' 2>/dev/null |
    awk -v s="$SUITE" '$1 == "Packages" && ($3 == s || $3 == s "-updates" || $3 == s "-security") {
      print "deb " $2 " " $3 " main" }' | sort -u)"
  if [[ -z "$lines" ]]; then
    lines="deb http://deb.debian.org/debian $SUITE main"
  fi
  printf '%s\n' "$lines"
}

# The files the wheel is built from: pyproject.toml, README/LICENSE and the package directories
# named in [tool.setuptools] (package-dir values, else the package names).
source_paths() {
  python3 - "$REPO" <<'PY'
import os, sys, tomllib
repo = sys.argv[1]
with open(os.path.join(repo, "pyproject.toml"), "rb") as f:
    st = tomllib.load(f).get("tool", {}).get("setuptools", {})
dirs = set(st.get("package-dir", {}).values()) | {p.split(".")[0] for p in st.get("packages", [])}
names = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"]
for name in sorted(set(names) | dirs):
    if os.path.exists(os.path.join(repo, name)):
        print(name)
PY
}

source_tar() {  # deterministic tar of the sources on stdout
  local paths
  mapfile -t paths < <(source_paths)
  tar -C "$REPO" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    --exclude=__pycache__ --exclude='*.pyc' -cf - "${paths[@]}"
}

# in_root DIR CMD...: CMD chrooted in DIR with a clean environment, /dev and /proc mounted in a
# private mount namespace (they vanish with the process, even on failure), the host's DNS and
# proxy settings.  Host PIP_* variables are not passed: they name host paths.
in_root() {
  local root="$1"
  shift
  local envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)
  local v
  for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL \
    PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT; do
    if [[ -n "${!v:-}" ]]; then envs+=("$v=${!v}"); fi
  done
  mkdir -p "$root/dev" "$root/proc" "$root/etc"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  local rc=0
  unshare --mount --propagation private -- env -i "${envs[@]}" \
    bash -c 'r=$1; shift; mount --rbind /dev "$r/dev" && mount -t proc proc "$r/proc" && exec chroot "$r" "$@"' \
    _ "$root" "$@" || rc=$?
  rm -f "$root/etc/resolv.conf"
  return "$rc"
}

build_base() {  # build_base DIR
  local root="$1" sources
  mapfile -t sources < <(apt_sources)
  log "base: mmdebstrap $SUITE ($PACKAGES) from ${sources[*]}"
  mmdebstrap --quiet --variant=extract --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --aptopt='Acquire::Languages "none"' "$SUITE" "$root" "${sources[@]}" >&2
  # --variant=extract runs no maintainer scripts: add what they would have made
  mkdir -p "$root"/{tmp,var/tmp,root,run,etc/ssl/certs}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  [[ -e "$root/etc/passwd" ]] || printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  [[ -e "$root/etc/group" ]] || printf 'root:x:0:\n' >"$root/etc/group"
  in_root "$root" python3 -c 'import ssl, sqlite3, venv, asyncio, zlib, gzip' || die "base python3 is broken"
}

build_wheel() {  # build_wheel DEST_DIR: pip wheel --no-deps from a copy of the sources
  local dest="$1" src="$WORK/src" py="${PYTHON:-python3}"
  mkdir -p "$src" "$dest"
  source_tar | tar -C "$src" -xf -
  if ! "$py" -m pip --version >/dev/null 2>&1; then
    log "no pip in $py: making a throwaway venv"
    python3 -m venv "$WORK/pyvenv"
    py="$WORK/pyvenv/bin/python"
  fi
  "$py" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$WORK/wheel" "$src" >&2
  check_wheel "$src" "$WORK"/wheel/*.whl
  mv "$WORK"/wheel/*.whl "$dest/"
}

check_wheel() {  # check_wheel SRC WHEEL: every module of the source tree made it into the wheel
  python3 - "$@" <<'PY'
import os, sys, tomllib, zipfile
src, whl = sys.argv[1], sys.argv[2]
with open(os.path.join(src, "pyproject.toml"), "rb") as f:
    st = tomllib.load(f).get("tool", {}).get("setuptools", {})
pkg_dirs = st.get("package-dir") or {p: p for p in st.get("packages", [])}
names = set(zipfile.ZipFile(whl).namelist())
missing = []
for pkg, d in pkg_dirs.items():
    for dirpath, dirnames, files in os.walk(os.path.join(src, d)):
        dirnames[:] = [n for n in dirnames if n != "__pycache__"]
        rel = os.path.relpath(dirpath, os.path.join(src, d))
        for fn in files:
            if fn.endswith(".py"):
                arc = os.path.normpath(os.path.join(pkg.replace(".", "/"), rel, fn))
                if arc not in names:
                    missing.append(arc)
if missing:
    sys.exit("build-rootfs: the wheel lacks %s; list every package (or use find) under "
             "[tool.setuptools] in pyproject.toml" % ", ".join(sorted(missing)))
PY
}

build_final() {  # build_final BASE_TAR DIR
  local root="$2" wheels="$WORK/wheels" pipwhl
  mkdir -p "$root"
  tar -C "$root" -xf "$1"
  # TLS to PyPI (and the plugin's own TLS clients) use the system bundle; the extract variant has
  # none, and an intercepting proxy's CA is only in the host's.
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  build_wheel "$wheels"
  mkdir -p "$root/tmp/wheels"
  cp "$wheels"/*.whl "$root/tmp/wheels/"
  local whl=()
  for f in "$wheels"/*.whl; do whl+=("/tmp/wheels/$(basename "$f")"); done
  # a venv without pip: Debian's pip wheel installs into it from outside, so neither pip nor
  # setuptools end up in the rootfs
  in_root "$root" python3 -m venv --without-pip "$VENV"
  pipwhl="$(cd "$root" && ls usr/share/python-wheels/pip-*.whl)"
  in_root "$root" "$VENV/bin/python" "/$pipwhl/pip" install --no-cache-dir --disable-pip-version-check \
    --root-user-action=ignore --progress-bar off --quiet --no-compile "${whl[@]}" >&2
  in_root "$root" "$VENV/bin/python" -c 'if 1:
    import re, driver, importlib.metadata as md
    for req in md.requires("logbridge") or []:
        if "extra ==" not in req:
            md.distribution(re.split(r"[ <>=!~;\[(]", req, maxsplit=1)[0])' ||
    die "the venv lacks the project or one of its dependencies"
  in_root "$root" "$VENV/bin/python" -c 'if 1:
    from google.protobuf.internal import api_implementation
    assert api_implementation.Type() == "upb", api_implementation.Type()' ||
    die "protobuf's C extension does not load in the rootfs (a missing shared library?)"
  # the wheel is built on the host; its abi3 extension must load with the rootfs's python3
  in_root "$root" "$VENV/bin/python" -c 'import driver._speedups' ||
    die "driver._speedups does not load in the rootfs (was the wheel built without a C compiler?)"
  # precompile everything once: the plugin starts from bytecode on its first run too
  in_root "$root" python3 -m compileall -q -j 0 -x 'lib2to3|test' /usr/lib/python3.11 "$VENV/lib" >/dev/null ||
    die "compileall failed"
  rm -rf "$root"/tmp/* "$root/root/.cache" "$root/usr/share/python-wheels"
}

prune() {  # keep the newest $2 files matching $1
  ls -1t "$CACHE"/$1 2>/dev/null | tail -n +"$(($2 + 1))" | xargs -r rm -f
}

if ((WHEEL_ONLY)); then  # for plugin/Dockerfile: just the project's wheel
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  rm -f "$OUT"/logbridge-*.whl
  build_wheel "$OUT"
  log "wheel ready: $(ls "$OUT"/logbridge-*.whl)"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
WORK="$(mktemp -d "$CACHE/.work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# keys hash the recipe (the functions that build a layer), not this whole file
BASE_KEY="$( { echo "$SUITE $PACKAGES"; declare -f build_base in_root; apt_sources; } | sha256sum | cut -c1-16)"
BASE_TAR="$CACHE/base-$BASE_KEY.tar"
SRC_SHA="$(source_tar | sha256sum | cut -c1-64)"
KEY="$( { echo "$BASE_KEY $SRC_SHA $VENV"; declare -f build_final build_wheel;
  sha256sum </etc/ssl/certs/ca-certificates.crt; } | sha256sum | cut -c1-16)"
TAR="$CACHE/rootfs-$KEY.tar"
t0=$SECONDS

if [[ -f "$TAR" ]]; then
  log "cache hit: $TAR"
else
  if [[ -f "$BASE_TAR" ]]; then
    log "base: cache hit $BASE_TAR"
  else
    build_base "$WORK/base"
    tar -C "$WORK/base" --numeric-owner -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$WORK/base"
    prune 'base-*.tar' 2
  fi
  build_final "$BASE_TAR" "$WORK/rootfs"
  tar -C "$WORK/rootfs" --numeric-owner -cf "$TAR.tmp" . && mv "$TAR.tmp" "$TAR"
  rm -rf "$WORK/rootfs"
  prune 'rootfs-*.tar' 3
fi
touch "$TAR"   # newest use first for prune
exec 9>&-      # unlock: the tar is complete and never rewritten (a prune unlinks it, which tar survives)

mkdir -p "$OUT"
rm -rf "$OUT/rootfs"
mkdir "$OUT/rootfs"
tar -C "$OUT/rootfs" --numeric-owner -xpf "$TAR"
log "rootfs ready in $((SECONDS - t0))s: $OUT/rootfs ($(du -sh "$OUT/rootfs" | cut -f1))"
