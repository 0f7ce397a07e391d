// End to end on the real services: the example runtime writes through the package while
// `xclog project` runs for PostgreSQL and for MongoDB; its reads then equal the `xclog`
// command's, a restarted runtime restores every instance, a deleted snapshot is gone from
// both stores and stays gone after `xclog rebuild`, and `xclog verify` finds the topic and both
// stores in agreement.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { connectXclog, type PersistedEvent, type XclogStores } from '../../src/index.js';
import { MiniRuntime } from '../../examples/runtime.js';
import {
  Projector,
  brokers,
  caughtUp,
  createTopic,
  freshPgDatabase,
  mongoUri,
  unique,
  xclog,
  xclogStatus,
} from '../support.js';

const topic = unique('ts-e2e');
const pgGroup = `${topic}-pg`;
const mongoGroup = `${topic}-mongo`;
const mongoDatabase = topic.replace(/[^a-z0-9]/gi, '_');
let pgUrl = '';
const projectors: Projector[] = [];
let pgStores: XclogStores;
let mongoStores: XclogStores;
const FLOWS = 4;
let runtime: MiniRuntime;
let orders: string[] = [];

/** What `xclog events --instance ID --json` prints, without the xclog-only fields. */
async function cliHistory(instanceId: string, target: 'postgres' | 'mongo'): Promise<PersistedEvent[]> {
  const args = ['events', '--instance', instanceId, '--json', '--limit', '10000', '--target', target];
  if (target === 'postgres') args.push('--database-url', pgUrl);
  else args.push('--mongodb-uri', mongoUri, '--mongodb-database', mongoDatabase);
  const page = JSON.parse(await xclog(args)) as { events: (PersistedEvent & { source?: unknown; sequence?: unknown })[] };
  // `caused` is a set: the package returns it sorted from both stores.
  return page.events.map(({ source: _s, sequence: _q, ...e }) => ({ ...e, caused: [...(e.caused ?? [])].sort() }));
}

before(async () => {
  await createTopic(topic, 3);
  pgUrl = await freshPgDatabase(mongoDatabase);
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  projectors.push(await Projector.start('postgres', topic, { databaseUrl: pgUrl, group: pgGroup, httpPort: port }));
  projectors.push(await Projector.start('mongo', topic, { mongoDatabase, group: mongoGroup, httpPort: port + 1 }));
  pgStores = await connectXclog({ brokers, topic, read: { postgres: pgUrl, projection: pgGroup, waitTimeoutMs: 60_000 } });
  mongoStores = await connectXclog({ brokers, topic, read: { mongo: mongoUri, database: mongoDatabase, projection: mongoGroup, waitTimeoutMs: 120_000 } });
  // A Rust-published workload (protobuf) on the same topic, side by side with the runtime's JSON.
  await xclog(['produce', '--brokers', brokers, '--topic', topic, '--events', '120', '--instances', '6', '--seed', '7']);
  runtime = new MiniRuntime(pgStores.eventStore, pgStores.snapshotStore);
  for (let n = 0; n < FLOWS; n++) orders.push(await runtime.orderFlow(n));
  await caughtUp('postgres', topic, pgGroup, { databaseUrl: pgUrl });
  await caughtUp('mongo', topic, mongoGroup, { mongoDatabase }, 300);
});

after(async () => {
  await pgStores?.close();
  await mongoStores?.close();
  await Promise.all(projectors.map((p) => p.stop()));
});

test('every instance history reads back identically from the package, the xclog command, PostgreSQL and MongoDB', async () => {
  assert.equal(runtime.instances.size, FLOWS * 3);
  let events = 0;
  for (const id of runtime.instances.keys()) {
    const fromPg = await pgStores.eventStore.getEventsForInstance(id);
    const fromMongo = await mongoStores.eventStore.getEventsForInstance(id);
    assert.ok(fromPg.length >= 3, `${id}: ${fromPg.length} events`);
    assert.deepEqual(fromPg, await cliHistory(id, 'postgres'), `${id} (postgres)`);
    assert.deepEqual(fromMongo, await cliHistory(id, 'mongo'), `${id} (mongo)`);
    assert.deepEqual(fromMongo, fromPg, `${id}: MongoDB and PostgreSQL differ`);
    assert.equal(fromPg[0]?.event.type, 'INSTANCE_CREATED');
    assert.equal(fromPg[fromPg.length - 1]?.stateAfter, runtime.instances.get(id)?.currentState);
    events += fromPg.length;
  }
  assert.equal(events, runtime.stats.events);
});

test('the xcomponent-ai shapes come back exactly: event timestamps, _sourceComponent, publicMemberSnapshot, caused', async () => {
  const order = orders[0] as string;
  const history = await pgStores.eventStore.getEventsForInstance(order);
  const confirmed = history.find((e) => e.event.type === 'PAYMENT_CONFIRMED');
  assert.ok(confirmed);
  assert.equal(typeof confirmed.event.timestamp, 'number');
  assert.equal((confirmed.event as unknown as Record<string, unknown>)._sourceComponent, 'PaymentComponent');
  assert.equal(confirmed.sourceComponentName, 'PaymentComponent');
  assert.equal(confirmed.publicMemberSnapshot?.orderId, 'ORD-0');
  assert.equal(typeof confirmed.persistedAt, 'number');
  for (const key of ['sequence', 'source']) assert.equal(key in confirmed, false, `${key} leaks`);
  // The projectors maintain `caused`: SUBMIT caused the two creations and two transitions.
  const submit = history.find((e) => e.event.type === 'SUBMIT');
  assert.equal(submit?.caused?.length, 4);
});

