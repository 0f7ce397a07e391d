#!/usr/bin/env bash
# `make bench`: xclog next to its references, in one run, on the local stack (docs/BENCHMARKS.md).
#
#   scripts/bench.sh [--quick] [--events N] [--mongo-events N] [--runs R] [--only LIST]
#                    [--profile release|dev] [--results FILE] [--no-doc] [--keep]
#
#   --quick          100,000 events instead of 1,000,000
#   --events N       events in the workload (snapshots come in addition)
#   --mongo-events N events in the MongoDB sides' workload (default: the same as --events on a
#                    MongoDB; at most 3,000 on FerretDB, which scans a collection for every
#                    update statement: a million events would take hours there)
#   --runs R         measurements per side (default 3; the table shows the median and the spread)
#   --only LIST      comma-separated subset of: producer,pg,mongo (default: all)
#   --profile P      cargo profile of the measured binaries (default release; the harness test
#                    uses dev to share the test build: its figures are not benchmarks)
#   --results FILE   also keep the raw measurements (one JSON object per line) in FILE
#   --no-doc         print the table but leave docs/BENCHMARKS.md alone
#   --keep           keep the topics and databases (default: dropped at the end)
#   (environment) BENCH_NO_BUILD=1 uses the binaries already built; BENCH_PARTITIONS (3),
#   BENCH_PEER_TASKS (1), BENCH_JDBC_BATCH (5000), BENCH_MAX_POLL_RECORDS (5000),
#   BENCH_DELAY_SECONDS (20: seconds of publishing per delay level; 0 skips the delay)
#
# What it does, once per invocation:
#  1. builds `xclog` and `xclog-bench`, resolves the Connect sinks' drivers with Maven
#     (scripts/connect/pom.xml) and compiles the Connect sinks (bench/connect/) into
#     $XCLOG_HOME/cache/connect-plugins/xclog-bench-sinks;
#  2. publishes the workload once with `xclog produce --seed 42` (500-byte payloads); when the
#     MongoDB sides run on fewer events (FerretDB), their own workload too, the same way;
#  3. `xclog-bench prepare` republishes its events for the peers (JSON-with-schema; JSON documents)
#     and writes the documents to a file for the Mongo limit;
#  4. per run, each side into fresh stores: our projector, the limit (COPY / unordered insertMany),
#     the peer (a sink on Kafka Connect standalone); every side must write exactly the events
#     of its workload, or the run fails (a MongoDB side that cannot drain it in time is
#     recorded as not measured, with the reason); for each store also `xclog rebuild`, and
#     in run 1 the end-to-end delay (`xclog-bench delay`: publish acknowledged -> row visible)
#     of ours and of the peer at 20/50/80% of the max rate each reached in that run, on the
#     store they just wrote (PostgreSQL and MongoDB), with fresh events on topics of their own;
#  5. the producer against kafka-producer-perf-test (the producer's own bench, called as is):
#     appends awaited one by one (appends/s, p50 and p99 of one append), fire-and-forget and
#     append_all, at the producer's default linger and at 5 ms, each as a ratio to the Java
#     tool run in the same invocation;
#  6. prints the table and rewrites the harness section of docs/BENCHMARKS.md.
#
# Needs the stack's XCLOG_KAFKA_BROKERS, DATABASE_URL, MONGODB_URI (`make bench` sets them),
# java 17+, mvn, psql, python3. Everything talks to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

EVENTS=1000000
MONGO_EVENTS=""
# The MongoDB sides' workload on FerretDB 1.24 (docs/BENCHMARKS.md, "MongoDB on FerretDB").
FERRETDB_EVENTS=3000
RUNS=3
ONLY=producer,pg,mongo
PROFILE=release
RESULTS=""
WRITE_DOC=1
KEEP=0
QUICK=0
ARGS_TEXT="$*"
while (($#)); do
    case $1 in
        --quick) EVENTS=100000 QUICK=1 ;;
        --events) EVENTS=${2:?--events needs a number}; shift ;;
        --mongo-events) MONGO_EVENTS=${2:?--mongo-events needs a number}; shift ;;
        --runs) RUNS=${2:?--runs needs a number}; shift ;;
        --only) ONLY=${2:?--only needs a list}; shift ;;
        --profile) PROFILE=${2:?--profile needs release or dev}; shift ;;
        --results) RESULTS=${2:?--results needs a file}; shift ;;
        --no-doc) WRITE_DOC=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { print }' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $EVENTS =~ ^[0-9]+$ && $EVENTS -gt 0 ]] || { echo "bench.sh: --events must be a positive integer, got $EVENTS" >&2; exit 2; }
[[ -z $MONGO_EVENTS || ($MONGO_EVENTS =~ ^[0-9]+$ && $MONGO_EVENTS -gt 0) ]] || { echo "bench.sh: --mongo-events must be a positive integer, got $MONGO_EVENTS" >&2; exit 2; }
[[ $RUNS =~ ^[0-9]+$ && $RUNS -gt 0 ]] || { echo "bench.sh: --runs must be a positive integer, got $RUNS" >&2; exit 2; }
case $PROFILE in release|dev) ;; *) echo "bench.sh: --profile must be release or dev" >&2; exit 2 ;; esac
want() { [[ ",$ONLY," == *",$1,"* ]]; }
REQUESTED_EVENTS=$EVENTS

