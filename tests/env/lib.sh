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
KUBECONFIG_ADMIN=$ENV_DIR/kubeconfig
PUSHLOG=$ENV_DIR/pushlog
COMPONENTS=(etcd kube-apiserver kube-controller-manager soft)

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
EOF
  fi
  # shellcheck source=/dev/null
  source "$ENV_DIR/ports.env"
}

ports_free() {
  local p
  for p in $(seq "$1" $(($1 + 5))); do
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
  echo $! >"$RUN/$name.pid"
}

# kill_proc NAME: a crash, not a shutdown: SIGKILL to its whole process group
# (started with setsid), so requests in flight get no answer.
kill_proc() {
  local name=$1 pid
  if alive "$name"; then
    pid=$(pid_of "$name")
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
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

# git_ssh KEY CMD...: a soft-serve SSH command as the owner of KEY (soft-serve ignores the user name).
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

ensure_etcd() { ensure etcd 30 start_etcd etcd_healthy; }
ensure_apiserver() { ensure kube-apiserver 90 start_apiserver apiserver_healthy; }
ensure_kcm() { ensure kube-controller-manager 60 start_kcm kcm_healthy; }
ensure_soft() { install_soft_hooks; ensure soft 30 start_soft soft_healthy; }
