#!/usr/bin/env bash
# `make demo`: xclog's main job on the local stack (which `make demo` starts first).
#
#  1. builds the `xclog` binary;
#  2. publishes a realistic workload (Order -> Inventory -> Payment flows with causedBy chains
#     and snapshots) to a fresh topic with `xclog produce`;
#  3. runs `xclog project --target postgres` and `xclog project --target mongo` side by side on
#     that topic, each as its own consumer group, waits with `xclog status --wait` until each
#     store holds the whole topic, then stops them with SIGTERM (a clean drain);
#  4. an xcomponent-style TypeScript runtime (ts/examples/runtime.ts) publishes order flows of
#     its own to the same topic through the @xclog/xcomponent package while the projectors run;
#  5. shows what landed, from each store: events per component and causality chains (the
#     xcomponent-ai docs' queries), one instance's history, one cross-component trace, one
#     snapshot; then `xclog verify` compares the topic and both stores.
# The default size is small (3,000 events) because FerretDB 1.24, the local MongoDB stand-in,
# stores about 50 events/s on 2 cores (docs/DESIGN.md, "FerretDB 1.24"); PostgreSQL alone
# takes 20,000 in about 10 s (DEMO_EVENTS=20000 DEMO_MONGO=0).
#
# Settings (environment): DEMO_EVENTS (default 3000), DEMO_INSTANCES (100), DEMO_PARTITIONS (6),
# DEMO_MONGO (1; 0 = PostgreSQL only), DEMO_TS_FLOWS (10 order flows from the TypeScript
# runtime), plus the stack's XCLOG_KAFKA_BROKERS, DATABASE_URL, MONGODB_URI (`scripts/stack.sh env`).
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${DEMO_EVENTS:-3000}
INSTANCES=${DEMO_INSTANCES:-100}
MONGO=${DEMO_MONGO:-1}
PARTITIONS=${DEMO_PARTITIONS:-6}
TS_FLOWS=${DEMO_TS_FLOWS:-10}
: "${XCLOG_KAFKA_BROKERS:?run through make demo, or eval \"\$(scripts/stack.sh env)\" first}"
: "${DATABASE_URL:?}"

TOPIC="xclog.demo-$(date +%Y%m%d-%H%M%S)"
PG_DB=xclog_demo
# FerretDB/MongoDB databases cannot be dropped without a shell here: one database per run, named
# like the topic.
MONGO_DB="xclog_demo_$(date +%Y%m%d_%H%M%S)"
DEMO_DATABASE_URL="${DATABASE_URL%/*}/$PG_DB"
LOGS=${XCLOG_HOME:-/var/tmp/xclog}/run/demo
mkdir -p "$LOGS"

step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }

step "building xclog and the TypeScript package"
cargo build -q -p xclog-cli --bin xclog
scripts/ts.sh build
XCLOG=target/debug/xclog

step "fresh stores: PostgreSQL database $PG_DB, MongoDB database $MONGO_DB, topic $TOPIC"
psql -q "$DATABASE_URL" -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB"

step "publishing $EVENTS events over $INSTANCES concurrent flows (seed 42)"
$XCLOG produce --topic "$TOPIC" --partitions "$PARTITIONS" --events "$EVENTS" --instances "$INSTANCES" \
    --payload-bytes 500 --seed 42

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

STORES=PostgreSQL
[[ $MONGO == 1 ]] && STORES="PostgreSQL and MongoDB"
step "projecting into $STORES (logs: $LOGS/project-*.log)"
$XCLOG project --target postgres --topic "$TOPIC" --group "demo-pg-$TOPIC" \
    --database-url "$DEMO_DATABASE_URL" --http-addr 127.0.0.1:9187 >"$LOGS/project-postgres.log" 2>&1 &
PIDS+=($!)
if [[ $MONGO == 1 ]]; then
    $XCLOG project --target mongo --topic "$TOPIC" --group "demo-mongo-$TOPIC" \
        --mongodb-database "$MONGO_DB" --http-addr 127.0.0.1:9188 >"$LOGS/project-mongo.log" 2>&1 &
    PIDS+=($!)
fi

step "a TypeScript xcomponent-style runtime publishes $TS_FLOWS order flows through @xclog/xcomponent"
DATABASE_URL=$DEMO_DATABASE_URL node ts/build/examples/runtime.js --topic "$TOPIC" --flows "$TS_FLOWS" \
    --read postgres --projection "demo-pg-$TOPIC" --json >"$LOGS/ts-runtime.json"
