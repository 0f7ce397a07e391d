/**
 * The TypeScript package's own figures, one JSON object per measurement on stdout
 * (`scripts/bench-ts.sh` runs it next to the Rust producer's bench and Kafka's
 * ProducerPerformance, and writes the table to docs/BENCHMARKS.md):
 *
 * - `awaited`: appends awaited one by one (what an xcomponent-ai runtime does), linger 0 (the
 *   package's default) and linger 5 ms (librdkafka's); latency p50/p99 and appends/s;
 * - `fire-and-forget`: appends started without awaiting each, then all awaited; records/s;
 * - `runtime`: the example runtime's persisted events per second through the package with
 *   read-your-writes on and off, with its publishing alone (a `getAllEvents` answering `[]`),
 *   and on the seed's direct PostgreSQL store.
 *
 * Every event is about 600 bytes of JSON, as in the Rust producer's bench.
 *
 * node ts/build/bench/publish.js --brokers B --topic-prefix P --xclog-db URL --seed-db URL \
 *   [--awaited N] [--fire N] [--flows N]
 */

import { parseArgs } from 'node:util';

import { Publisher, connectXclog, encodeEvent } from '../src/index.js';
import type { PersistedEvent } from '../src/index.js';
import { MiniRuntime } from '../examples/runtime.js';
import { SeedPostgresStores } from '../examples/seed-postgres.js';

const { values } = parseArgs({
  options: {
    brokers: { type: 'string', default: process.env.XCLOG_KAFKA_BROKERS ?? '127.0.0.1:9092' },
    'topic-prefix': { type: 'string' },
    'xclog-db': { type: 'string' },
    'seed-db': { type: 'string' },
    projection: { type: 'string' },
    awaited: { type: 'string', default: '2000' },
    fire: { type: 'string', default: '50000' },
    flows: { type: 'string', default: '40' },
  },
});
const brokers = values.brokers as string;
const prefix = values['topic-prefix'] as string;
if (!prefix || !values['xclog-db'] || !values['seed-db']) {
  console.error('usage: publish.js --topic-prefix P --xclog-db URL --seed-db URL [--brokers B]');
  process.exit(2);
}

const filler = 'x'.repeat(330);
function event(n: number): PersistedEvent {
  return {
    id: `bench-${n}-${Math.random().toString(36).slice(2, 10)}`,
    instanceId: `instance-${n % 500}`,
    machineName: 'Order',
    componentName: 'OrderComponent',
    event: { type: 'STEP', payload: { n, note: filler }, timestamp: Date.now() },
    stateBefore: 'A',
    stateAfter: 'B',
    persistedAt: Date.now(),
    causedBy: [],
  };
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

function emit(o: Record<string, unknown>): void {
  console.log(JSON.stringify(o));
}

async function awaited(linger: number, n: number): Promise<void> {
  const p = await Publisher.connect({ brokers, topic: `${prefix}-publish`, lingerMs: linger });
  try {
    for (let i = 0; i < 50; i++) await p.send(encodeEvent(event(i)));
    const latencies: number[] = [];
    let bytes = 0;
    const start = performance.now();
    for (let i = 0; i < n; i++) {
      const r = encodeEvent(event(i));
      bytes += r.value.length;
      const t = performance.now();
      await p.send(r);
      latencies.push(performance.now() - t);
    }
    const seconds = (performance.now() - start) / 1000;
    latencies.sort((a, b) => a - b);
    emit({
      measurement: 'awaited',
      linger_ms: linger,
      records: n,
      per_second: n / seconds,
      p50_ms: quantile(latencies, 0.5),
      p99_ms: quantile(latencies, 0.99),
      mean_value_bytes: bytes / n,
    });
  } finally {
    await p.close();
  }
}

async function fireAndForget(n: number): Promise<void> {
  const p = await Publisher.connect({ brokers, topic: `${prefix}-publish`, lingerMs: 5 });
  try {
    const start = performance.now();
    const pending = [];
    for (let i = 0; i < n; i++) pending.push(p.send(encodeEvent(event(i))));
    await Promise.all(pending);
    const seconds = (performance.now() - start) / 1000;
    emit({ measurement: 'fire-and-forget', linger_ms: 5, records: n, per_second: n / seconds });
  } finally {
    await p.close();
  }
}

async function runtimeOnXclog(wait: boolean, flows: number): Promise<void> {
  const xclog = await connectXclog({
    brokers,
    topic: `${prefix}-runtime`,
    read: { postgres: values['xclog-db'] as string, wait, projection: values.projection, waitTimeoutMs: 60_000 },
  });
  try {
    const runtime = new MiniRuntime(xclog.eventStore, xclog.snapshotStore);
    const start = performance.now();
    for (let n = 0; n < flows; n++) await runtime.orderFlow(n);
    const seconds = (performance.now() - start) / 1000;
    emit({ measurement: 'runtime', store: 'xclog', read_your_writes: wait, flows, ...runtime.stats, events_per_second: runtime.stats.events / seconds });
  } finally {
    await xclog.close();
  }
}

/**
 * The same runtime publishing the same records the same way, with a `getAllEvents` that
 * answers `[]` at once: the runtime's loop with its publishing alone.
 */
async function runtimePublishingOnly(flows: number): Promise<void> {
  const xclog = await connectXclog({ brokers, topic: `${prefix}-runtime`, read: { postgres: values['xclog-db'] as string, wait: false } });
  try {
    const events = {
      append: (e: PersistedEvent) => xclog.eventStore.append(e),
      getEventsForInstance: (id: string) => xclog.eventStore.getEventsForInstance(id),
      getAllEvents: async () => [],
    };
    const runtime = new MiniRuntime(events, xclog.snapshotStore);
    const start = performance.now();
    for (let n = 0; n < flows; n++) await runtime.orderFlow(n);
    const seconds = (performance.now() - start) / 1000;
    emit({ measurement: 'runtime', store: 'publishing-only', flows, ...runtime.stats, events_per_second: runtime.stats.events / seconds });
  } finally {
    await xclog.close();
  }
}

async function runtimeOnSeed(flows: number): Promise<void> {
  const seed = new SeedPostgresStores(values['seed-db'] as string);
  try {
    const runtime = new MiniRuntime(seed, seed);
    const start = performance.now();
    for (let n = 0; n < flows; n++) await runtime.orderFlow(n);
    const seconds = (performance.now() - start) / 1000;
    emit({ measurement: 'runtime', store: 'seed-postgres', flows, ...runtime.stats, events_per_second: runtime.stats.events / seconds });
  } finally {
    await seed.close();
  }
}

const n = Number(values.awaited);
await awaited(0, n);
await awaited(5, Math.max(100, Math.floor(n / 5)));
await fireAndForget(Number(values.fire));
const flows = Number(values.flows);
// Alternated, so that no setting gets the warmer machine.
for (let round = 0; round < 3; round++) {
  await runtimePublishingOnly(flows);
  await runtimeOnXclog(round % 2 === 0, flows);
  await runtimeOnXclog(round % 2 !== 0, flows);
}
await runtimeOnSeed(flows);
