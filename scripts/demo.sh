#!/usr/bin/env bash
# `make demo`: xclog's main job on the local stack (which `make demo` starts first).
#
#  1. builds the `xclog` binary;
#  2. publishes a realistic workload (Order -> Inventory -> Payment flows with causedBy chains
#     and snapshots) to a fresh topic with `xclog produce`;
#  3. runs `xclog project --target postgres` until the store holds every event, then stops it
#     with SIGTERM (a clean drain);
#  4. shows what landed: events per component and causality chains (the xcomponent-ai docs'
#     queries), one instance's history, one cross-component trace, one snapshot.
# (The MongoDB target is not in the demo yet: FerretDB 1.24 takes about 40 events/s here, so it
# needs its own, smaller run and a Mongo count through the xclog CLI; see issue 6.)
#
# Settings (environment): DEMO_EVENTS (default 20000), DEMO_INSTANCES (200), DEMO_PARTITIONS (6),
# plus the stack's XCLOG_KAFKA_BROKERS, DATABASE_URL, MONGODB_URI (`scripts/stack.sh env`).
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${DEMO_EVENTS:-20000}
INSTANCES=${DEMO_INSTANCES:-200}
PARTITIONS=${DEMO_PARTITIONS:-6}
: "${XCLOG_KAFKA_BROKERS:?run through make demo, or eval \"\$(scripts/stack.sh env)\" first}"
: "${DATABASE_URL:?}"

TOPIC="xclog.demo-$(date +%Y%m%d-%H%M%S)"
PG_DB=xclog_demo
DEMO_DATABASE_URL="${DATABASE_URL%/*}/$PG_DB"
LOGS=${XCLOG_HOME:-/var/tmp/xclog}/run/demo
mkdir -p "$LOGS"

step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }

step "building xclog"
cargo build -q -p xclog-projector --bin xclog
XCLOG=target/debug/xclog

step "fresh store: PostgreSQL database $PG_DB, topic $TOPIC"
psql -q "$DATABASE_URL" -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB"

step "publishing $EVENTS events over $INSTANCES concurrent flows (seed 42)"
$XCLOG produce --topic "$TOPIC" --partitions "$PARTITIONS" --events "$EVENTS" --instances "$INSTANCES" \
    --payload-bytes 500 --seed 42

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step "projecting into PostgreSQL (logs: $LOGS/project-postgres.log)"
$XCLOG project --target postgres --topic "$TOPIC" --group "demo-pg-$TOPIC" \
    --database-url "$DEMO_DATABASE_URL" --http-addr 127.0.0.1:9187 >"$LOGS/project-postgres.log" 2>&1 &
PIDS+=($!)

wait_count() { # wait_count WHAT COMMAND... : until the command prints $EVENTS
    local what=$1 deadline=$((SECONDS + 300)) n=0
    shift
    while ((SECONDS < deadline)); do
        n=$("$@" 2>/dev/null || echo 0)
        if [[ $n == "$EVENTS" ]]; then
            echo "$what: $n of $EVENTS events stored"
            return 0
        fi
        sleep 0.5
    done
    echo "$what: only $n of $EVENTS events after 300 s; see $LOGS" >&2
    return 1
}
pg_count() { psql -tA "$DEMO_DATABASE_URL" -c "SELECT count(*) FROM fsm_events"; }
wait_count PostgreSQL pg_count

step "stopping the projector with SIGTERM (drains and commits, then exits)"
cleanup
PIDS=()

step "PostgreSQL: events per component (the xcomponent-ai docs' query)"
psql "$DEMO_DATABASE_URL" -c "SELECT component_name, COUNT(*) AS event_count FROM fsm_events GROUP BY component_name ORDER BY 1"

step "PostgreSQL: causality chains (events that caused others)"
psql "$DEMO_DATABASE_URL" -c "SELECT count(*) AS events_with_children FROM fsm_events WHERE caused IS NOT NULL AND array_length(caused, 1) > 0"

INSTANCE=$(psql -tA "$DEMO_DATABASE_URL" -c "SELECT instance_id FROM fsm_events WHERE component_name LIKE 'Order%' AND array_length(caused, 1) > 0 ORDER BY persisted_at LIMIT 1")
EVENT=$(psql -tA "$DEMO_DATABASE_URL" -c "SELECT id FROM fsm_events WHERE instance_id = '$INSTANCE' AND array_length(caused, 1) > 0 ORDER BY persisted_at LIMIT 1")

step "xclog events --instance $INSTANCE"
$XCLOG events --instance "$INSTANCE" --database-url "$DEMO_DATABASE_URL"

step "xclog trace $EVENT (across components)"
$XCLOG trace "$EVENT" --database-url "$DEMO_DATABASE_URL"

step "xclog snapshot $INSTANCE"
$XCLOG snapshot "$INSTANCE" --database-url "$DEMO_DATABASE_URL"

step "done: topic $TOPIC, PostgreSQL database $PG_DB"
