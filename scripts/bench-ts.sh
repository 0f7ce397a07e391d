#!/usr/bin/env bash
# The TypeScript package next to its references, in one invocation, on the local stack
# (`make bench` runs it after scripts/bench.sh; docs/BENCHMARKS.md, "TypeScript package"):
#
#   scripts/bench-ts.sh [--awaited N] [--fire N] [--flows N] [--producer-records N] [--no-doc]
#
#   --awaited N           appends awaited one by one (default 2000; a fifth of it at linger 5 ms)
#   --fire N              fire-and-forget appends (default 50000)
#   --flows N             order flows of the example runtime per store (default 40: 480 events)
#   --producer-records N  records of the Rust producer's bench and of Kafka's ProducerPerformance
#                         (default 50000; its awaited `append` publishes a fiftieth at
#                         the default linger of 0, a five-hundredth at 5 ms)
#   --no-doc              print the table but leave docs/BENCHMARKS.md alone
#   (environment) BENCH_TS_WORK=DIR keeps the raw measurements in DIR
#
# 1. builds `xclog` and the package; creates two fresh 3-partition topics and two fresh
#    PostgreSQL databases (xclog's projection; the seed's Schema A);
# 2. starts `xclog project --target postgres` on the runtime's topic, so that the runtime's
#    getAllEvents() reads a live projection;
# 3. `node ts/build/bench/publish.js`: awaited appends (linger 0 and 5 ms), fire-and-forget,
#    and the example runtime through the package (read-your-writes on and off, and with its
#    publishing alone, alternated) and on the seed's direct PostgreSQL store;
# 4. `cargo bench -p xclog-bench --bench throughput`: the Rust producer and Kafka's
#    ProducerPerformance on the same broker;
# 5. prints the table and rewrites the "TypeScript package" section of docs/BENCHMARKS.md.
#
# Needs the stack's XCLOG_KAFKA_BROKERS and DATABASE_URL (`make bench` sets them), psql, java.
set -euo pipefail
cd "$(dirname "$0")/.."

AWAITED=2000
FIRE=50000
FLOWS=40
PRODUCER_RECORDS=50000
WRITE_DOC=1
ARGS_TEXT="$*"
while (($#)); do
    case $1 in
    --awaited) AWAITED=$2; shift 2 ;;
    --fire) FIRE=$2; shift 2 ;;
    --flows) FLOWS=$2; shift 2 ;;
    --producer-records) PRODUCER_RECORDS=$2; shift 2 ;;
    --no-doc) WRITE_DOC=0; shift ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
: "${XCLOG_KAFKA_BROKERS:?run through make bench, or eval \"\$(scripts/stack.sh env)\" first}"
: "${DATABASE_URL:?}"

