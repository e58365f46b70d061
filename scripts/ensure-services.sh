#!/usr/bin/env bash
# Start PostgreSQL, RabbitMQ and Redis when they are not answering on localhost.
# On a machine without them: apt-get install postgresql rabbitmq-server redis-server
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
need() { command -v "$1" >/dev/null || { echo "missing $1: apt-get install $2" >&2; exit 1; }; }
wait_for() {
  for _ in $(seq 1 60); do up "$1" && return 0; sleep 1; done
  echo "$2 did not come up on port $1" >&2; exit 1
}

if ! up 5432; then
  need pg_ctlcluster postgresql
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  wait_for 5432 PostgreSQL
fi
if ! up 5672; then
  need rabbitmq-server rabbitmq-server
  echo "starting RabbitMQ"
  rabbitmq-server -detached
  wait_for 5672 RabbitMQ
fi
if ! up 6379; then
  need redis-server redis-server
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for 6379 Redis
fi
echo "services: PostgreSQL, RabbitMQ and Redis are up"
