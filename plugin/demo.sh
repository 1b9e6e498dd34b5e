#!/usr/bin/env bash
# plugin/demo.sh (`make demo`): logbridge end to end on a fresh Debian 12, as root.
#
# Installs the Debian packages, uses the dockerd at DOCKER_HOST (or the default socket) if one answers and
# otherwise starts a private one, imports a busybox image without a registry, builds the plugin and
# enables it as the managed plugin `logbridge-demo`, runs a container that logs, shows its json.log and
# `docker logs`, then removes all it made (the private dockerd included).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NAME=logbridge-demo
WORK="$(mktemp -d /tmp/lbdemo.XXXXXX)"  # short: the private dockerd's sockets live below it
PRIVATE=0
CONTAINER=""
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  local rc=$?
  step "cleaning up"
  if [[ -n "$CONTAINER" ]]; then docker rm -f "$CONTAINER" >/dev/null 2>&1 || true; fi
  make --no-print-directory uninstall PLUGIN_NAME="$NAME" FORCE=1 >/dev/null 2>&1 || true
  if ((PRIVATE)); then python3 -m tests.support dockerd-down "$WORK/dockerd" --purge || true; fi
  rm -rf "$WORK"
  if ((rc == 0)); then echo "demo OK"; else echo "demo FAILED (exit $rc)" >&2; fi
}
trap cleanup EXIT

step "Debian packages (scripts/install-deps.sh)"
bash scripts/install-deps.sh
echo "docker.io, busybox-static, mmdebstrap, python3-venv: present"

step "a docker daemon"
if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "using the daemon at ${DOCKER_HOST:-the default socket}"
else
  eval "$(python3 -m tests.support dockerd-up "$WORK/dockerd")"
  export DOCKER_HOST
  PRIVATE=1
  echo "none answered: started a private dockerd, DOCKER_HOST=$DOCKER_HOST"
fi
docker version --format 'dockerd {{.Server.Version}}, API {{.Server.APIVersion}}'

step "a test image without a registry (bb:latest from /bin/busybox)"
python3 -m tests.support busybox-image bb:latest

step "the plugin: make plugin (rootfs cached in /var/cache/logbridge-rootfs)"
make --no-print-directory plugin

step "installing it as $NAME: make install"
make --no-print-directory uninstall PLUGIN_NAME="$NAME" FORCE=1 >/dev/null
make --no-print-directory install PLUGIN_NAME="$NAME" PLUGIN_LOG_ROOT="$WORK/logs" PLUGIN_STATE_DIR="$WORK/state"
docker plugin ls

step "a container that logs through $NAME"
CONTAINER="lbdemo-$$"
set -x
docker run --name "$CONTAINER" --network none --log-driver "$NAME" bb:latest \
  sh -c 'for i in 1 2 3; do echo "hello from logbridge, line $i"; done; echo "a line on stderr" >&2'
{ set +x; } 2>/dev/null
CID="$(docker inspect -f '{{.Id}}' "$CONTAINER")"
LOG="$WORK/logs/$CID/$CID-json.log"

step "its json.log: <log root>/<container id>/<container id>-json.log"
for _ in $(seq 100); do  # the plugin writes it asynchronously
  [[ -f "$LOG" && $(wc -l <"$LOG") -ge 4 ]] && break
  sleep 0.1
done
echo "$LOG"
cat "$LOG"

step "docker logs $CONTAINER"
docker logs "$CONTAINER"