say() { printf '\033[1m[bench-ts]\033[0m %s\n' "$*" >&2; }
WORK=${BENCH_TS_WORK:-$(mktemp -d)}
STAMP=$(date -u +%Y%m%d%H%M%S)
PREFIX="xclog.bench-ts-$STAMP"
BASE=${DATABASE_URL%/*}
XDB=bench_ts_xclog
SDB=bench_ts_seed
PID=""
cleanup() {
    [[ -n $PID ]] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    [[ -n ${BENCH_TS_WORK:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT

say "building xclog and the package"
cargo build -q -p xclog-cli --bin xclog
scripts/ts.sh build

say "fresh topics $PREFIX-publish, $PREFIX-runtime and databases $XDB, $SDB"
target/debug/xclog produce --topic "$PREFIX-publish" --partitions 3 --events 1 --instances 1 >/dev/null
target/debug/xclog produce --topic "$PREFIX-runtime" --partitions 3 --events 1 --instances 1 >/dev/null
for db in $XDB $SDB; do
    psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
psql -q "$BASE/$SDB" -v ON_ERROR_STOP=1 -f migrations/0001_xcomponent_schema_a.sql >/dev/null

say "projecting $PREFIX-runtime into $XDB"
target/debug/xclog project --target postgres --topic "$PREFIX-runtime" --group "$PREFIX-pg" \
    --database-url "$BASE/$XDB" --http-addr 127.0.0.1:0 >"$WORK/project.log" 2>&1 &
PID=$!
target/debug/xclog status --target postgres --topic "$PREFIX-runtime" --group "$PREFIX-pg" \
    --database-url "$BASE/$XDB" --wait 120 >/dev/null

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "the package: $AWAITED awaited appends, $FIRE fire-and-forget, the runtime on $FLOWS flows per store"
node ts/build/bench/publish.js --brokers "$XCLOG_KAFKA_BROKERS" --topic-prefix "$PREFIX" \
    --xclog-db "$BASE/$XDB" --seed-db "$BASE/$SDB" --projection "$PREFIX-pg" \
    --awaited "$AWAITED" --fire "$FIRE" --flows "$FLOWS" | tee "$WORK/ts.jsonl"

say "the Rust producer and Kafka's ProducerPerformance: cargo bench -p xclog-bench --bench throughput"
XCLOG_BENCH_RECORDS=$PRODUCER_RECORDS cargo bench -q -p xclog-bench --bench throughput \
    >"$WORK/producer.md" 2>"$WORK/producer.log" || { cat "$WORK/producer.log" >&2; exit 1; }
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$WORK/ts.jsonl" "$WORK/producer.md" "$WRITE_DOC" "$ARGS_TEXT" "$LOAD_BEFORE" "$LOAD_AFTER" <<'EOF'
import json, re, sys, datetime
ts_file, producer_file, write_doc, args, load_before, load_after = sys.argv[1:]
rows = [json.loads(l) for l in open(ts_file) if l.startswith('{')]
def one(**k):
    return [r for r in rows if all(r.get(a) == b for a, b in k.items())]
aw0 = one(measurement='awaited', linger_ms=0)[0]
aw5 = one(measurement='awaited', linger_ms=5)[0]
fire = one(measurement='fire-and-forget')[0]
rt_on = one(measurement='runtime', store='xclog', read_your_writes=True)
rt_off = one(measurement='runtime', store='xclog', read_your_writes=False)
rt_pub = one(measurement='runtime', store='publishing-only')
seed = one(measurement='runtime', store='seed-postgres')[0]
med = lambda xs: sorted(xs)[len(xs) // 2]
on = med([r['events_per_second'] for r in rt_on])
off = med([r['events_per_second'] for r in rt_off])
pub = med([r['events_per_second'] for r in rt_pub])
producer = open(producer_file).read()
prod_rows = [l for l in producer.splitlines() if l.startswith('|')]
def cells(line):
    return [c.strip() for c in line.strip('|').split('|')]
def rate(line):
    return float(cells(line)[2].replace(',', '').replace('*', ''))
java = [l for l in prod_rows if re.match(r'^[\d,.]+$', cells(l)[2] if len(cells(l)) > 2 else '')
        and ('Java' in cells(l)[0] or 'ProducerPerformance' in cells(l)[0])]
java_mean = sum(rate(l) for l in java) / len(java) if java else float('nan')
f = lambda x: f'{x:,.0f}'
out = []
out.append(f"Latest run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, `scripts/bench-ts.sh {args}`".rstrip() + f", load average {load_before} before, {load_after} after.")
out.append('')
out.append('| publishing | records | per second | p50 | p99 | ratio to ProducerPerformance |')
out.append('|---|---:|---:|---:|---:|---:|')
out.append(f"| package `append`, awaited one by one, linger 0 (its default) | {f(aw0['records'])} | {f(aw0['per_second'])} | {aw0['p50_ms']:.2f} ms | {aw0['p99_ms']:.2f} ms | |")
out.append(f"| package `append`, awaited one by one, linger 5 ms (librdkafka's default) | {f(aw5['records'])} | {f(aw5['per_second'])} | {aw5['p50_ms']:.2f} ms | {aw5['p99_ms']:.2f} ms | |")
out.append(f"| package `append`, fire-and-forget (linger 5 ms) | {f(fire['records'])} | {f(fire['per_second'])} | | | {fire['per_second'] / java_mean:.2f} |")
out.append('')
out.append(f"Mean JSON value: {aw0['mean_value_bytes']:.0f} bytes. The Rust producer's bench and Kafka's ProducerPerformance in the same invocation (600-byte values, `acks=all`, idempotence; the ratio column there is against the mean of the Java tool's two runs):")
out.append('')
out.extend(prod_rows)
out.append('')
out.append('| example runtime (`ts/examples/runtime.ts`) | flows | events | snapshots | events/s | vs its publishing alone |')
out.append('|---|---:|---:|---:|---:|---:|')
for label, value, r in [('its publishing alone (`getAllEvents` answers `[]`)', pub, rt_pub[0]), ('through the package, read-your-writes on', on, rt_on[0]), ('through the package, read-your-writes off', off, rt_off[0]), ("on the seed's direct PostgreSQL store", seed['events_per_second'], seed)]:
    out.append(f"| {label} | {r['flows']} | {r['events']} | {r['snapshots']} | {f(value)} | {value / pub:.2f}x |")
out.append('')
out.append(f"Runs, alternated (the table shows the medians): publishing alone {', '.join(f(r['events_per_second']) for r in rt_pub)} events/s; read-your-writes on {', '.join(f(r['events_per_second']) for r in rt_on)}; off {', '.join(f(r['events_per_second']) for r in rt_off)}. Each event the runtime persists costs one awaited append plus 0.58 awaited snapshots on average.")
table = '\n'.join(out)
print(table)
if write_doc == '1':
    path = 'docs/BENCHMARKS.md'
    doc = open(path).read()
    start, end = '<!-- bench-ts:start -->', '<!-- bench-ts:end -->'
    if start in doc:
        doc = re.sub(re.escape(start) + '.*?' + re.escape(end), start + '\n' + table + '\n' + end, doc, flags=re.S)
        open(path, 'w').write(doc)
    else:
        print(f'{path} has no {start} marker: section not written', file=sys.stderr)
EOF
