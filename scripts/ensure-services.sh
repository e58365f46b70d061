#!/usr/bin/env bash
# Start PostgreSQL, RabbitMQ and Redis when they are not answering on localhost, and RabbitMQ's
# management API (the API's /metrics reads the queues' depths from it: app/backlog_metrics.py).
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
# rabbitmq_management answers on 15672 (on every interface: its default guest user logs in from
# loopback only). Enabling it is remembered in the node's enabled_plugins file, so this runs once.
if ! up 15672; then
  need rabbitmq-plugins rabbitmq-server
  echo "enabling RabbitMQ's management plugin"
  rabbitmq-plugins -q enable rabbitmq_management >/dev/null
  wait_for 15672 "RabbitMQ's management API"
fi
if ! up 6379; then
  need redis-server redis-server
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for 6379 Redis
fi
echo "services: PostgreSQL, RabbitMQ (and its management API) and Redis are up"
