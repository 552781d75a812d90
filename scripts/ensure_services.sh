#!/usr/bin/env bash
# Check PostgreSQL, Redis and RabbitMQ on their standard loopback ports; start any that is
# down with the machine's own packages, and wait until it answers.
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # name port seconds
  local i
  for ((i = 0; i < $3 * 2; i++)); do
    up "$2" && { echo "$1: up"; return 0; }
    sleep 0.5
  done
  echo "$1: did not come up on port $2 within $3 s" >&2
  return 1
}

if ! up 5432; then
  echo "PostgreSQL: down, starting"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
fi
wait_for PostgreSQL 5432 60

if ! up 6379; then
  echo "Redis: down, starting"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis 6379 30

if ! up 5672; then
  echo "RabbitMQ: down, starting"
  rabbitmq-server -detached
fi
wait_for RabbitMQ 5672 120
