#!/usr/bin/env bash
# scripts/upgrade.sh NAME REF: upgrade the installed managed plugin NAME to REF (pushed by `make push`) while
# containers keep running, then enable it again with no request timeout.
#
#   1. docker plugin disable -f NAME   (running containers keep writing into their FIFOs, which live in the
#      plugin's propagated mount outside rootfs; the pipes hold what they write meanwhile)
#   2. docker plugin upgrade NAME REF  (replaces rootfs and config.json; the plugin id stays, but mount sources
#      set by `docker plugin set` go back to the new config's defaults: they are set again here)
#   3. the architecture check: dockerd installs a plugin built for another CPU without a word and only enable
#      fails, with the plugin half-started (moby#34043). The new rootfs's entrypoint must be an ELF binary for
#      this daemon's architecture; otherwise the plugin is left disabled and this script fails.
#   4. docker plugin enable --timeout 0 NAME   (the new process re-attaches the FIFOs from its state dir)
#
# Needs root on the docker host (the check reads <DockerRootDir>/plugins/<id>/rootfs). SKIP_ARCH_CHECK=1 skips
# step 3 (a remote daemon). DOCKER (default docker) is the client; DOCKER_HOST picks the daemon.
set -euo pipefail

DOCKER=${DOCKER:-docker}
if (($# != 2)); then
  echo "usage: $0 NAME REF   (make upgrade PLUGIN_NAME=logbridge PLUGIN_REF=registry:port/name:tag)" >&2
  exit 2
fi
name=$1 ref=$2
if ! $DOCKER plugin inspect "$name" >/dev/null 2>&1; then
  echo "upgrade: plugin $name is not installed: make install first" >&2
  exit 1
fi

# resolve PATH inside ROOT, following symlinks (absolute ones relative to ROOT)
resolve_in_root() {
  local root=$1 path=$2 target i
  for ((i = 0; i < 40; i++)); do
    [[ -L $root$path ]] || { echo "$root$path"; return; }
    target=$(readlink "$root$path")
    if [[ $target == /* ]]; then path=$target; else path=$(dirname "$path")/$target; fi
  done
  echo "upgrade: too many symlinks at $path" >&2
  return 1
}

elf_arch() { # the architecture of an ELF file, in the names `docker info` uses
  local magic machine
  magic=$(od -An -tx1 -N4 "$1" | tr -d ' \n')
  [[ $magic == 7f454c46 ]] || { echo "not-elf"; return; }
  machine=$(od -An -tu2 -j18 -N2 --endian=little "$1" | tr -d ' ')
  case $machine in
    62) echo x86_64 ;; 183) echo aarch64 ;; 40) echo armv7l ;; 3) echo i686 ;;
    21) echo ppc64le ;; 22) echo s390x ;; 243) echo riscv64 ;; *) echo "elf-machine-$machine" ;;
  esac
}

check_arch() {
  local host id root entry bin arch
  host=$($DOCKER info -f '{{.Architecture}}')
  id=$($DOCKER plugin inspect -f '{{.Id}}' "$name")
  root="$($DOCKER info -f '{{.DockerRootDir}}')/plugins/$id/rootfs"
  if [[ ! -d $root ]]; then
    echo "upgrade: cannot read $root to check the architecture (not on the docker host, or not root);" \
      "SKIP_ARCH_CHECK=1 to enable anyway" >&2
    return 1
  fi
  entry=$($DOCKER plugin inspect -f '{{index .Config.Entrypoint 0}}' "$name")
  bin=$(resolve_in_root "$root" "$entry")
  arch=$(elf_arch "$bin")
  if [[ $arch != "$host" ]]; then
    echo "upgrade: $ref runs $entry built for $arch, but this daemon is $host: leaving $name disabled" \
      "(push a plugin built for $host, then make upgrade again)" >&2
    return 1
  fi
  echo "upgrade: architecture $arch matches the daemon"
}

# `name.source=...` of every settable mount and `KEY=value` of every env entry, one per line. dockerd 20.10 keeps
# a mount source set by `docker plugin set` in .Config.Mounts (.Settings.Mounts keeps the defaults), env in
# .Settings.Env.
settings() {
  local mounts='{{range .Config.Mounts}}{{$m := .}}{{range .Settable}}{{if eq . "source"}}{{$m.Name}}.source={{$m.Source}}{{"\n"}}{{end}}{{end}}{{end}}'
  $DOCKER plugin inspect -f "$mounts"'{{range .Settings.Env}}{{.}}{{"\n"}}{{end}}' "$name" | sed '/^$/d'
}

before=$(settings)
if [[ $($DOCKER plugin inspect -f '{{.Enabled}}' "$name") == true ]]; then
  $DOCKER plugin disable -f "$name"
fi
$DOCKER plugin upgrade --grant-all-permissions --skip-remote-check "$name" "$ref"
# dockerd 20.10 replaces the config on upgrade, and mount sources set by `docker plugin set` with it: the plugin
# would come back writing to /var/log/logbridge, without its state dir and FIFO table. Set again what differs.
after=$(settings)
mapfile -t lost < <(comm -23 <(sort <<<"$before") <(sort <<<"$after"))
if ((${#lost[@]})); then
  echo "upgrade: restoring settings: ${lost[*]}"
  $DOCKER plugin set "$name" "${lost[@]}"
fi
if [[ ${SKIP_ARCH_CHECK:-0} != 1 ]]; then
  check_arch
fi
$DOCKER plugin enable --timeout 0 "$name" || {
  echo "upgrade: enable failed; the plugin's own output is in dockerd's log (level=error ... plugin=<id>)" >&2
  exit 1
}
echo "upgrade: $name now runs $ref"
