#!/usr/bin/env bash
# scripts/install-deps.sh: install the Debian packages that the tests, `make plugin` and `make demo` need.
#
# Idempotent and quick when everything is there (one dpkg-query, no apt-get update). Otherwise, as
# root: apt-get update, then apt-get install of what is missing. Targets Debian 12 (bookworm).
#
#   docker.io        dockerd 20.10, containerd, runc, the docker CLI (tests run a private daemon)
#   busybox-static   the test image is made from /bin/busybox, which must be static
#   mmdebstrap       builds the plugin's rootfs (plugin/build-rootfs.sh)
#   python3-venv     the project's venv and the rootfs build's throwaway venv
#   tzdata           the e2e tests run a dockerd in a non-UTC zone (not in minimal Debian images)
#   openssl          the forward tests make TLS certificates with the CLI
#   make, curl, ca-certificates
#   gcc, libc6-dev, python3-dev  compile driver/_speedups.c (the venv's and the plugin wheel's C extension)
#   prometheus       a real Prometheus scrapes the plugin in the e2e tests; promtool checks the exposition and
#                    runs the alert rules' tests (no service is started: the tests run their own)
#   clang-14, libclang-rt-14-dev, llvm-14  make fuzz: ASan/UBSan builds of the C extensions with libFuzzer's
#                    coverage counters (fuzz/build.py); llvm-symbolizer names the frames of a sanitizer report
#   docker-compose   Compose v1 (1.29.2): the e2e test of `docker-compose logs` through logbridge
#
# On a systemd host, installing docker.io also starts docker.service; the tests still use their own
# private daemon beside it.
set -euo pipefail

PACKAGES=(docker.io busybox-static mmdebstrap python3-venv tzdata openssl make curl ca-certificates)
PACKAGES+=(gcc libc6-dev python3-dev)
PACKAGES+=(prometheus docker-compose)
PACKAGES+=(clang-14 libclang-rt-14-dev llvm-14) # make fuzz, and the fuzz smoke the suite runs (fuzz/build.py)
PACKAGES+=(docker-registry) # a local registry for make push / make upgrade and their e2e test (tests/support/registry.py)

# one dpkg-query for all; it prints nothing for a package it has never heard of
installed=" $(dpkg-query -W -f='${db:Status-Abbrev}${Package} ' "${PACKAGES[@]}" 2>/dev/null || true) "
missing=()
for pkg in "${PACKAGES[@]}"; do
  [[ "$installed" == *" ii $pkg "* ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "install-deps: missing ${missing[*]}; run this script as root" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