: "${XCLOG_KAFKA_BROKERS:?run through make bench, or eval \"\$(scripts/stack.sh env)\" first}"
: "${DATABASE_URL:?}" "${MONGODB_URI:?}"
XCLOG_HOME=${XCLOG_HOME:-/var/tmp/xclog}
export RUST_BACKTRACE=0
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)
KAFKA_LIBS=${XCLOG_KAFKA_LIBS:-$XCLOG_HOME/cache/kafka-$KAFKA_VERSION/libs}
PLUGIN_DIR=$XCLOG_HOME/cache/connect-plugins/xclog-bench-sinks
PARTITIONS=${BENCH_PARTITIONS:-3}
PEER_TASKS=${BENCH_PEER_TASKS:-1}
JDBC_BATCH=${BENCH_JDBC_BATCH:-5000}
POLL_RECORDS=${BENCH_MAX_POLL_RECORDS:-5000}
DELAY_SECONDS=${BENCH_DELAY_SECONDS:-20}
[[ $DELAY_SECONDS =~ ^[0-9]+$ ]] || { echo "bench.sh: BENCH_DELAY_SECONDS must be a whole number of seconds, got $DELAY_SECONDS" >&2; exit 2; }
DELAY_PCTS="20 50 80"
ID=$(date +%H%M%S)$$
WORK=$XCLOG_HOME/run/bench/$ID
mkdir -p "$WORK"
RAW=$WORK/results.jsonl
: >"$RAW"
PG_BASE=${DATABASE_URL%/*}
# How often a side's count is polled, and how long it may take, for a workload of N events.
poll_ms_for() { echo $(($1 >= 500000 ? 250 : 100)); }
timeout_s_for() { echo $((120 + $1 / 250)); }

say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[bench] %s\033[0m\n' "$*" >&2; exit 1; }
jget() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
psql_admin() { psql -q -X -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }
psql_db() { local db=$1; shift; psql -q -X -v ON_ERROR_STOP=1 "$PG_BASE/$db" "$@"; }
record() { echo "$1" >>"$RAW"; }

PIDS=()
PG_DBS=()
MONGO_DBS=()
TOPICS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if ((KEEP == 0)); then
        for db in "${PG_DBS[@]}"; do psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true; done
        for db in "${MONGO_DBS[@]}"; do "$BENCH" mongo-drop --db "$db" >/dev/null 2>&1 || true; done
        ((${#TOPICS[@]})) && "$BENCH" delete-topics "${TOPICS[@]}" >/dev/null 2>&1 || true
        rm -f "$WORK"/*.docs.jsonl "$WORK"/*.copy
    fi
}
trap cleanup EXIT

# stop PID: SIGTERM (the clean drain), then wait for it (deadline 60 s, then SIGKILL).
stop() {
    local pid=$1 deadline=$((SECONDS + 60))
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then kill -KILL "$pid" 2>/dev/null || true; break; fi
        sleep 0.2
    done
    wait "$pid" 2>/dev/null || true
}

fresh_pg() { # fresh_pg DB [migrate]: a fresh database, with the projector's migrations if asked
    psql_admin -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
    PG_DBS+=("$1")
    if [[ ${2:-} == migrate ]]; then
        for f in migrations/*.sql; do psql_db "$1" -f "$f" >/dev/null; done
    fi
}

# ---------------------------------------------------------------- 1. build and resolve
if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    say "building xclog and xclog-bench (profile $PROFILE)"
    # (--bin names both: a --bin filter applies to every -p package)
    cargo build -q --profile "$PROFILE" -p xclog-cli -p xclog-bench --bin xclog --bin xclog-bench
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN_DIR=$TARGET_DIR/$([[ $PROFILE == dev ]] && echo debug || echo release)
XCLOG=$BIN_DIR/xclog
BENCH=${XCLOG_BENCH_BIN:-$BIN_DIR/xclog-bench}
# Our projector's batch defaults (the delay depends on them; the report states them).
read -r OURS_BATCH_RECORDS OURS_BATCH_LATENCY_MS OURS_BATCH_LINGER_MS OURS_WRITERS < <("$XCLOG" project --help | python3 -c '
import re,sys
t=sys.stdin.read()
d=lambda o: re.search(r"--%s <[A-Z_]+>\s.*?\[default: (\d+)\]" % o, t, re.S).group(1)
print(d("batch-max-records"), d("batch-max-latency-ms"), d("batch-linger-ms"), d("writers"))') \
    || die "could not read the defaults of --batch-max-records, --batch-max-latency-ms, --batch-linger-ms and --writers from \`$XCLOG project --help\`"

if want pg || want mongo; then
    [[ -f $KAFKA_LIBS/connect-runtime-$KAFKA_VERSION.jar ]] || die "no Kafka Connect runtime in $KAFKA_LIBS (run scripts/stack.sh up)"
    if [[ ! -f $PLUGIN_DIR/postgresql.ok ]]; then
        say "resolving the Connect sinks' drivers with Maven (scripts/connect/pom.xml)"
        (cd scripts/connect && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$PLUGIN_DIR") >&2 || die "mvn could not resolve scripts/connect/pom.xml"
        touch "$PLUGIN_DIR/postgresql.ok"
    fi
    SINK_JAR=$PLUGIN_DIR/xclog-bench-sinks.jar
    if [[ ! -f $SINK_JAR ]] || [[ -n $(find bench/connect/src -newer "$SINK_JAR" -name '*.java') ]]; then
        say "compiling the Connect sinks (bench/connect/)"
        rm -rf "$WORK/classes" && mkdir -p "$WORK/classes"
        javac -nowarn -d "$WORK/classes" -cp "$KAFKA_LIBS/*:$PLUGIN_DIR/*" $(find bench/connect/src -name '*.java')
        jar cf "$SINK_JAR" -C "$WORK/classes" .
    fi
fi

# The MongoDB sides' workload: the same size as the PostgreSQL one unless the server is FerretDB.
MONGO_SERVER=""
if want mongo; then
    SERVER_JSON=$("$BENCH" mongo-server 2>"$WORK/mongo-server.err") \
        || die "no MongoDB answers at MONGODB_URI: $(tail -2 "$WORK/mongo-server.err")"
    MONGO_SERVER=$(jget "$SERVER_JSON" server)
    MONGO_NAME=$([[ $MONGO_SERVER == ferretdb ]] && echo "MongoDB (FerretDB)" || echo MongoDB)
    if [[ -z $MONGO_EVENTS ]]; then
        MONGO_EVENTS=$EVENTS
        if [[ $MONGO_SERVER == ferretdb ]] && ((EVENTS > FERRETDB_EVENTS)); then
            MONGO_EVENTS=$FERRETDB_EVENTS
            say "the MongoDB URI is a FerretDB: the MongoDB sides run on $MONGO_EVENTS events (--mongo-events sets it)"
        fi
    fi
    # Without the PostgreSQL sides, one workload serves all.
    want pg || EVENTS=$MONGO_EVENTS
fi
POLL_MS=$(poll_ms_for "$EVENTS")
TIMEOUT_S=$(timeout_s_for "$EVENTS")

# ---------------------------------------------------------------- 2. the workload, once
# workload TOPIC EVENTS [PREPARE_ARGS...]: publishes a workload to TOPIC with `xclog produce`
# (seed 42, 500-byte payloads) and republishes it for the peers with `xclog-bench prepare`
# PREPARE_ARGS; sets W_CMD (the produce command, for the report), W_EVENTS and W_SNAPSHOTS.
workload() {
    local topic=$1 events=$2 prep produced
    shift 2
    TOPICS+=("$topic" "$topic.dlq")
    say "publishing $events events to $topic ($PARTITIONS partitions, seed 42, 500-byte payloads)"
    local -a args=(--topic "$topic" --partitions "$PARTITIONS" --events "$events" --instances 1000
        --payload-bytes 500 --seed 42)
    W_CMD="xclog produce ${args[*]}"
    produced=$("$XCLOG" produce --brokers "$XCLOG_KAFKA_BROKERS" "${args[@]}" 2>>"$WORK/produce.log") \
        || die "xclog produce failed: $(tail -5 "$WORK/produce.log")"
    say "$produced"
    say "preparing the peers' topics$([[ " $* " == *" --docs-file "* ]] && echo " and the documents file")"
    prep=$("$BENCH" prepare --brokers "$XCLOG_KAFKA_BROKERS" --from "$topic" "$@")
    W_EVENTS=$(jget "$prep" events)
    W_SNAPSHOTS=$(jget "$prep" snapshots)
    ((W_EVENTS == events)) || die "$topic holds $W_EVENTS events, expected $events"
    say "topic $topic: $W_EVENTS events + $W_SNAPSHOTS snapshots"
}

# (none with --only producer: the producer's bench publishes its own records)
N_EVENTS=0 N_SNAPSHOTS=0 M_N_EVENTS=0 M_N_SNAPSHOTS=0 PRODUCE_CMD="" MONGO_PRODUCE_CMD=""
if want pg || want mongo; then
    TOPIC=xclog.bench-$ID
    JDBC_TOPIC=$TOPIC.jdbc-json
    MONGO_TOPIC=$TOPIC.mongo-json
    TOPICS+=("$JDBC_TOPIC" "$MONGO_TOPIC")
    # The delay's topics (fresh events, so the throughput topics stay the same for every run).
    DELAY_OURS_TOPIC=$TOPIC.delay-ours
    DELAY_JDBC_TOPIC=$TOPIC.delay-jdbc
    DELAY_MONGO_OURS_TOPIC=$TOPIC.delay-mongo-ours
    DELAY_MONGO_PEER_TOPIC=$TOPIC.delay-mongo-peer
    DOCS=$WORK/events.docs.jsonl
    # The MongoDB sides read MONGO_SRC (their log topic), MONGO_TOPIC (the peer's documents) and
    # DOCS (the limit's): the workload's own, or a smaller one of their own (FerretDB).
    MONGO_SRC=$TOPIC
    SEPARATE_MONGO=0
    want pg && want mongo && ((MONGO_EVENTS != EVENTS)) && SEPARATE_MONGO=1
    peer_forms=()
    want pg && peer_forms+=(--jdbc-topic "$JDBC_TOPIC")
    want mongo && ((!SEPARATE_MONGO)) && peer_forms+=(--mongo-topic "$MONGO_TOPIC" --docs-file "$DOCS")
    workload "$TOPIC" "$EVENTS" "${peer_forms[@]}"
    PRODUCE_CMD=$W_CMD N_EVENTS=$W_EVENTS N_SNAPSHOTS=$W_SNAPSHOTS
    N_RECORDS=$((N_EVENTS + N_SNAPSHOTS))
    M_N_EVENTS=$N_EVENTS M_N_SNAPSHOTS=$N_SNAPSHOTS MONGO_PRODUCE_CMD=$PRODUCE_CMD
    if ((SEPARATE_MONGO)); then
        MONGO_SRC=$TOPIC-mongo
        MONGO_TOPIC=$MONGO_SRC.mongo-json
        TOPICS+=("$MONGO_TOPIC")
        workload "$MONGO_SRC" "$MONGO_EVENTS" --mongo-topic "$MONGO_TOPIC" --docs-file "$DOCS"
        MONGO_PRODUCE_CMD=$W_CMD M_N_EVENTS=$W_EVENTS M_N_SNAPSHOTS=$W_SNAPSHOTS
    fi
    # delay_topics OURS PEER: creates the two (empty) delay topics of one store.
    delay_topics() {
        TOPICS+=("$1" "$1.dlq" "$2")
        for t in "$1" "$2"; do
            "$XCLOG" produce --brokers "$XCLOG_KAFKA_BROKERS" --topic "$t" --partitions "$PARTITIONS" \
                --events 0 >/dev/null 2>>"$WORK/produce.log" || die "could not create topic $t: $(tail -3 "$WORK/produce.log")"
        done
    }
    if ((DELAY_SECONDS > 0)); then
        want pg && delay_topics "$DELAY_OURS_TOPIC" "$DELAY_JDBC_TOPIC"
        want mongo && delay_topics "$DELAY_MONGO_OURS_TOPIC" "$DELAY_MONGO_PEER_TOPIC"
    fi
    M_POLL_MS=$(poll_ms_for "$M_N_EVENTS")
    M_TIMEOUT_S=$(timeout_s_for "$M_N_EVENTS")
fi

# connect NAME CONNECTOR_PROPS: starts Kafka Connect standalone with one connector; sets CONNECT_PID.
connect() {
    local name=$1 props=$2 port
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
    done
    cat >"$WORK/$name.worker.properties" <<EOF
bootstrap.servers=$XCLOG_KAFKA_BROKERS
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
offset.storage.file.filename=$WORK/$name.offsets
offset.flush.interval.ms=1000
plugin.path=${PLUGIN_DIR%/*}
listeners=http://127.0.0.1:$port
consumer.max.poll.records=$POLL_RECORDS
consumer.auto.offset.reset=earliest
EOF
    # The heap that bin/connect-standalone.sh gives the worker.
    java -Xms256M -Xmx2G -XX:+UseG1GC -Djava.awt.headless=true \
        -cp "$KAFKA_LIBS/*" org.apache.kafka.connect.cli.ConnectStandalone \
        "$WORK/$name.worker.properties" "$props" >"$WORK/$name.log" 2>&1 &
    CONNECT_PID=$!
    CONNECT_REST=127.0.0.1:$port
    PIDS+=("$CONNECT_PID")
}

# measure COMPARISON SIDE RUN WAIT_JSON: records one measurement (with the events of the
# workload it ran on).
measure() {
    local comparison=$1 side=$2 run=$3 json=$4 events=$N_EVENTS
    # (the MongoDB sides' delay levels are named xclog-mongo@P% and mongo-sink@P%)
    [[ $comparison == mongo || $side == *mongo*@* ]] && events=$M_N_EVENTS
    record "$(python3 -c '
import json,sys
m=json.loads(sys.argv[5]); m.update(comparison=sys.argv[1], side=sys.argv[2], run=int(sys.argv[3]), events=int(sys.argv[4]))
print(json.dumps(m))' "$comparison" "$side" "$run" "$events" "$json")"
    say "  $comparison/$side run $run: $json"
}

count_pg() { psql_db "$1" -At -c "$2"; }

# timed T0 T1 ROWS: the measurement of a side timed by the wall clock (seconds, rate, rows).
timed() {
    python3 -c 'import json,sys; s=float(sys.argv[2])-float(sys.argv[1]); print(json.dumps({"seconds": s, "rate": int(sys.argv[3])/s, "rows": int(sys.argv[3])}))' "$1" "$2" "$3"
}

delay_run() { ((DELAY_SECONDS > 0 && $1 == 1)); }

# delay_levels SIDE FORMAT TOPIC STORE PID RUN WAIT_JSON: the end-to-end delay of one side (its
# process PID, writing into STORE: pg:DATABASE or mongo:DATABASE) at 20/50/80% of the max rate
# WAIT_JSON reports for it (the backlog drain of the same run), DELAY_SECONDS of publishing
# each. If every row appeared in a single poll (a tiny workload) that rate is unknown: the count
# per poll interval stands in, a lower bound of it (recorded as max_rate_basis). A PostgreSQL
# level that fails stops the bench; a MongoDB one (FerretDB, whose updates scan) is recorded as
# not measured, with the reason, and the side's higher levels are skipped.
delay_levels() {
    local side=$1 format=$2 topic=$3 store=$4 pid=$5 run=$6 max basis pct rate out poll_ms=$POLL_MS
    local -a where
    case $store in
        pg:*) where=(--pg-url "$PG_BASE/${store#pg:}")
            # Start every side from a quiet disk and a vacuumed, analyzed store, so that no
            # side measures while an earlier load is written back (ours follow the COPY of
            # 2 GB into another database; docs/DESIGN.md, "The bench must not load what it measures").
            psql_db "${store#pg:}" -c "VACUUM (ANALYZE)" -c "CHECKPOINT"
            sync ;;
        mongo:*) where=(--mongo-uri "$MONGODB_URI" --db "${store#mongo:}") poll_ms=$M_POLL_MS ;;
        *) die "delay_levels: unknown store $store" ;;
    esac
    read -r max basis < <(python3 -c '
import json,sys
m=json.loads(sys.argv[1])
print(m["rate"], "measured") if m.get("rate") else print(m["count"] / (int(sys.argv[2]) / 1000), "lower-bound")' "$7" "$poll_ms") \
        || die "no max rate for $side in $7"
    for pct in $DELAY_PCTS; do
        rate=$(python3 -c 'import sys; print(round(float(sys.argv[1]) * int(sys.argv[2]) / 100, 1))' "$max" "$pct")
        say "  delay/$side at $pct% of $max events/s ($basis): $rate events/s for $DELAY_SECONDS s"
        if ! out=$("$BENCH" delay --brokers "$XCLOG_KAFKA_BROKERS" --topic "$topic" --format "$format" \
            --rate "$rate" --seconds "$DELAY_SECONDS" "${where[@]}" --pid "$pid" \
            2>>"$WORK/delay-$side-$run.err"); then
            local why
            why="the delay of $side at $pct% of its max rate ($rate events/s) failed: $(tail -3 "$WORK/delay-$side-$run.err")"
            [[ $store == mongo:* ]] || die "$why"
            say "  $why"
            record "$(python3 -c 'import json,sys; print(json.dumps({"comparison":"delay","side":sys.argv[1],"run":int(sys.argv[2]),"pct":int(sys.argv[3]),"store":"mongo","missing":sys.argv[4]}))' "$side@$pct%" "$run" "$pct" "$why")"
            break
        fi
        measure delay "$side@$pct%" "$run" "$(python3 -c '
import json,sys
m=json.loads(sys.argv[1]); m.update(pct=int(sys.argv[2]), max_rate=float(sys.argv[3]), max_rate_basis=sys.argv[4])
print(json.dumps(m))' "$out" "$pct" "$max" "$basis")"
    done
}

# ---------------------------------------------------------------- 3. PostgreSQL
run_pg() {
    local run=$1 db out ours_out pid
    say "PostgreSQL, run $run/$RUNS"
    # ours
    db=bench_${ID}_${run}_ours
    fresh_pg "$db"
    "$XCLOG" project --target postgres --brokers "$XCLOG_KAFKA_BROKERS" --topic "$TOPIC" \
        --group "bench-$ID-$run-pg" --database-url "$PG_BASE/$db" --http-addr off \
        >"$WORK/ours-pg-$run.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    out=$("$BENCH" wait --pg-url "$PG_BASE/$db" --query "SELECT count(*) FROM fsm_events" \
        --count "$N_EVENTS" --pid "$pid" --poll-ms "$POLL_MS" --timeout-s "$TIMEOUT_S") \
        || die "our projector did not write $N_EVENTS events (log: $WORK/ours-pg-$run.log)"
    ours_out=$out
    "$BENCH" wait --pg-url "$PG_BASE/$db" --query "SELECT coalesce(sum(next_offset), 0)::bigint FROM xclog_offsets" \
        --count "$N_RECORDS" --timeout-s 300 >/dev/null || die "our projector did not commit every offset"
    stop "$pid"
    local rows snaps
    rows=$(count_pg "$db" "SELECT count(*) FROM fsm_events")
    snaps=$(count_pg "$db" "SELECT count(*) FROM fsm_snapshots")
    ((rows == N_EVENTS)) || die "our projector wrote $rows event rows, expected $N_EVENTS"
    measure pg xclog "$run" "$(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); m.update(rows=int(sys.argv[2]), snapshot_rows=int(sys.argv[3])); print(json.dumps(m))' "$out" "$rows" "$snaps")"

    # ours, rebuilding: `xclog rebuild` of the whole topic beside the store just written, then
    # the swap (wall clock of the command: start-up, group join and swap included)
    local r0 r1
    r0=$(date +%s.%N)
    "$XCLOG" rebuild --target postgres --brokers "$XCLOG_KAFKA_BROKERS" --topic "$TOPIC" \
        --group "bench-$ID-$run-pg" --database-url "$PG_BASE/$db" --progress log \
        >"$WORK/rebuild-pg-$run.log" 2>&1 || die "xclog rebuild failed (log: $WORK/rebuild-pg-$run.log)"
    r1=$(date +%s.%N)
    rows=$(count_pg "$db" "SELECT count(*) FROM fsm_events")
    ((rows == N_EVENTS)) || die "the rebuilt store holds $rows event rows, expected $N_EVENTS"
    measure pg rebuild "$run" "$(timed "$r0" "$r1" "$rows")"

    # the limit: COPY of the same rows (every table the projector wrote) into the same tables
    local tables="fsm_events fsm_snapshots fsm_causality fsm_causality_lock fsm_instances xclog_offsets"
    local t script=$WORK/copy-in.sql
    : >"$script"
    for t in $tables; do
        psql_db "$db" -c "\\copy $t TO '$WORK/$t.copy'"
        echo "\\copy $t FROM '$WORK/$t.copy'" >>"$script"
    done
    local copydb=bench_${ID}_${run}_copy
    fresh_pg "$copydb" migrate
    local t0 t1
    t0=$(date +%s.%N)
    psql_db "$copydb" -1 -f "$script"
    t1=$(date +%s.%N)
    rows=$(count_pg "$copydb" "SELECT count(*) FROM fsm_events")
    ((rows == N_EVENTS)) || die "COPY loaded $rows event rows, expected $N_EVENTS"
    measure pg copy "$run" "$(timed "$t0" "$t1" "$rows")"
    rm -f "$WORK"/*.copy

    # ours, end-to-end delay: a projector with its defaults on the store written above (after
    # the rebuild), reading the delay topic
    if delay_run "$run"; then
        "$XCLOG" project --target postgres --brokers "$XCLOG_KAFKA_BROKERS" --topic "$DELAY_OURS_TOPIC" \
            --group "bench-$ID-$run-delay" --database-url "$PG_BASE/$db" --http-addr off \
            >"$WORK/ours-pg-delay-$run.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        delay_levels xclog xclog "$DELAY_OURS_TOPIC" "pg:$db" "$pid" "$run" "$ours_out"
        stop "$pid"
    fi

    # the peer: the JDBC upsert sink on Kafka Connect standalone
    local peerdb=bench_${ID}_${run}_peer
    fresh_pg "$peerdb" migrate
    cat >"$WORK/jdbc-$run.properties" <<EOF
name=xclog-bench-jdbc-$ID-$run
connector.class=dev.xclog.bench.connect.JdbcUpsertSinkConnector
tasks.max=$PEER_TASKS
topics=$JDBC_TOPIC$(delay_run "$run" && echo ",$DELAY_JDBC_TOPIC")
key.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=true
connection.url=jdbc:postgresql://127.0.0.1:${PG_BASE##*:}/$peerdb
connection.username=xclog
connection.password=xclog
batch.size=$JDBC_BATCH
EOF
    connect "jdbc-$run" "$WORK/jdbc-$run.properties"
    out=$("$BENCH" wait --pg-url "$PG_BASE/$peerdb" --query "SELECT count(*) FROM fsm_events" \
        --count "$N_EVENTS" --pid "$CONNECT_PID" --connect-rest "$CONNECT_REST" --poll-ms "$POLL_MS" --timeout-s "$TIMEOUT_S") \
        || die "the JDBC sink did not write $N_EVENTS rows (log: $WORK/jdbc-$run.log)"
    # (counted while it still runs: it has caught up, and the delay below adds rows)
    rows=$(count_pg "$peerdb" "SELECT count(*) FROM fsm_events")
    ((rows == N_EVENTS)) || die "the JDBC sink wrote $rows rows, expected $N_EVENTS"
    measure pg jdbc-sink "$run" "$(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); m.update(rows=int(sys.argv[2])); print(json.dumps(m))' "$out" "$rows")"
    # the peer, end-to-end delay: the same worker (subscribed to the delay topic from the start)
    delay_run "$run" && delay_levels jdbc-sink jdbc "$DELAY_JDBC_TOPIC" "pg:$peerdb" "$CONNECT_PID" "$run" "$out"
    stop "$CONNECT_PID"
    if ((KEEP == 0)); then
        for d in "$db" "$copydb" "$peerdb"; do psql_admin -c "DROP DATABASE IF EXISTS $d WITH (FORCE)"; done
    fi
}

# ---------------------------------------------------------------- 4. MongoDB (FerretDB)
MONGO_OURS=0
if "$XCLOG" project --help 2>/dev/null | grep -q 'mongo'; then MONGO_OURS=1; fi
# mongo_missing SIDE RUN DB WAIT_ERR LOG: records that a MongoDB side did not drain its workload
# (how far it got, the wait's last word, its log) instead of ending the invocation.
mongo_missing() {
    local side=$1 run=$2 db=$3 err=$4 log=$5 n why
    n=$("$BENCH" mongo-count --db "$db" --collection events || echo "?")
    why="failed: wrote $n of $M_N_EVENTS documents ($(tail -1 "$err" | tr -d '"'); log $log)"
    say "  mongo/$side run $run $why"
    record "$(python3 -c 'import json,sys; print(json.dumps({"comparison":"mongo","side":sys.argv[1],"run":int(sys.argv[2]),"missing":sys.argv[3]}))' "$side" "$run" "$why")"
}

run_mongo() {
    local run=$1 out ours_out pid db n
    say "$MONGO_NAME, run $run/$RUNS ($M_N_EVENTS events)"
    if ((MONGO_OURS)); then
        db=bench_${ID}_${run}_ours
        MONGO_DBS+=("$db")
        "$XCLOG" project --target mongo --brokers "$XCLOG_KAFKA_BROKERS" --topic "$MONGO_SRC" \
            --group "bench-$ID-$run-mongo" --mongodb-uri "$MONGODB_URI" --mongodb-database "$db" \
            --http-addr off >"$WORK/ours-mongo-$run.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        # The Mongo projector is young: a failure is recorded (with its reason) and the
        # limit and peer still run, rather than losing the whole invocation.
        # (its rate runs until every offset is stored: the Mongo sink inserts a batch's events
        # before its `caused` links and snapshots, so documents become visible before the
        # batch is done)
        if out=$("$BENCH" wait --mongo-uri "$MONGODB_URI" --db "$db" --collection events \
            --count "$M_N_EVENTS" --done-offsets "$((M_N_EVENTS + M_N_SNAPSHOTS))" --pid "$pid" \
            --poll-ms "$M_POLL_MS" --timeout-s "$M_TIMEOUT_S" 2>"$WORK/wait-mongo-$run.err"); then
            stop "$pid"
            n=$("$BENCH" mongo-count --db "$db" --collection events)
            ((n == M_N_EVENTS)) || die "our Mongo projector wrote $n documents, expected $M_N_EVENTS"
            measure mongo xclog "$run" "$(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); m.update(rows=int(sys.argv[2])); print(json.dumps(m))' "$out" "$n")"
            ours_out=$out
            # ours, rebuilding: `xclog rebuild --target mongo` of the whole topic beside the
            # database just written, then the swap (wall clock of the command)
            local r0 r1
            r0=$(date +%s.%N)
            "$XCLOG" rebuild --target mongo --brokers "$XCLOG_KAFKA_BROKERS" --topic "$MONGO_SRC" \
                --group "bench-$ID-$run-mongo" --mongodb-uri "$MONGODB_URI" --mongodb-database "$db" \
                --progress log >"$WORK/rebuild-mongo-$run.log" 2>&1 \
                || die "xclog rebuild --target mongo failed (log: $WORK/rebuild-mongo-$run.log)"
            r1=$(date +%s.%N)
            n=$("$BENCH" mongo-count --db "$db" --collection events)
            ((n == M_N_EVENTS)) || die "the rebuilt Mongo store holds $n documents, expected $M_N_EVENTS"
            measure mongo rebuild "$run" "$(timed "$r0" "$r1" "$n")"
            # ours, end-to-end delay: as for PostgreSQL, on the rebuilt database
            if delay_run "$run"; then
                "$XCLOG" project --target mongo --brokers "$XCLOG_KAFKA_BROKERS" --topic "$DELAY_MONGO_OURS_TOPIC" \
                    --group "bench-$ID-$run-mongo-delay" --mongodb-uri "$MONGODB_URI" --mongodb-database "$db" \
                    --http-addr off >"$WORK/ours-mongo-delay-$run.log" 2>&1 &
                pid=$!
                PIDS+=("$pid")
                delay_levels xclog-mongo xclog "$DELAY_MONGO_OURS_TOPIC" "mongo:$db" "$pid" "$run" "$ours_out"
                stop "$pid"
            fi
        else
            stop "$pid"
            mongo_missing xclog "$run" "$db" "$WORK/wait-mongo-$run.err" "$WORK/ours-mongo-$run.log"
        fi
        ((KEEP)) || "$BENCH" mongo-drop --db "$db" >/dev/null
    else
        record "{\"comparison\":\"mongo\",\"side\":\"xclog\",\"run\":$run,\"missing\":\"xclog project has no --target mongo in this build\"}"
    fi

    # the limit: unordered insertMany of the same documents
    db=bench_${ID}_${run}_bulk
    MONGO_DBS+=("$db")
    out=$("$BENCH" mongo-bulk --db "$db" --file "$DOCS")
    n=$("$BENCH" mongo-count --db "$db" --collection events)
    ((n == M_N_EVENTS)) || die "the bulk insert wrote $n documents, expected $M_N_EVENTS"
    measure mongo bulk-insert "$run" "$(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); m.update(rows=int(sys.argv[2])); print(json.dumps(m))' "$out" "$n")"
    ((KEEP)) || "$BENCH" mongo-drop --db "$db" >/dev/null

    # the peer: the Mongo upsert sink on Kafka Connect standalone
    db=bench_${ID}_${run}_peer
    MONGO_DBS+=("$db")
    cat >"$WORK/mongo-$run.properties" <<EOF
name=xclog-bench-mongo-$ID-$run
connector.class=dev.xclog.bench.connect.MongoUpsertSinkConnector
tasks.max=$PEER_TASKS
topics=$MONGO_TOPIC$(delay_run "$run" && echo ",$DELAY_MONGO_PEER_TOPIC")
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
connection.uri=$MONGODB_URI
database=$db
collection=events
EOF
    connect "mongo-$run" "$WORK/mongo-$run.properties"
    # A peer that cannot drain the workload in time (FerretDB scans for each of its upserts) is
    # recorded as not measured, with the reason, rather than losing the whole invocation.
    if ! out=$("$BENCH" wait --mongo-uri "$MONGODB_URI" --db "$db" --collection events \
        --count "$M_N_EVENTS" --pid "$CONNECT_PID" --connect-rest "$CONNECT_REST" --poll-ms "$M_POLL_MS" \
        --timeout-s "$M_TIMEOUT_S" 2>"$WORK/wait-mongo-peer-$run.err"); then
        stop "$CONNECT_PID"
        mongo_missing mongo-sink "$run" "$db" "$WORK/wait-mongo-peer-$run.err" "$WORK/mongo-$run.log"
        ((KEEP)) || "$BENCH" mongo-drop --db "$db" >/dev/null
        return 0
    fi
    # (counted while it still runs: it has caught up, and the delay below adds documents)
    n=$("$BENCH" mongo-count --db "$db" --collection events)
    ((n == M_N_EVENTS)) || die "the Mongo sink wrote $n documents, expected $M_N_EVENTS"
    measure mongo mongo-sink "$run" "$(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); m.update(rows=int(sys.argv[2])); print(json.dumps(m))' "$out" "$n")"
    # the peer, end-to-end delay: the same worker (subscribed to the delay topic from the start)
    delay_run "$run" && delay_levels mongo-sink mongo "$DELAY_MONGO_PEER_TOPIC" "mongo:$db" "$CONNECT_PID" "$run" "$out"
    stop "$CONNECT_PID"
    ((KEEP)) || "$BENCH" mongo-drop --db "$db" >/dev/null
}

for ((run = 1; run <= RUNS; run++)); do
    want pg && run_pg "$run"
    want mongo && run_mongo "$run"
done

# ---------------------------------------------------------------- 5. producer (its own bench)
PRODUCER_OUT=$WORK/producer.md
: >"$PRODUCER_OUT"
if want producer; then
    PRODUCER_RECORDS=$((REQUESTED_EVENTS < 200000 ? REQUESTED_EVENTS : 200000))
    say "producer vs kafka-producer-perf-test: cargo bench -p xclog-bench --bench throughput ($PRODUCER_RECORDS records)"
    for ((run = 1; run <= RUNS; run++)); do
        XCLOG_BENCH_RECORDS=$PRODUCER_RECORDS XCLOG_KAFKA_LIBS=$KAFKA_LIBS \
            cargo bench -q -p xclog-bench --bench throughput >"$WORK/producer-$run.md" 2>"$WORK/producer-$run.log" \
            || die "the producer bench failed (log: $WORK/producer-$run.log)"
        python3 bench/report.py producer-rows "$WORK/producer-$run.md" "$run" >>"$RAW"
    done
fi

# ---------------------------------------------------------------- 6. report
[[ -n $RESULTS ]] && cp "$RAW" "$RESULTS"
COMMAND="scripts/bench.sh${ARGS_TEXT:+ $ARGS_TEXT}"
python3 bench/report.py render "$RAW" \
    --command "$COMMAND" --produce "$PRODUCE_CMD" --events "$N_EVENTS" --snapshots "$N_SNAPSHOTS" \
    --mongo-produce "$MONGO_PRODUCE_CMD" --mongo-events "$M_N_EVENTS" --mongo-snapshots "$M_N_SNAPSHOTS" \
    --mongo-server "$MONGO_SERVER" \
    --partitions "$PARTITIONS" --runs "$RUNS" --profile "$PROFILE" --quick "$QUICK" \
    --kafka "$KAFKA_VERSION" --peer-tasks "$PEER_TASKS" --jdbc-batch "$JDBC_BATCH" \
    --poll-records "$POLL_RECORDS" --ours-batch-records "$OURS_BATCH_RECORDS" \
    --ours-batch-latency-ms "$OURS_BATCH_LATENCY_MS" --ours-batch-linger-ms "$OURS_BATCH_LINGER_MS" \
    --ours-writers "$OURS_WRITERS" $( ((WRITE_DOC)) && echo --doc docs/BENCHMARKS.md )
