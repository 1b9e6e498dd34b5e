#!/usr/bin/env bash
# scripts/push.sh PLUGIN_DIR REF: push the managed plugin built in PLUGIN_DIR (config.json + rootfs/) to a registry
# as REF (for example localhost:5000/logbridge:1.1), for `docker plugin install` or `make upgrade`.
#
# `docker plugin push` pushes an installed plugin by its name, so the plugin is created under the name REF,
# pushed, and removed again (an installed logbridge is not touched). DOCKER (default docker) is the client;
# DOCKER_HOST picks the daemon as usual.
set -euo pipefail

DOCKER=${DOCKER:-docker}
if (($# != 2)); then
  echo "usage: $0 PLUGIN_DIR REF   (make push PLUGIN_REF=registry:port/name:tag)" >&2
  exit 2
fi
dir=$1 ref=$2
if [[ ! -f $dir/config.json || ! -d $dir/rootfs ]]; then
  echo "push: no $dir/config.json or $dir/rootfs: run make plugin first" >&2
  exit 1
fi
if $DOCKER plugin inspect "$ref" >/dev/null 2>&1; then
  $DOCKER plugin rm -f "$ref" >/dev/null
fi
# dockerd refuses to create a plugin whose rootfs layer is byte-identical to an installed one's
echo "$ref" >"$dir/rootfs/.docker-plugin-name"
$DOCKER plugin create "$ref" "$dir" >/dev/null
trap '$DOCKER plugin rm -f "$ref" >/dev/null 2>&1 || true' EXIT
$DOCKER plugin push "$ref"
echo "push: $ref ($(du -sh "$dir/rootfs" | cut -f1) rootfs)"