python3 -c 'import json,sys; s=json.load(sys.stdin); print("published %(events)d events and %(snapshots)d snapshots, each append awaited (%(eventsPerSecond)d events/s); first order %(first)s" % dict(s, first=s["orders"][0]))' <"$LOGS/ts-runtime.json"
TS_ORDER=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["orders"][0])' <"$LOGS/ts-runtime.json")

step "waiting until each store holds the whole topic: xclog status --wait"
$XCLOG status --target postgres --topic "$TOPIC" --group "demo-pg-$TOPIC" \
    --database-url "$DEMO_DATABASE_URL" --wait 300 || { echo "see $LOGS/project-postgres.log" >&2; exit 1; }
if [[ $MONGO == 1 ]]; then
    $XCLOG status --target mongo --topic "$TOPIC" --group "demo-mongo-$TOPIC" \
        --mongodb-database "$MONGO_DB" --wait 600 || { echo "see $LOGS/project-mongo.log" >&2; exit 1; }
fi

step "stopping the projectors with SIGTERM (each drains and commits, then exits)"
cleanup
PIDS=()

step "PostgreSQL: events per component (the xcomponent-ai docs' query)"
psql "$DEMO_DATABASE_URL" -c "SELECT component_name, COUNT(*) AS event_count FROM fsm_events GROUP BY component_name ORDER BY 1"

step "PostgreSQL: causality chains (events that caused others)"
psql "$DEMO_DATABASE_URL" -c "SELECT count(*) AS events_with_children FROM fsm_events WHERE caused IS NOT NULL AND array_length(caused, 1) > 0"

INSTANCE=$(psql -tA "$DEMO_DATABASE_URL" -c "SELECT instance_id FROM fsm_events WHERE component_name LIKE 'Order%' AND array_length(caused, 1) > 0 ORDER BY persisted_at LIMIT 1")
EVENT=$(psql -tA "$DEMO_DATABASE_URL" -c "SELECT id FROM fsm_events WHERE instance_id = '$INSTANCE' AND array_length(caused, 1) > 0 ORDER BY persisted_at LIMIT 1")

PG=(--target postgres --database-url "$DEMO_DATABASE_URL")
MG=(--target mongo --mongodb-database "$MONGO_DB")

step "xclog events --instance $INSTANCE"
$XCLOG events --instance "$INSTANCE" "${PG[@]}"

step "xclog trace $EVENT (across components)"
$XCLOG trace "$EVENT" "${PG[@]}"

step "xclog snapshot $INSTANCE"
$XCLOG snapshot "$INSTANCE" "${PG[@]}"

if [[ $MONGO == 1 ]]; then
    # Same questions to MongoDB: the read commands answer the same from either store. Keys are
    # sorted before comparing: PostgreSQL's jsonb does not keep a payload's key order (MongoDB
    # does), and no reader may rely on it.
    step "MongoDB ($MONGO_DB): the same three questions, compared with PostgreSQL's answers"
    sorted() { python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), sort_keys=True, indent=1))'; }
    for q in "events --instance $INSTANCE" "trace $EVENT" "snapshot $INSTANCE"; do
        # shellcheck disable=SC2086 # $q is a command line of words without spaces inside
        if diff <($XCLOG $q --json "${PG[@]}" | sorted) <($XCLOG $q --json "${MG[@]}" | sorted) >"$LOGS/diff.txt"; then
            echo "xclog $q --target mongo: same answer as PostgreSQL"
        else
            echo "xclog $q: MongoDB and PostgreSQL differ:" >&2
            cat "$LOGS/diff.txt" >&2
            exit 1
        fi
    done

    step "xclog verify: the topic, PostgreSQL and MongoDB, event by event"
    $XCLOG verify --sources topic,postgres,mongo --topic "$TOPIC" --group "demo-pg-$TOPIC" \
        --mongo-projection "demo-mongo-$TOPIC" --database-url "$DEMO_DATABASE_URL" \
        --mongodb-database "$MONGO_DB"
fi

step "the TypeScript runtime reads back: a restarted runtime restores its instances, one order's history"
DATABASE_URL=$DEMO_DATABASE_URL node ts/build/examples/runtime.js --topic "$TOPIC" --restore \
    --read postgres --projection "demo-pg-$TOPIC" --history "$TS_ORDER"
if [[ $MONGO == 1 ]]; then
    node ts/build/examples/runtime.js --topic "$TOPIC" --restore --read mongo --database "$MONGO_DB" \
        --projection "demo-mongo-$TOPIC" --history "$TS_ORDER"
fi

DONE="topic $TOPIC, PostgreSQL database $PG_DB"
[[ $MONGO == 1 ]] && DONE+=", MongoDB database $MONGO_DB"
step "done: $DONE"
