#!/usr/bin/env bash
# A real SLURM cluster of several nodes on this one host, for the tests marked `slurm`.
#
#   tests/cluster/slurm_cluster.sh up   STATE_DIR [NODES]   # install if needed, start, wait until idle
#   tests/cluster/slurm_cluster.sh down STATE_DIR           # stop every daemon it started, by PID
#   tests/cluster/slurm_cluster.sh tag  STATE_DIR           # the tag of its /etc/hosts lines
#
# Debian 12's own packages: munge, slurmctld, slurmd (one per node: Debian builds with
# MULTIPLE_SLURMD, so `slurmd -N nI` runs as node nI), slurm-client, and slurmdbd with MariaDB for
# accounting (without it sacct fails, and a finished job's state is forgotten after MinJobAge).
# No systemd, no containers. Everything but munged and the /etc/hosts lines lives in STATE_DIR;
# clients find the cluster through SLURM_CONF=STATE_DIR/etc/slurm.conf (written to STATE_DIR/env).
#
# Choices that matter on one small host:
#   proctrack/linuxproc, task/none    no cgroups needed; signals still reach every process of a step
#   batch_sched_delay=0, short SchedulerTimeSlice/intervals   jobs start at once, not seconds later
#   EnforcePartLimits=ALL             an impossible job is refused at submission, not left pending
#   SlurmdParameters=config_overrides nodes may declare more CPUs than the host has
#   Node nI at 127.0.1.I, named in /etc/hosts, so torchrun's rendezvous resolves node names
set -euo pipefail

cmd=${1:?usage: slurm_cluster.sh up|down STATE_DIR [NODES]}
state=$(realpath -m "${2:?usage: slurm_cluster.sh up|down STATE_DIR [NODES]}")
nodes=${3:-2}
base_port=${LADDER_SLURM_PORT:-16817}   # slurmctld; slurmdbd +1, MariaDB +2, slurmd nI at +10+I
cpus_per_node=2
# Tagged per state directory, so `down` removes this cluster's lines and leaves another's alone.
hosts_tag="# ladder-test-slurm $(printf '%s' "$state" | sha256sum | cut -c1-16)"

log() { echo "slurm_cluster: $*" >&2; }

install_packages() {
  local missing=()
  for bin in munged slurmctld slurmd sbatch slurmdbd mariadbd; do
    command -v "$bin" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing ${missing[*]}; installing Debian's slurm packages needs root"; exit 1
  fi
  log "installing munge, slurmctld, slurmd, slurm-client, slurmdbd, mariadb-server"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    munge slurmctld slurmd slurm-client slurmdbd mariadb-server >"$state/log/apt.log" 2>&1 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$state/log/apt.log" 2>&1 &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
           munge slurmctld slurmd slurm-client slurmdbd mariadb-server >>"$state/log/apt.log" 2>&1; } \
    || { log "apt-get failed; see $state/log/apt.log"; tail -20 "$state/log/apt.log" >&2; exit 1; }
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "timed out waiting for $what"; return 1; fi
    sleep 0.2
  done
}

