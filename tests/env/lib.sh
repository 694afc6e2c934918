# shellcheck shell=bash
# shellcheck disable=SC2034  # variables used by the scripts that source this file
# Shared by tests/env/{up,down,component,new-repo}: paths, process and health helpers,
# and one start_* function per component. Everything listens on 127.0.0.1 only.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ENV_DIR=$ROOT/target/env
BIN=$ENV_DIR/bin
PKI=$ENV_DIR/pki
RUN=$ENV_DIR/run
LOGS=$ENV_DIR/logs
GITD=$ENV_DIR/git          # ssh keys, known_hosts and tokens for the git server
SOFT_DATA=$ENV_DIR/soft    # soft-serve's data dir (repos, sqlite db)
SSHD_DIR=$ENV_DIR/sshd     # sshd's config, authorized_keys, git-serve and hooks
SSHD_REPOS=$ENV_DIR/sshd-repos  # sshd's bare repositories, owned by GIT_USER
GIT_USER=git               # sshd's login user, made by tests/env/install
KUBECONFIG_ADMIN=$ENV_DIR/kubeconfig
PUSHLOG=$ENV_DIR/pushlog
COMPONENTS=(etcd kube-apiserver kube-controller-manager soft sshd)

die() { echo "error: $*" >&2; exit 1; }
say() { echo "env: $*" >&2; }
# write_atomic FILE: stdin becomes FILE atomically (tests may read it while up runs again).
write_atomic() { cat >"$1.new.$$" && chmod "${2:-0644}" "$1.new.$$" && mv -f "$1.new.$$" "$1"; }

# Serializes up/down/component (tests may call up concurrently). Children must not
# inherit fd 9, or a daemon would hold the lock forever (start_proc closes it).
lock_env() {
  mkdir -p "$ENV_DIR"
  exec 9>"$ENV_DIR/.lock"
  flock 9
}

# ---------------------------------------------------------------- ports
# Picked once, free at that time, then kept in ports.env so restarts keep them.
load_ports() {
  if [[ ! -s $ENV_DIR/ports.env ]]; then
    local base
    mkdir -p "$ENV_DIR"
    for _ in $(seq 50); do
      base=$((20000 + RANDOM % 1200 * 10))  # below the ephemeral range (32768+)
      ports_free "$base" && break
    done
    cat >"$ENV_DIR/ports.env" <<EOF
ETCD_PORT=$base
ETCD_PEER_PORT=$((base + 1))
API_PORT=$((base + 2))
KCM_PORT=$((base + 3))
SSH_PORT=$((base + 4))
HTTPS_PORT=$((base + 5))
SSHD_PORT=$((base + 6))
EOF
  fi
  unset SSHD_PORT
  # shellcheck source=/dev/null
  source "$ENV_DIR/ports.env"
  # ports.env from before sshd: add a port in the same block of ten.
  if [[ -z ${SSHD_PORT:-} ]]; then
    local p
    for p in $(seq $((ETCD_PORT + 6)) $((ETCD_PORT + 9))); do
      if ports_free "$p" 0; then
        { cat "$ENV_DIR/ports.env"; echo "SSHD_PORT=$p"; } | write_atomic "$ENV_DIR/ports.env"
        break
      fi
    done
    # shellcheck source=/dev/null
    source "$ENV_DIR/ports.env"
    [[ -n ${SSHD_PORT:-} ]] || die "no free port for sshd in $((ETCD_PORT + 6))-$((ETCD_PORT + 9))"
  fi
}

# ports_free FIRST [COUNT]: none of the COUNT+1 ports from FIRST on is listened on.
ports_free() {
  local p
  for p in $(seq "$1" $(($1 + ${2:-6}))); do
    # A successful connect means something listens there.
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then return 1; fi
  done
}

# ---------------------------------------------------------------- processes
pid_of() { cat "$RUN/$1.pid" 2>/dev/null || true; }

