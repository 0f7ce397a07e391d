// The publishing side on the real broker: the same key lands on the same partition from the
// Rust producer and from this package; append resolves with the record in the log, refuses what
// the projectors would dead-letter without publishing anything, and an exit without close()
// loses nothing that was acknowledged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { Publisher, XclogRecordError, connectXclog, encodeEvent } from '../../src/index.js';
import type { PersistedEvent } from '../../src/index.js';
import { brokers, cargoBuilt, createTopic, databaseUrl, readTopic, repo, unique } from '../support.js';

const run = promisify(execFile);

function event(instanceId: string, n: number): PersistedEvent {
  return {
    id: `${instanceId}-e${n}`,
    instanceId,
    machineName: 'Keys',
    componentName: 'KeysComponent',
    event: { type: 'PLACED', payload: { n }, timestamp: 1767225600000 + n },
    stateBefore: '',
    stateAfter: 'Placed',
    persistedAt: 1767225600000 + n,
  };
}

test('the Rust producer and the package place every key on the same partition', async () => {
  const topic = unique('ts-keys');
  await createTopic(topic, 6);
  const keys = Array.from({ length: 200 }, (_, i) => (i % 3 === 0 ? `order-${i}` : i % 3 === 1 ? crypto.randomUUID() : `ключ-${i}-ü`));
  const example = await cargoBuilt('example', 'xclog-producer', 'publish_keys');
  const rust = await new Promise<string>((resolve, reject) => {
    const child = spawn(example, [brokers, topic], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`publish_keys exited ${code}`))));
    child.stdin.end(keys.join('\n') + '\n');
  });
  const rustPartition = new Map(
    rust
      .trim()
      .split('\n')
      .map((l) => {
        const [k, p] = l.split(' ');
        return [k as string, Number(p)] as const;
      }),
  );
  assert.equal(rustPartition.size, keys.length);
  const publisher = await Publisher.connect({ brokers, topic });
  try {
    const used = new Set<number>();
    for (const [n, key] of keys.entries()) {
      const at = await publisher.send(encodeEvent(event(key, n)));
      assert.equal(at.partition, rustPartition.get(key), `key ${key}`);
      used.add(at.partition);
    }
    assert.equal(used.size, 6, 'the keys spread over every partition');
  } finally {
    await publisher.close();
  }
});

test('append resolves once the record is in the log, with the key and the headers of the wire contract', async () => {
  const topic = unique('ts-append');
  await createTopic(topic, 3);
  const publisher = await Publisher.connect({ brokers, topic });
  const sent = [];
  try {
    for (let n = 0; n < 20; n++) sent.push(await publisher.send(encodeEvent(event(`i${n % 4}`, n))));
  } finally {
    await publisher.close();
  }
  const records = await readTopic(topic);
  assert.equal(records.length, 20);
  for (const at of sent) {
    const r = records.find((x) => x.partition === at.partition && x.offset === at.offset);
    assert.ok(r, `record at ${at.partition}/${at.offset}`);
    const value = JSON.parse(r.value) as PersistedEvent;
    assert.equal(r.key, value.instanceId);
    assert.deepEqual(r.headers, { 'content-type': 'application/json', 'xclog-kind': 'event', 'xclog-schema-version': '1' });
  }
});

test('a record the projector would dead-letter is refused at append and nothing is published', async () => {
  const topic = unique('ts-refuse');
  await createTopic(topic, 1);
  const xclog = await connectXclog({ brokers, topic, read: { postgres: databaseUrl, wait: false } });
  try {
    const bad: unknown[] = [
      { ...event('i1', 1), persistedAt: 1.5 },
      { ...event('i1', 2), event: { type: 'X', payload: { big: 10n } } },
      { ...event('i1', 3), causedBy: ['ok', 7] },
      { ...event('i1', 4), stateAfter: 'nul\0' },
      { ...event('', 5) },
    ];
    for (const b of bad) {
      await assert.rejects(xclog.eventStore.append(b as PersistedEvent), XclogRecordError);
    }
    await assert.rejects(
      xclog.snapshotStore.saveSnapshot({ instance: { id: 'i1' }, snapshotAt: 1, lastEventId: '' } as never),
      (e: unknown) => e instanceof XclogRecordError && e.path === 'instance.machineName',
    );
    await xclog.eventStore.append(event('i1', 6));
  } finally {
    await xclog.close();
  }
  const records = await readTopic(topic);
  assert.deepEqual(records.map((r) => JSON.parse(r.value).id), ['i1-e6']);
});

test('an exit without close() loses nothing that append acknowledged', async () => {
  const topic = unique('ts-exit');
  await createTopic(topic, 3);
  const script = path.join(tmpdir(), `xclog-exit-${topic}.mjs`);
  const dist = path.join(repo, 'ts', 'build', 'src', 'index.js');
  writeFileSync(
    script,
    `import { connectXclog } from ${JSON.stringify(dist)};
const x = await connectXclog({ brokers: ${JSON.stringify(brokers)}, topic: ${JSON.stringify(topic)}, read: { postgres: ${JSON.stringify(databaseUrl)}, wait: false } });
for (let n = 0; n < 50; n++) {
  await x.eventStore.append({ id: 'e' + n, instanceId: 'i' + (n % 5), machineName: 'M', componentName: 'C',
    event: { type: 'T', payload: {}, timestamp: n }, stateBefore: '', stateAfter: 'S', persistedAt: n });
  console.log('acked e' + n);
}
process.exit(0);
`,
  );
  const { stdout } = await run(process.execPath, [script]);
  const acked = stdout.trim().split('\n').map((l) => l.replace('acked ', ''));
  assert.equal(acked.length, 50);
  const ids = new Set((await readTopic(topic)).map((r) => JSON.parse(r.value).id as string));
  for (const id of acked) assert.ok(ids.has(id), `${id} was acknowledged but is not in the log`);
});