test('getCausedEvents returns the direct effects that xclog trace shows', async () => {
  const history = await mongoStores.eventStore.getEventsForInstance(orders[1] as string);
  const submit = history.find((e) => e.event.type === 'SUBMIT');
  assert.ok(submit);
  const trace = JSON.parse(await xclog(['trace', submit.id, '--json', '--database-url', pgUrl])) as {
    events: { depth: number; event: { id: string } }[];
  };
  const fromTrace = trace.events.filter((t) => t.depth === 1).map((t) => t.event.id).sort();
  for (const stores of [pgStores, mongoStores]) {
    const effects = await stores.eventStore.getCausedEvents(submit.id);
    assert.deepEqual(effects.map((e) => e.id).sort(), fromTrace);
    assert.equal(effects.length, 4);
    assert.ok(effects.every((e) => e.causedBy?.includes(submit.id)));
  }
});

test('getEventsByTimeRange is inclusive and getAllEvents returns the newest events oldest first', async () => {
  const all = await pgStores.eventStore.getAllEvents();
  // The runtime's events and the Rust workload's 120.
  assert.equal(all.length, runtime.stats.events + 120);
  for (let i = 1; i < all.length; i++) assert.ok((all[i - 1] as PersistedEvent).persistedAt <= (all[i] as PersistedEvent).persistedAt);
  const first = all[0] as PersistedEvent;
  const last = all[all.length - 1] as PersistedEvent;
  const range = await pgStores.eventStore.getEventsByTimeRange(first.persistedAt, last.persistedAt);
  assert.equal(range.length, all.length);
  const paged: PersistedEvent[] = [];
  for await (const e of pgStores.eventStore.allEvents(7)) paged.push(e);
  assert.deepEqual(paged.map((e) => e.id), range.map((e) => e.id));
});

test('snapshots read back as xclog snapshot shows them, and a restarted runtime restores every instance', async () => {
  for (const [id, live] of runtime.instances) {
    const s = await pgStores.snapshotStore.getSnapshot(id);
    assert.ok(s, `${id} has a snapshot`);
    assert.deepEqual(s.instance, live);
    const cli = JSON.parse(await xclog(['snapshot', id, '--json', '--database-url', pgUrl])) as Record<string, unknown>;
    delete cli.sequence;
    assert.deepEqual(s, cli);
    assert.deepEqual(await mongoStores.snapshotStore.getSnapshot(id), s);
  }
  // A new process: new connection, new runtime, restore() from the projection.
  const again = await connectXclog({ brokers, topic, read: { postgres: pgUrl, projection: pgGroup } });
  try {
    await again.waitForProjection(30_000);
    const restarted = new MiniRuntime(again.eventStore, again.snapshotStore);
    // Every snapshot of the topic (the Rust workload's too), and every instance of the runtime
    // exactly as it was in memory.
    assert.equal(await restarted.restore(), (await again.snapshotStore.getAllSnapshots()).length);
    for (const [id, live] of runtime.instances) assert.deepEqual(restarted.instances.get(id), live, id);
  } finally {
    await again.close();
  }
});

test('a deleted snapshot is gone from both stores, stays gone after xclog rebuild, and verify agrees on the Rust- and TypeScript-published topic', async () => {
  const [payment] = [...runtime.instances.values()].filter((i) => i.machineName === 'Payment');
  assert.ok(payment);
  const before = (await pgStores.snapshotStore.getAllSnapshots()).length;
  await pgStores.snapshotStore.deleteSnapshot(payment.id);
  assert.equal(await pgStores.snapshotStore.getSnapshot(payment.id), null);
  // The MongoDB connection did not publish the deletion: wait for the whole topic there.
  await mongoStores.waitForProjection(120_000);
  assert.equal(await mongoStores.snapshotStore.getSnapshot(payment.id), null);
  const kept = (await pgStores.snapshotStore.getAllSnapshots()).map((s) => s.instance.id);
  assert.equal(kept.length, before - 1);
  assert.equal(kept.includes(payment.id), false);

  await xclog(['rebuild', '--target', 'postgres', '--topic', topic, '--group', pgGroup, '--database-url', pgUrl, '--progress', 'log'], {
    XCLOG_KAFKA_BROKERS: brokers,
  });
  assert.equal(await pgStores.snapshotStore.getSnapshot(payment.id), null, 'the rebuild brought the snapshot back');
  assert.deepEqual((await pgStores.snapshotStore.getAllSnapshots()).map((s) => s.instance.id), kept);

  await xclog(
    ['rebuild', '--target', 'mongo', '--topic', topic, '--group', mongoGroup, '--mongodb-uri', mongoUri, '--mongodb-database', mongoDatabase, '--progress', 'log'],
    { XCLOG_KAFKA_BROKERS: brokers },
  );
  assert.equal(await mongoStores.snapshotStore.getSnapshot(payment.id), null, 'the MongoDB rebuild brought the snapshot back');
  assert.deepEqual((await mongoStores.snapshotStore.getAllSnapshots()).map((s) => s.instance.id), kept);

  await caughtUp('mongo', topic, mongoGroup, { mongoDatabase }, 300);
  const verify = await xclogStatus([
    'verify', '--sources', 'topic,postgres,mongo', '--brokers', brokers, '--topic', topic, '--group', pgGroup,
    '--mongo-projection', mongoGroup, '--database-url', pgUrl, '--mongodb-uri', mongoUri, '--mongodb-database', mongoDatabase,
  ]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});
