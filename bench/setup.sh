#!/usr/bin/env bash
# Installs what `npm run bench` needs on a fresh Debian machine (as root), and nothing when it is
# all there: the upstream and distribution peer (docker-registry), the nginx peer (nginx-light),
# wrk for the manifest figures, and a C compiler for bench/loadgen.c. bench/run.ts runs this
# when one of them is missing; it can also be run by hand.
set -euo pipefail

need=()
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v cc >/dev/null || need+=(gcc libc6-dev)
# setpriv (kills children if the benchmark dies) and curl (the load generator check) are optional.
command -v curl >/dev/null || need+=(curl)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "bench/setup.sh: missing ${need[*]}; run as root or: apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "bench/setup.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts nginx as a service on install; the benchmark runs its own instances only.
if [[ " ${need[*]} " == *" nginx-light "* ]]; then
  if command -v systemctl >/dev/null; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  invoke-rc.d nginx stop >/dev/null 2>&1 || true
fi