start_munge() {
  if [ -S /run/munge/munge.socket.2 ] && munge -n </dev/null >/dev/null 2>&1; then return 0; fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  [ -f /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
  runuser -u munge -- /usr/sbin/munged --pid-file="/run/munge/munged.pid"
  cp /run/munge/munged.pid "$state/pids/munged"
  wait_for 10 munged munge -n
}

start_mariadb() {
  local db=$state/mariadb
  mkdir -p "$db"
  # As root: the state directory may sit where the mysql user cannot reach (pytest's 0700 tmp).
  mariadb-install-db --user=root --datadir="$db/data" --auth-root-authentication-method=socket \
    --skip-test-db >"$state/log/mariadb-install.log" 2>&1
  /usr/sbin/mariadbd --user=root --datadir="$db/data" --socket="$db/mysqld.sock" \
    --pid-file="$db/mysqld.pid" --port=$((base_port + 2)) --bind-address=127.0.0.1 \
    --skip-log-bin --innodb-buffer-pool-size=32M --log-error="$db/mariadb.log" --innodb-lock-wait-timeout=900 &
  echo $! >"$state/pids/mariadbd"
  wait_for 30 mariadb mariadb --socket="$db/mysqld.sock" -e "SELECT 1"
  mariadb --socket="$db/mysqld.sock" -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'%' IDENTIFIED BY 'ladder-test';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'%';"
}

write_configs() {
  local node_lines="" names=""
  for i in $(seq 1 "$nodes"); do
    node_lines+="NodeName=n$i NodeAddr=127.0.1.$i NodeHostname=$(hostname) Port=$((base_port + 10 + i)) CPUs=$cpus_per_node RealMemory=4000 State=UNKNOWN"$'\n'
    names+="${names:+,}n$i"
  done
  cat >"$state/etc/slurm.conf" <<EOF
ClusterName=ladder-test
SlurmctldHost=$(hostname)(127.0.0.1)
SlurmctldPort=$base_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again after cred_expire seconds (default 120)
AuthInfo=cred_expire=5
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool/%n
SlurmctldPidFile=$state/pids/slurmctld.pid
SlurmdPidFile=$state/pids/slurmd-%n.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
KillWait=30
MinJobAge=300
InactiveLimit=0
MessageTimeout=10
SlurmdTimeout=30
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((base_port + 1))
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$node_lines
PartitionName=debug Nodes=$names Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  cat >"$state/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$(hostname)
DbdAddr=127.0.0.1
DbdPort=$((base_port + 1))
SlurmUser=root
PidFile=$state/pids/slurmdbd.pid
LogFile=$state/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((base_port + 2))
StorageUser=slurm
StoragePass=ladder-test
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$state/etc/slurmdbd.conf"
  echo "export SLURM_CONF=$state/etc/slurm.conf" >"$state/env"
}

add_hosts() {
  remove_hosts
  for i in $(seq 1 "$nodes"); do echo "127.0.1.$i n$i $hosts_tag" >>/etc/hosts; done
}

remove_hosts() {
  if grep -qF -- "$hosts_tag" /etc/hosts 2>/dev/null; then
    # /etc/hosts may be a bind mount: rewrite it in place rather than replacing the file
    local kept; kept=$(grep -vF -- "$hosts_tag" /etc/hosts)
    printf '%s\n' "$kept" >/etc/hosts
  fi
}

up() {
  mkdir -p "$state"/{etc,ctld,log,pids}
  install_packages
  PATH=$PATH:/usr/sbin
  export SLURM_CONF=$state/etc/slurm.conf
  write_configs
  add_hosts
  start_munge
  start_mariadb
  /usr/sbin/slurmdbd
  wait_for 30 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/$((base_port + 1))"
  sacctmgr -i add cluster ladder-test >/dev/null 2>&1 || true
  sacctmgr -i add account ladder Cluster=ladder-test >/dev/null 2>&1 || true
  sacctmgr -i add user root Account=ladder >/dev/null 2>&1 || true
  /usr/sbin/slurmctld -i
  for i in $(seq 1 "$nodes"); do
    mkdir -p "$state/spool/n$i"
    /usr/sbin/slurmd -N "n$i"
  done
  wait_for 60 "$nodes idle nodes" bash -c \
    "[ \"\$(sinfo -h -N -t idle -o %N | sort -u | wc -l)\" -ge $nodes ]"
  log "up: $nodes nodes; source $state/env"
}

down() {
  PATH=$PATH:/usr/sbin
  export SLURM_CONF=$state/etc/slurm.conf
  # only a running controller can cancel; without one, scancel retries for a minute in vain
  if [ -f "$state/pids/slurmctld.pid" ] && [ -f "$SLURM_CONF" ]; then
    scancel --user=root --full >/dev/null 2>&1 || true
  fi
  local pidfiles=("$state"/pids/slurmd-*.pid "$state/pids/slurmctld.pid" "$state/pids/slurmdbd.pid" \
                  "$state/pids/mariadbd" "$state/pids/munged")
  local pids=()
  for f in "${pidfiles[@]}"; do  # all at once: each daemon takes a moment to stop
    [ -f "$f" ] || continue
    pids+=("$(cat "$f")")
    rm -f "$f"
  done
  [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 50); do
    alive=0; for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  [ ${#pids[@]} -gt 0 ] && kill -KILL "${pids[@]}" 2>/dev/null || true
  remove_hosts
  log "down"
}

case $cmd in
  up) up ;;
  down) down ;;
  tag) echo "$hosts_tag" ;;
  *) echo "usage: slurm_cluster.sh up|down|tag STATE_DIR [NODES]" >&2; exit 2 ;;
esac