# alive NAME: the pid file names a live process running binary NAME (guards against pid reuse).
alive() {
  local pid exe
  pid=$(pid_of "$1")
  [[ -n $pid ]] && exe=$(readlink "/proc/$pid/exe" 2>/dev/null) && [[ ${exe##*/} == "$1" ]]
}

# start_proc NAME [VAR=value...] -- ARGS...: runs $BIN/NAME detached, output to logs/NAME.log.
start_proc() {
  local name=$1; shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  mkdir -p "$RUN" "$LOGS"
  echo "--- start $(date -Is)" >>"$LOGS/$name.log"
  # setsid + no inherited stdio: survives the caller and never holds its pipes open.
  env "${envs[@]}" setsid "$BIN/$name" "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
  local pid=$! deadline=$((SECONDS + 10))
  echo "$pid" >"$RUN/$name.pid"
  # The pid is bash, then env, then setsid before it execs NAME, and alive() knows
  # only NAME: a health check that looked now could take a slow exec for a death.
  while kill -0 "$pid" 2>/dev/null && ! alive "$name" && ((SECONDS < deadline)); do sleep 0.05; done
}

# tree_stop PID: SIGSTOPs PID and every process below it, top down (so none forks
# any more), and prints their pids.
tree_stop() {
  local child
  kill -STOP "$1" 2>/dev/null || return 0
  echo "$1"
  for child in $(ps -o pid= --ppid "$1"); do tree_stop "$child"; done
}

# kill_proc NAME: a crash, not a shutdown: SIGKILL to its whole process group
# (started with setsid) and to every process below it (sshd runs each connection
# in a session of its own), so requests in flight get no answer.
kill_proc() {
  local name=$1 pid tree
  if alive "$name"; then
    pid=$(pid_of "$name")
    tree=$(tree_stop "$pid")
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $tree 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    say "killed $name ($pid)"
  fi
  rm -f "$RUN/$name.pid"
}

stop_proc() {
  local name=$1 pid deadline
  if alive "$name"; then
    pid=$(pid_of "$name")
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name ($pid) ignored SIGTERM, killing"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    say "stopped $name ($pid)"
  fi
  rm -f "$RUN/$name.pid"
}

# wait_healthy NAME SECONDS CHECK...: polls CHECK until it succeeds; on timeout or
# death of the process prints the tail of its log and fails.
wait_healthy() {
  local name=$1 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name" || ((SECONDS >= deadline)); then
      echo "error: $name is not healthy ($(alive "$name" && echo "timeout" || echo "exited")); tail of $LOGS/$name.log:" >&2
      tail -n 40 "$LOGS/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# ensure NAME SECONDS START_FN CHECK...: reuses a healthy running process, else starts one.
ensure() {
  local name=$1 secs=$2 start_fn=$3; shift 3
  if alive "$name" && "$@" >/dev/null 2>&1; then
    say "$name already running ($(pid_of "$name"))"
    return
  fi
  if alive "$name"; then
    # Running but not (yet) healthy: give it the time, then replace it once.
    if ! wait_healthy "$name" "$secs" "$@"; then
      say "$name ($(pid_of "$name")) stayed unhealthy; starting a new one"
      stop_proc "$name"
      "$start_fn"
      wait_healthy "$name" "$secs" "$@"
    fi
  else
    "$start_fn"
    wait_healthy "$name" "$secs" "$@"
  fi
  say "$name ready ($(pid_of "$name"))"
}

# ---------------------------------------------------------------- health checks
etcd_healthy() { [[ $(curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health") == *'"health":"true"'* ]]; }
apiserver_healthy() {
  curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$API_PORT/readyz"
}
kcm_healthy() { curl -sfk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz"; }
soft_healthy() {
  git_ssh "$GITD/admin" info &&
    curl -sf --max-time 2 --cacert "$PKI/git-ca.crt" "https://127.0.0.1:$HTTPS_PORT/readyz"
}

# sshd_ssh KEY [CMD...]: ssh to sshd as GIT_USER with KEY, the host key checked.
sshd_ssh() {
  local key=$1; shift
  ssh -F /dev/null -i "$key" -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=3 \
    -o UserKnownHostsFile="$GITD/known_hosts" -o StrictHostKeyChecking=yes -T \
    -p "$SSHD_PORT" "$GIT_USER@127.0.0.1" "$@"
}
# Without a command git-serve only greets: proves listener, host key, user and key.
sshd_healthy() { [[ $(sshd_ssh "$GITD/ro" </dev/null 2>&1) == *"successfully authenticated"* ]]; }

# git_ssh KEY CMD...: a soft-serve SSH command as the owner of KEY (soft-serve ignores the user name).
# shellcheck disable=SC2153 # SSH_PORT is no misspelt SSHD_PORT; both come from ports.env
git_ssh() {
  local key=$1; shift
  ssh -F /dev/null -i "$key" -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=3 \
    -o UserKnownHostsFile="$GITD/known_hosts" -o StrictHostKeyChecking=yes \
    -p "$SSH_PORT" 127.0.0.1 "$@"
}

# ---------------------------------------------------------------- components
start_etcd() {
  start_proc etcd -- --name=env --data-dir="$ENV_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="env=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync
}

start_apiserver() {
  local issuer="https://127.0.0.1:$API_PORT"
  start_proc kube-apiserver -- \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --advertise-address=127.0.0.1 --bind-address=127.0.0.1 --secure-port="$API_PORT" \
    --cert-dir="$ENV_DIR/apiserver" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer="$issuer" --api-audiences="$issuer" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true
}

start_kcm() {
  local kc=$ENV_DIR/kube-controller-manager.kubeconfig
  # --leader-elect=false: a restarted manager starts at once instead of waiting for its old lease.
  start_proc kube-controller-manager -- \
    --kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$ENV_DIR/kube-controller-manager" \
    --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key"
}

# soft-serve runs the executables in $DATA/hooks/ for every repository, after its own;
# they are read at each push, so a running server picks up new versions.
install_soft_hooks() {
  mkdir -p "$SOFT_DATA/hooks" "$GITD/repos"
  local h
  for h in pre-receive post-receive; do
    write_atomic "$SOFT_DATA/hooks/$h" 0755 <"$ROOT/tests/env/soft-hooks/$h"
  done
}

start_soft() {
  start_proc soft \
    SOFT_SERVE_DATA_PATH="$SOFT_DATA" \
    SOFT_SERVE_INITIAL_ADMIN_KEYS="$(cat "$GITD/admin.pub")" \
    SOFT_SERVE_ANON_ACCESS=no-access \
    SOFT_SERVE_SSH_LISTEN_ADDR="127.0.0.1:$SSH_PORT" \
    SOFT_SERVE_SSH_PUBLIC_URL="ssh://127.0.0.1:$SSH_PORT" \
    SOFT_SERVE_SSH_KEY_PATH="$GITD/host_ed25519" \
    SOFT_SERVE_HTTP_LISTEN_ADDR="127.0.0.1:$HTTPS_PORT" \
    SOFT_SERVE_HTTP_PUBLIC_URL="https://127.0.0.1:$HTTPS_PORT" \
    SOFT_SERVE_HTTP_TLS_KEY_PATH="$PKI/git-tls.key" \
    SOFT_SERVE_HTTP_TLS_CERT_PATH="$PKI/git-tls.crt" \
    SOFT_SERVE_GIT_ENABLED=false \
    SOFT_SERVE_STATS_ENABLED=false \
    -- serve
}

# ---------------------------------------------------------------- sshd
# OpenSSH's sshd serving git through git-shell: the reference server, as plain as a
# forge's. It runs as root and logs every key in as GIT_USER; the forced command of
# each key (git-serve rw|ro) decides what it may run. See tests/env/README.md.

sshd_config() {
  cat <<EOF
# Written by tests/env/lib.sh (install_sshd_files); sshd reads it at start and on SIGHUP.
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $GITD/host_ed25519
PidFile none
AllowUsers $GIT_USER
# Public keys only, from our file only.
AuthenticationMethods publickey
PubkeyAuthentication yes
AuthorizedKeysFile $SSHD_DIR/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
GSSAPIAuthentication no
KerberosAuthentication no
PermitRootLogin no
# PAM's session modules (pam_loginuid) fail in containers; the user is not locked.
UsePAM no
# The checkout may live below /tmp (mode 1777), and StrictModes refuses keys below a
# world-writable directory. authorized_keys is root's, rewritten at every start.
StrictModes no
DisableForwarding yes
PermitTunnel no
PermitTTY no
PermitUserRC no
PermitUserEnvironment no
# git sends GIT_PROTOCOL=version=2 this way; without it git falls back to v0.
AcceptEnv GIT_PROTOCOL
PrintMotd no
PrintLastLog no
UseDNS no
# Tests open many connections at once; the default (10:30:100) drops some.
MaxStartups 200
LoginGraceTime 20
EOF
}

# install_sshd_files: config, authorized_keys, the forced command and the hooks. Each
# start rewrites them; git-serve, the hooks and authorized_keys are read at each use.
install_sshd_files() {
  local h
  getent passwd "$GIT_USER" >/dev/null || die "no user $GIT_USER; run tests/env/install"
  # authorized_keys' command= is parsed by the user's shell: keep the path plain.
  [[ $SSHD_DIR =~ ^[A-Za-z0-9/._+-]+$ ]] || die "sshd cannot serve from $SSHD_DIR: unusual characters in the path"
  mkdir -p "$SSHD_DIR/hooks" "$SSHD_REPOS"
  write_atomic "$SSHD_DIR/git-serve" 0755 <"$ROOT/tests/env/sshd/git-serve"
  for h in pre-receive post-receive; do
    write_atomic "$SSHD_DIR/hooks/$h" 0755 <"$ROOT/tests/env/sshd/$h"
  done
  # restrict: no forwarding, pty, agent or ~/.ssh/rc; command=: the key runs git-serve
  # whatever the client asked for (that is in SSH_ORIGINAL_COMMAND).
  for h in rw ro; do
    printf 'restrict,command="%s %s" %s\n' "$SSHD_DIR/git-serve" "$h" "$(cut -d' ' -f1,2 "$GITD/$h.pub")"
  done | write_atomic "$SSHD_DIR/authorized_keys"
  if ! cmp -s "$SSHD_DIR/sshd_config" <(sshd_config); then
    sshd_config | write_atomic "$SSHD_DIR/sshd_config"
    # A running sshd re-executes itself with the new config (same pid).
    if alive sshd; then kill -HUP "$(pid_of sshd)"; fi
  fi
  # The hooks run as GIT_USER and append to the push log soft-serve (root) writes too.
  touch "$PUSHLOG"
  chgrp "$(id -g "$GIT_USER")" "$PUSHLOG"
  chmod 0664 "$PUSHLOG"
  # sshd's privilege separation directory (compiled in); /run may be a fresh tmpfs.
  mkdir -p /run/sshd
}

# -D: stay in the foreground (the pid is ours); -e: log to stderr, i.e. logs/sshd.log.
start_sshd() { start_proc sshd -- -D -e -f "$SSHD_DIR/sshd_config"; }

ensure_etcd() { ensure etcd 30 start_etcd etcd_healthy; }
ensure_apiserver() { ensure kube-apiserver 90 start_apiserver apiserver_healthy; }
ensure_kcm() { ensure kube-controller-manager 60 start_kcm kcm_healthy; }
ensure_soft() { install_soft_hooks; ensure soft 30 start_soft soft_healthy; }
ensure_sshd() { install_sshd_files; ensure sshd 30 start_sshd sshd_healthy; }
