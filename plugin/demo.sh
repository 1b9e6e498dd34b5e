#!/usr/bin/env bash
# plugin/demo.sh (`make demo`): logbridge end to end on a fresh Debian 12, as root.
#
# Installs the Debian packages, uses the dockerd at DOCKER_HOST (or the default socket) if one answers and
# otherwise starts a private one, imports a busybox image without a registry, builds the plugin and
# enables it as the managed plugin `logbridge-demo`, turns its metrics on (disable, set METRICS_ADDR,
# enable --timeout 0), starts the built-in forward receiver, runs a container that logs through the plugin
# to json.log and to the receiver, shows its json.log, `docker logs`, the records the receiver got, the
# status view and the metrics accounting for every line, then removes all it made (the private dockerd
# included). No image registry and no aggregator image: everything comes from Debian and this checkout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NAME=logbridge-demo
WORK="$(mktemp -d /tmp/lbdemo.XXXXXX)"  # short: the private dockerd's sockets live below it
PRIVATE=0
CONTAINER=""
RECEIVER_PID=""
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  local rc=$?
  step "cleaning up"
  if [[ -n "$CONTAINER" ]]; then docker rm -f "$CONTAINER" >/dev/null 2>&1 || true; fi
  if [[ -n "$RECEIVER_PID" ]]; then kill "$RECEIVER_PID" 2>/dev/null && wait "$RECEIVER_PID" 2>/dev/null || true; fi
  make --no-print-directory uninstall PLUGIN_NAME="$NAME" FORCE=1 >/dev/null 2>&1 || true
  if ((PRIVATE)); then python3 -m tests.support dockerd-down "$WORK/dockerd" --purge || true; fi
  rm -rf "$WORK"
  if ((rc == 0)); then echo "demo OK"; else echo "demo FAILED (exit $rc)" >&2; fi
}
trap cleanup EXIT

# poll CMD until it succeeds, at most $1 tenths of a second (the plugin works asynchronously)
until_ok() {
  local n=$1
  shift
  for ((i = 0; i < n; i++)); do "$@" && return 0; sleep 0.1; done
  echo "timed out waiting for: $*" >&2
  return 1
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

step "Debian packages (scripts/install-deps.sh)"
bash scripts/install-deps.sh
echo "docker.io, busybox-static, mmdebstrap, python3-venv, prometheus, docker-compose: present"

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

METRICS_PORT="$(free_port)"
METRICS="http://127.0.0.1:$METRICS_PORT/metrics"
step "metrics on: a managed plugin's settings change only while it is disabled"
set -x
docker plugin disable "$NAME"
docker plugin set "$NAME" METRICS_ADDR="127.0.0.1:$METRICS_PORT"
docker plugin enable --timeout 0 "$NAME"
{ set +x; } 2>/dev/null
until_ok 100 curl -sf -o /dev/null "$METRICS"
echo "serving $METRICS (host network: the plugin's loopback is the host's)"

step "the built-in forward receiver (python -m driver.receiver), as the aggregator"
make --no-print-directory venv
.venv/bin/python -m driver.receiver --listen tcp://127.0.0.1:0 --output "$WORK/records.jsonl" \
  2>"$WORK/receiver.err" &
RECEIVER_PID=$!
until_ok 100 grep -qs "listening on" "$WORK/receiver.err"
RECEIVER="$(grep -o 'listening on [^ ]*' "$WORK/receiver.err" | cut -d' ' -f3)"
echo "receiver pid $RECEIVER_PID listening on $RECEIVER (records go to $WORK/records.jsonl)"

step "a container that logs through $NAME, forwarding to the receiver"
CONTAINER="lbdemo-$$"
set -x
docker run --name "$CONTAINER" --network none --log-driver "$NAME" --log-opt fluentd-address="$RECEIVER" \
  bb:latest sh -c 'for i in 1 2 3; do echo "hello from logbridge, line $i"; done; echo "a line on stderr" >&2'
{ set +x; } 2>/dev/null
CID="$(docker inspect -f '{{.Id}}' "$CONTAINER")"
LOG="$WORK/logs/$CID/$CID-json.log"

step "its json.log: <log root>/<container id>/<container id>-json.log"
lines_in() { [[ -f $1 && $(wc -l <"$1") -ge $2 ]]; }
until_ok 100 lines_in "$LOG" 4
echo "$LOG"
cat "$LOG"

step "docker logs $CONTAINER"
docker logs "$CONTAINER"

step "what the receiver got (Fluent forward, acknowledged)"
until_ok 100 lines_in "$WORK/records.jsonl" 4
cat "$WORK/records.jsonl"

# figures settle once the container's pipeline has finished: json.log written, every record acknowledged
metric() { curl -sf "$METRICS" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { print s + 0 }'; }
settled() {
  [[ $(metric logbridge_containers_active) == 0 && $(metric logbridge_lines_written_total) -ge 4 &&
    $(metric logbridge_sink_lines_acked_total) -ge 4 ]]
}
until_ok 300 settled

step "the status view: python3 -m driver status --state-dir $WORK/state (make status PLUGIN_STATE_DIR=...)"
python3 -m driver status --state-dir "$WORK/state"

step "the metrics: every line accounted for ($METRICS)"
curl -sf "$METRICS" | grep -E '^logbridge_(lines_(received|written|dropped)|sink_lines_(acked|dropped))_total'
received=$(metric logbridge_lines_received_total)
written=$(metric logbridge_lines_written_total)
dropped=$(metric logbridge_lines_dropped_total)
acked=$(metric logbridge_sink_lines_acked_total)
sink_dropped=$(metric logbridge_sink_lines_dropped_total)
echo "json.log: received $received = written $written + dropped $dropped"
echo "forward:  received $received = acked $acked + dropped $sink_dropped"
((received == written + dropped && received == acked + sink_dropped && received == 4)) ||
  { echo "the figures do not add up" >&2; exit 1; }
