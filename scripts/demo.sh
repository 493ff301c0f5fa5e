#!/usr/bin/env bash
# The main job, end to end: set up, start a persistent DynamoDB Local, create and seed the
# example SocialNetwork table, `dyn upgrade head` through all five migration situations, and
# query the access patterns the migrations delivered.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

PORT=${DYN_DEMO_PORT:-8000}
export AWS_ACCESS_KEY_ID=dynlocal AWS_SECRET_ACCESS_KEY=dynlocal AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$PORT"
ROOT=$PWD
DYN="$ROOT/.venv/bin/dyn"
PY="$ROOT/.venv/bin/python"

up() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
if ! up; then
  echo "== starting DynamoDB Local on port $PORT (data kept in .demo-db/)"
  mkdir -p .demo-db
  # it writes .demo-db/server.pid itself once it runs
  nohup "$PY" -m dynamic.local start --port "$PORT" --db-path "$ROOT/.demo-db" >.demo-db/server.log 2>&1 &
  for _ in $(seq 1 100); do up && break; sleep 0.2; done
  up || { echo "DynamoDB Local did not start; see .demo-db/server.log" >&2; exit 1; }
fi

cd example_project
echo "== creating and seeding the SocialNetwork table (as it was before any migration)"
"$PY" socialnetwork.py create --reset
"$PY" socialnetwork.py seed
echo "== the revision chain (dyn history)"
"$DYN" history
echo "== dyn upgrade head"
"$DYN" upgrade head
echo "== dyn current"
"$DYN" current
echo "== the new access patterns"
"$PY" socialnetwork.py query
cat <<EOT

Done. DynamoDB Local keeps running on port $PORT with the data in .demo-db/, so you can go on:
  cd example_project && export AWS_ENDPOINT_URL_DYNAMODB=$AWS_ENDPOINT_URL_DYNAMODB AWS_ACCESS_KEY_ID=dynlocal AWS_SECRET_ACCESS_KEY=dynlocal AWS_REGION=us-east-1
  ../.venv/bin/dyn history --applied; ../.venv/bin/dyn downgrade -1; ../.venv/bin/dyn check
Stop it with: kill \$(cat .demo-db/server.pid)
EOT
