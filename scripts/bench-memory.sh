#!/usr/bin/env bash
# Peak memory of the PostgreSQL projector draining a backlog of large records, with batches cut
# by bytes (the default, --batch-max-mib 16) and by record count only (--batch-max-mib set
# beyond any batch): the projector's memory must stay bounded whatever the record sizes.
#
#   scripts/bench-memory.sh [--events N] [--payload-bytes B] [--profile release|dev] [--no-doc]
#
#   --events N         events in the backlog (default 1200)
#   --payload-bytes B  approximate payload of each event (default 262144: 256 KiB; the wire
#                      limits refuse much more, and a run that stores fewer events than it
#                      published fails)
#   --profile P        cargo profile of the measured binary (default release)
#   --no-doc           print the table but leave docs/BENCHMARKS.md alone
#
# Needs the local stack (`scripts/stack.sh up`; `make bench` runs this after scripts/bench.sh).
# BENCH_NO_BUILD=1 uses the binaries already built.
# Peak RSS is what the kernel reports for the process (GNU time's %M), read once the projection
# has caught up with the whole backlog (`xclog status --wait`).
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=1200
PAYLOAD=262144
PROFILE=release
DOC=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --events) EVENTS="$2"; shift 2 ;;
        --payload-bytes) PAYLOAD="$2"; shift 2 ;;
        --profile) PROFILE="$2"; shift 2 ;;
        --no-doc) DOC=0; shift ;;
        *) echo "bench-memory: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

eval "$(scripts/stack.sh env)"
[[ ${BENCH_NO_BUILD:-0} == 1 ]] ||
    cargo build -q --profile "$PROFILE" -p xclog-cli -p xclog-bench --bin xclog --bin xclog-bench
dir=$PROFILE; [[ $PROFILE == dev ]] && dir=debug
XCLOG="target/$dir/xclog"
BENCH="target/$dir/xclog-bench"
RUN="bench-memory-$(date +%s)"
TOPIC="$RUN"
WORK=$(mktemp -d)
PG_ADMIN="${DATABASE_URL}"
databases=()
cleanup() {
    for db in "${databases[@]}"; do
        psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
    done
    "$BENCH" delete-topics "$TOPIC" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "[bench-memory] publishing $EVENTS events of ~$PAYLOAD payload bytes to $TOPIC (3 partitions)"
"$XCLOG" produce --topic "$TOPIC" --partitions 3 --events "$EVENTS" --payload-bytes "$PAYLOAD" \
    --seed 7 --instances 300 >/dev/null
backlog_mib=$(( EVENTS * PAYLOAD / 1048576 ))

# One projector per cut policy, each into a fresh database, each reading the whole backlog.
measure() {
    local name="$1" mib="$2"
    local db="${RUN//-/_}_$name"
    databases+=("$db")
    psql -q "$PG_ADMIN" -c "CREATE DATABASE \"$db\"" >/dev/null
    local url
    url=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$DATABASE_URL" "$db")
    local start=$SECONDS
    /usr/bin/time -f '%M' -o "$WORK/$name.rss" \
        "$XCLOG" project --target postgres --topic "$TOPIC" --group "$db" \
        --database-url "$url" --batch-max-mib "$mib" --http-addr off \
        --log-filter warn >"$WORK/$name.log" 2>&1 &
    local pid=$!
    "$XCLOG" status --target postgres --topic "$TOPIC" --group "$db" --database-url "$url" \
        --wait 900 --log-filter error >/dev/null
    local secs=$(( SECONDS - start ))
    # GNU time ignores SIGINT while it waits: the projector itself is told to stop.
    pkill -INT -P "$pid" || true
    wait "$pid" || true
    local stored
    stored=$(psql -Atq "$url" -c "SELECT count(*) FROM fsm_events")
    if [[ $stored != "$EVENTS" ]]; then
        echo "bench-memory: the $name run stored $stored of $EVENTS events (records over the" \
            "wire limits are dead-lettered; lower --payload-bytes). Its log ends:" >&2
        tail -5 "$WORK/$name.log" >&2
        exit 1
    fi
    local kib
    kib=$(tail -1 "$WORK/$name.rss")
    echo "$name $mib $(( kib / 1024 )) $secs"
}

echo "[bench-memory] draining with batches cut at 16 MiB (the default) and by count only"
bytes=$(measure bytes 16)
count=$(measure count 4096)
read -r _ _ rss_bytes secs_bytes <<<"$bytes"
read -r _ _ rss_count secs_count <<<"$count"
table=$(cat <<TABLE
| batches cut | peak RSS | drain time |
|---|---:|---:|
| at 2,500 records or 16 MiB (default) | ${rss_bytes} MiB | ${secs_bytes} s |
| at 2,500 records only (\`--batch-max-mib 4096\`) | ${rss_count} MiB | ${secs_count} s |

Backlog: $EVENTS events of ~$(( PAYLOAD / 1024 )) KiB payload (~${backlog_mib} MiB), 3 partitions, one
projector (\`$PROFILE\` build), PostgreSQL target; $(date -u +'%Y-%m-%d %H:%M UTC').
TABLE
)
echo "$table"
if [[ $DOC == 1 ]]; then
    python3 - "$table" <<'PY'
import sys, re
path = "docs/BENCHMARKS.md"
s = open(path).read()
begin, end = "<!-- bench-memory:begin -->", "<!-- bench-memory:end -->"
block = f"{begin}\n{sys.argv[1]}\n{end}"
if begin not in s:
    sys.exit("docs/BENCHMARKS.md has no bench-memory block")
s = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, s, flags=re.S)
open(path, "w").write(s)
PY
    echo "[bench-memory] docs/BENCHMARKS.md updated"
fi
