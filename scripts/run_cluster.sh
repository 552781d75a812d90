#!/usr/bin/env bash
# `make run-cluster`: nginx on HOST:PORT balancing WEB_PROCESSES web processes (default: one
# per core) on 127.0.0.1, ports WEB_BASE_PORT (default PORT+1) and up, plus the Procfile's
# Celery worker and beat, all under honcho; Ctrl-C stops everything. The services come from
# the environment, as for `make run-stack`. docs/operations.md, "Topology", explains it.
#
# The pieces are subcommands, so the cluster tests start the same processes on their hosts:
#   run_cluster.sh                                  checks, migrations, then the whole cluster
#   run_cluster.sh web HOST:PORT                    one web process behind the balancer
#   run_cluster.sh nginx-conf DIR LISTEN UPSTREAM…  render DIR/nginx.conf (UPSTREAM: host:port)
#   run_cluster.sh nginx DIR                        nginx in the foreground on DIR/nginx.conf
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV_BIN:-.venv/bin}

find_nginx() {
  local candidate
  for candidate in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx /sbin/nginx; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

render_nginx_conf() {  # DIR LISTEN UPSTREAM...
  local dir=$1 listen=$2
  shift 2
  [ $# -gt 0 ] || { echo "nginx-conf: name at least one upstream host:port" >&2; exit 2; }
  mkdir -p "$dir/tmp"
  dir=$(cd "$dir" && pwd)
  local servers="" upstream
  for upstream in "$@"; do
    # After a failed attempt a web process is left out for 2 s, then tried again.
    servers+="        server $upstream max_fails=1 fail_timeout=2s;"$'\n'
  done
  local max_mb=0 mb
  for mb in "${MEDIA_MAX_IMAGE_MB:-16}" "${MEDIA_MAX_VIDEO_MB:-100}" "${MEDIA_MAX_AUDIO_MB:-32}" \
    "${MEDIA_MAX_FILE_MB:-100}"; do
    ((mb > max_mb)) && max_mb=$mb
  done
  local user=""
  # nginx started by root hands its workers to "nobody", who could not use the temporary
  # directories in DIR; this balancer runs as whoever runs the web processes.
  [ "$(id -u)" -eq 0 ] && user="user root;"
  local conf
  conf=$(<scripts/nginx.conf.template)
  conf=${conf//@DIR@/"$dir"}
  conf=${conf//@LISTEN@/"$listen"}
  conf=${conf//@SERVERS@/"${servers%$'\n'}"}
  conf=${conf//@MAX_BODY@/"$((max_mb + 1))m"}
  conf=${conf//@USER@/"$user"}
  printf '%s\n' "$conf" >"$dir/nginx.conf"
}

run_nginx() {  # DIR
  local dir nginx
  dir=$(cd "$1" && pwd)
  nginx=$(find_nginx) || { echo "nginx is not installed: bash scripts/ensure_packages.sh nginx" >&2; exit 1; }
  "$nginx" -q -t -p "$dir" -c "$dir/nginx.conf" -e stderr
  exec "$nginx" -p "$dir" -c "$dir/nginx.conf" -e stderr
}

run_web() {  # HOST:PORT
  # nginx is the one proxy in front, appending the client's address to X-Forwarded-For.
  HOST=${1%:*} PORT=${1##*:} TRUSTED_PROXY_COUNT=${TRUSTED_PROXY_COUNT:-1} exec bash scripts/serve.sh
}

run_cluster() {
  local port=${PORT:-8000} host=${HOST:-127.0.0.1}
  local processes=${WEB_PROCESSES:-$(nproc)}
  local base=${WEB_BASE_PORT:-$((port + 1))}
  local dir=var/cluster
  if [ -z "${DATABASE_URL:-}" ] || [ -z "${REDIS_URL:-}${REDIS_SHARD_URLS:-}" ]; then
    echo "run-cluster needs DATABASE_URL and REDIS_URL (or REDIS_SHARD_URLS): several web" >&2
    echo "processes share PostgreSQL and deliver to each other through Redis." >&2
    exit 2
  fi
  find_nginx >/dev/null || bash scripts/ensure_packages.sh nginx
  "$BIN/python" manage.py check_services
  "$BIN/python" manage.py migrate --noinput
  "$BIN/python" manage.py collectstatic --noinput --verbosity 0

  local upstreams=() i
  for ((i = 0; i < processes; i++)); do upstreams+=("127.0.0.1:$((base + i))"); done
  render_nginx_conf "$dir" "$host:$port" "${upstreams[@]}"
  {
    echo "nginx: bash scripts/run_cluster.sh nginx $dir"
    for ((i = 0; i < processes; i++)); do
      echo "web$((i + 1)): bash scripts/run_cluster.sh web ${upstreams[$i]}"
    done
    grep -E '^(worker|beat):' Procfile
  } >"$dir/Procfile"
  echo "Chat cluster: nginx on http://$host:$port/ in front of ${upstreams[*]}"
  exec "$BIN/honcho" -f "$dir/Procfile" -d . start
}

case "${1:-}" in
  "") run_cluster ;;
  web) run_web "${2:?web HOST:PORT}" ;;
  nginx-conf) shift; render_nginx_conf "$@" ;;
  nginx) run_nginx "${2:?nginx DIR}" ;;
  *) echo "usage: run_cluster.sh [web HOST:PORT | nginx-conf DIR LISTEN UPSTREAM... | nginx DIR]" >&2; exit 2 ;;
esac
