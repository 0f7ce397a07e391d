// Read-your-writes against a real projector: a read right after an append sees it; with the
// projector stopped the read fails within its bound, naming the projection and the partition;
// getAllEvents (the runtime's back-patch path) never waits; and the projection to wait for is
// found in the store, or the error says why it cannot be.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { XclogProjectionLagError, connectXclog, type PersistedEvent, type XclogStores } from '../../src/index.js';
import { Projector, brokers, createTopic, freshPgDatabase, unique } from '../support.js';

const topic = unique('ts-ryw');
const group = `${topic}-pg`;
let pgUrl = '';
let projector: Projector | undefined;
let stores: XclogStores;

function event(instanceId: string, n: number, causedBy?: string): PersistedEvent {
  return {
    id: `${topic}-${n}`,
    instanceId,
    machineName: 'Order',
    componentName: 'OrderComponent',
    event: { type: 'STEP', payload: { n }, timestamp: Date.now() },
    stateBefore: n === 0 ? '' : `S${n - 1}`,
    stateAfter: `S${n}`,
    persistedAt: Date.now(),
    causedBy: causedBy ? [causedBy] : undefined,
  };
}

before(async () => {
  await createTopic(topic, 3);
  pgUrl = await freshPgDatabase(topic.replace(/[^a-z0-9]/gi, '_'));
  projector = await Projector.start('postgres', topic, { databaseUrl: pgUrl, group, httpPort: 20_000 + Math.floor(Math.random() * 20_000) });
  // No projection named: the one of this topic is found in the store once it has stored offsets.
  stores = await connectXclog({ brokers, topic, read: { postgres: pgUrl, waitTimeoutMs: 30_000 } });
});

after(async () => {
  await stores?.close();
  await projector?.stop();
});

test('a read right after an append sees it, every time', async () => {
  let previous: string | undefined;
  for (let n = 0; n < 15; n++) {
    const e = event(`order-${n % 3}`, n, previous);
    await stores.eventStore.append(e);
    const history = await stores.eventStore.getEventsForInstance(e.instanceId);
    assert.equal(history[history.length - 1]?.id, e.id, `append ${n}`);
    if (previous) {
      const effects = await stores.eventStore.getCausedEvents(previous);
      assert.deepEqual(effects.map((x) => x.id), [e.id]);
    }
    previous = e.id;
  }
  await stores.snapshotStore.saveSnapshot({
    instance: { id: 'order-0', machineName: 'Order', currentState: 'S12', context: {}, createdAt: 1, updatedAt: 2, status: 'active' },
    snapshotAt: 3,
    lastEventId: previous as string,
  });
  assert.equal((await stores.snapshotStore.getSnapshot('order-0'))?.instance.currentState, 'S12');
  await stores.snapshotStore.deleteSnapshot('order-0');
  assert.equal(await stores.snapshotStore.getSnapshot('order-0'), null);
});

test('with the projector stopped, a waiting read fails within its bound naming projection and partition; getAllEvents does not wait and holds the own append', async () => {
  await projector?.stop();
  projector = undefined;
  const bounded = await connectXclog({ brokers, topic, read: { postgres: pgUrl, projection: group, waitTimeoutMs: 1_500 } });
  try {
    const e = event('order-lag', 100);
    const at = await bounded.eventStore.publish(e);
    const started = Date.now();
    await assert.rejects(bounded.eventStore.getEventsForInstance(e.instanceId), (err: unknown) => {
      assert.ok(err instanceof XclogProjectionLagError, String(err));
      assert.equal(err.projection, group);
      assert.equal(err.partition, at.partition);
      assert.equal(err.wantedOffset, at.offset);
      assert.match(err.message, new RegExp(`projection ${group} of topic ${topic}.*partition ${at.partition}`));
      return true;
    });
    const waited = Date.now() - started;
    assert.ok(waited >= 1_400 && waited < 10_000, `waited ${waited} ms`);
    const quick = Date.now();
    const all = await bounded.eventStore.getAllEvents();
    assert.ok(Date.now() - quick < 1_400, 'getAllEvents waited for the projection');
    // Not in the store yet, but this process's own append is in the answer, where the runtime's
    // in-memory patch of `caused` finds it.
    const own = all.find((x) => x.id === e.id);
    assert.ok(own, 'the own append is missing from getAllEvents');
    assert.deepEqual(own.caused, []);
    assert.equal(all[all.length - 1]?.id, e.id, 'the own append is not the newest event');
  } finally {
    await bounded.close();
  }
  // With waiting off, reads answer from the store as it is.
  const relaxed = await connectXclog({ brokers, topic, read: { postgres: pgUrl, wait: false } });
  try {
    assert.deepEqual(await relaxed.eventStore.getEventsForInstance('order-lag'), []);
  } finally {
    await relaxed.close();
  }
});

test('the projection to wait for is found in the store, or the error says why not', async () => {
  const otherTopic = unique('ts-ryw-none');
  await createTopic(otherTopic, 1);
  const none = await connectXclog({ brokers, topic: otherTopic, read: { postgres: pgUrl, waitTimeoutMs: 500 } });
  try {
    await none.eventStore.append(event('x', 1));
    await assert.rejects(none.eventStore.getEventsForInstance('x'), /no projection of topic .* has stored anything .*xclog project --target postgres/);
  } finally {
    await none.close();
  }
  const pg = (await import('pg')).default;
  const client = new pg.Client({ connectionString: pgUrl });
  await client.connect();
  await client.query(`INSERT INTO xclog_offsets (projection, topic, partition, next_offset) VALUES ('another', $1, 0, 0)`, [topic]);
  await client.end();
  const two = await connectXclog({ brokers, topic, read: { postgres: pgUrl, waitTimeoutMs: 500 } });
  try {
    await two.eventStore.append(event('y', 2));
    await assert.rejects(two.eventStore.getEventsForInstance('y'), new RegExp(`several projections of topic ${topic} \\(another, ${group}\\)`));
  } finally {
    await two.close();
  }
});
