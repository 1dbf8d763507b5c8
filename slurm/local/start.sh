#!/usr/bin/env bash
# Start a throw-away single-host SLURM cluster (no systemd, no cgroups) with accounting, for
# development and tests:  bash slurm/local/start.sh DIR [NODES]   then   source DIR/env.sh
#
# Everything lives under DIR: munge key and socket, a MariaDB for slurmdbd (submitit polls job
# states with sacct, which needs accounting), slurmctld state, and NODES slurmd daemons (default
# 2) named by loopback addresses 127.0.0.1, 127.0.0.2, ... (names that resolve: torch.distributed
# looks them up). Partition "debug" holds all nodes. Stop with: bash slurm/local/stop.sh DIR
set -euo pipefail
DIR=$(mkdir -p "$1" && cd "$1" && pwd)
NODES=${2:-2}
CPUS=${OPMASK_SLURM_CPUS:-2}  # CPUs each node declares (config_overrides lets them exceed the host)
for bin in munged mungekey mariadbd mariadb-install-db slurmdbd slurmctld slurmd sinfo sacctmgr; do
  command -v "$bin" >/dev/null || { echo "start.sh: $bin not found (apt-get install slurmctld slurmd slurm-client slurmdbd munge mariadb-server)" >&2; exit 1; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mkdir -p "$DIR"/{munge-key,db,state,log,spool}
chmod 700 "$DIR/munge-key"
# munged wants every folder above its socket executable by all; DIR may sit in a private folder
# (e.g. a test's temporary directory), so the socket gets a world-accessible folder of its own.
RUN=$(mktemp -d /tmp/opmask-munge.XXXXXX); chmod 755 "$RUN"; echo "$RUN" >"$DIR/munge-run-path"
SOCK="$RUN/munge.socket"

# 1. munge
[ -f "$DIR/munge-key/munge.key" ] || mungekey -c -k "$DIR/munge-key/munge.key"
munged --key-file="$DIR/munge-key/munge.key" --socket="$SOCK" --pid-file="$DIR/munged.pid" \
  --log-file="$DIR/log/munged.log" --seed-file="$RUN/seed"

# 2. MariaDB on a free localhost port
DB_PORT=$(free_port)
mariadb-install-db --user=root --datadir="$DIR/db" --auth-root-authentication-method=normal >"$DIR/log/mariadb-install.log" 2>&1
setsid mariadbd --no-defaults --user=root --datadir="$DIR/db" --socket="$DIR/mysql.sock" \
  --pid-file="$DIR/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
  >"$DIR/log/mariadbd.log" 2>&1 < /dev/null &
for _ in $(seq 100); do [ -S "$DIR/mysql.sock" ] && break; sleep 0.1; done
mariadb -S "$DIR/mysql.sock" -u root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"

# 3. configuration
DBD_PORT=$(free_port); CTLD_PORT=$(free_port)
cat >"$DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
CONF
chmod 600 "$DIR/slurmdbd.conf"
{
cat <<CONF
ClusterName=opmask
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK,cred_expire=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$SOCK
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=bf_interval=1,sched_interval=2
JobRequeue=1
KillWait=5
OverTimeLimit=0
MinJobAge=300
MailProg=/bin/true
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.%n.log
CONF
NAMES=()
for i in $(seq "$NODES"); do
  NAME="127.0.0.$i"; NAMES+=("$NAME")
  echo "NodeName=$NAME Port=$(free_port) CPUs=$CPUS RealMemory=4000 State=UNKNOWN"
done
echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} >"$DIR/slurm.conf"
echo "export SLURM_CONF=$DIR/slurm.conf" >"$DIR/env.sh"
export SLURM_CONF="$DIR/slurm.conf"

# 4. daemons
slurmdbd
for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.1; done
sacctmgr -i add cluster opmask >/dev/null 2>&1 || true
slurmctld -c -f "$SLURM_CONF"
for i in $(seq "$NODES"); do slurmd -f "$SLURM_CONF" -N "127.0.0.$i"; done
for _ in $(seq 300); do
  states=$(sinfo -h -N -o %T 2>/dev/null | sort -u | tr '\n' ' ')
  [ "$states" = "idle " ] && { echo "SLURM cluster up in $DIR ($NODES nodes): source $DIR/env.sh"; exit 0; }
  sleep 0.1
done
echo "start.sh: nodes did not become idle (states: ${states:-none}); logs in $DIR/log" >&2
exit 1
