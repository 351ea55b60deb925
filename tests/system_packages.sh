#!/usr/bin/env bash
# The Debian packages the test suite drives for real, installed when missing (needs root):
#   chromium                      renders the compare report headless for a screenshot test
#   munge slurm* mariadb-server   the real SLURM cluster of the `slurm` tests (tests/cluster/)
#   postgresql                    the PostgreSQL server of the `postgres` tests (tests/cluster/postgres.py)
# Without root, nothing is installed and the tests that need them say so.
set -uo pipefail
pkgs=()
command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
for bin in munged slurmctld slurmd sbatch slurmdbd mariadbd; do
  PATH=$PATH:/usr/sbin command -v "$bin" >/dev/null 2>&1 || { pkgs+=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server); break; }
done
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || pkgs+=(postgresql)
[ ${#pkgs[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system_packages: not root, not installing ${pkgs[*]}; the tests that need them will say so" >&2
  exit 0
fi
echo "system_packages: installing ${pkgs[*]} (Debian packages, for the browser, SLURM and PostgreSQL tests)" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! apt-get install -y -q "${pkgs[@]}" >"$log" 2>&1; then
  apt-get update -q >>"$log" 2>&1
  apt-get install -y -q "${pkgs[@]}" >>"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
fi
