#!/usr/bin/env bash
# Installs the Debian packages the tests (or the benchmarks) need, when missing.
#   scripts/install-services.sh         postgresql, redis-server, curl, chromium, prometheus (promtool)
#   scripts/install-services.sh bench   the same plus nginx and wrk
# The packaged services are left as Debian sets them up; they are never used: the tests start their own servers on temporary
# directories and free loopback ports.
set -euo pipefail

need=()
have_pg() { compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; }
have_pg || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v curl >/dev/null || need+=(curl ca-certificates)  # the README quickstart test
command -v chromium >/dev/null || need+=(chromium)  # the dashboard and docs tests (Playwright)
command -v promtool >/dev/null || need+=(prometheus)  # promtool checks /metrics and deploy/
if [[ "${1:-}" == "bench" ]]; then
    command -v nginx >/dev/null || need+=(nginx-light)
    command -v wrk >/dev/null || need+=(wrk)
fi
((${#need[@]} == 0)) && exit 0

echo "installing Debian packages: ${need[*]}" >&2
SUDO=""
[[ "$(id -u)" == 0 ]] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
