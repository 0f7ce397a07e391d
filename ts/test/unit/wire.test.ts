// What append refuses before anything is published, and how it normalises what it accepts.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DEFAULT_LIMITS, XclogRecordError, encodeEvent, encodeSnapshot, encodeSnapshotDeletion } from '../../src/index.js';
import type { PersistedEvent } from '../../src/index.js';

function event(over: Record<string, unknown> = {}): PersistedEvent {
  return {
    id: 'e1',
    instanceId: 'i1',
    machineName: 'Order',
    componentName: 'OrderComponent',
    event: { type: 'SUBMIT', payload: { amount: 12.5 }, timestamp: 1767225600000 },
    stateBefore: 'Created',
    stateAfter: 'Submitted',
    persistedAt: 1767225600001,
    ...over,
  } as PersistedEvent;
}

function refused(f: () => unknown, path: string, kind?: string): XclogRecordError {
  let caught: unknown;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof XclogRecordError, `expected a refusal at ${path}, got ${String(caught)}`);
  assert.equal(caught.path, path, caught.message);
  if (kind) assert.equal(caught.kind, kind, caught.message);
  return caught;
}

test('an event is encoded in the field order and form of the Rust encoder', () => {
  const r = encodeEvent(event({ causedBy: ['p1'], sourceComponentName: 'PaymentComponent' }));
  assert.equal(r.kind, 'event');
  assert.equal(r.key, 'i1');
  assert.equal(
    r.value,
    '{"id":"e1","instanceId":"i1","machineName":"Order","componentName":"OrderComponent",' +
      '"event":{"type":"SUBMIT","payload":{"amount":12.5},"timestamp":1767225600000},' +
      '"stateBefore":"Created","stateAfter":"Submitted","persistedAt":1767225600001,' +
      '"causedBy":["p1"],"caused":[],"sourceComponentName":"PaymentComponent"}',
  );
});

test('undefined fields are absent and a Date is written as JSON.stringify writes it', () => {
  const when = new Date(Date.UTC(2026, 0, 1));
  const r = encodeEvent(
    event({ targetComponentName: undefined, event: { type: 'X', payload: { at: when, gone: undefined, list: [1, undefined] } } }),
  );
  const back = JSON.parse(r.value);
  assert.deepEqual(back.event.payload, { at: '2026-01-01T00:00:00.000Z', list: [1, null] });
  assert.equal('targetComponentName' in back, false);
  assert.equal('timestamp' in back.event, false);
});

test('values JSON.stringify cannot represent are refused with their path', () => {
  refused(() => encodeEvent(event({ event: { type: 'X', payload: { n: 10n } } })), 'event.payload.n');
  refused(() => encodeEvent(event({ event: { type: 'X', payload: { n: Number.NaN } } })), 'event.payload.n');
  refused(() => encodeEvent(event({ event: { type: 'X', payload: { f: () => 1 } } })), 'event.payload.f');
  refused(() => encodeEvent(event({ publicMemberSnapshot: { m: new Map([[1, 2]]) } })), 'publicMemberSnapshot.m');
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const e = refused(() => encodeEvent(event({ event: { type: 'X', payload: cyclic } })), 'event.payload.self');
  assert.match(e.message, /circular/);
});

test('required fields, integer times and string arrays are checked as the decoder checks them', () => {
  refused(() => encodeEvent(event({ id: '' })), 'id', 'malformed');
  refused(() => encodeEvent(event({ instanceId: undefined })), 'instanceId');
  refused(() => encodeEvent(event({ persistedAt: 1.5 })), 'persistedAt');
  refused(() => encodeEvent(event({ persistedAt: '1767225600000' })), 'persistedAt');
  refused(() => encodeEvent(event({ causedBy: ['a', 7] })), 'causedBy[1]');
  refused(() => encodeEvent(event({ event: { type: 'X', payload: 'ok' } })), 'event.payload');
  refused(() => encodeEvent(event({ event: { type: 42, payload: {} } })), 'event.type');
  refused(() => encodeEvent(null), '(record)');
  refused(() => encodeEvent([event()]), '(record)');
});

test('what the stores cannot hold is refused: NUL, unpaired surrogates, over-long index keys', () => {
  refused(() => encodeEvent(event({ event: { type: 'X', payload: { note: 'a\0b' } } })), 'event.payload.note', 'not storable');
  refused(() => encodeEvent(event({ event: { type: 'X', payload: { 'k\0': 1 } } })), 'event.payload.k\0', 'not storable');
  refused(() => encodeEvent(event({ stateAfter: 'bad\uD800' })), 'stateAfter', 'not storable');
  refused(() => encodeEvent(event({ instanceId: 'i'.repeat(DEFAULT_LIMITS.maxKeyBytes + 1) })), 'instanceId', 'not storable');
  refused(() => encodeEvent(event({ causedBy: ['p'.repeat(DEFAULT_LIMITS.maxKeyBytes + 1)] })), 'causedBy[0]', 'not storable');
});

test('the limits of WIRE-FORMAT 3.4 are enforced', () => {
  let deep: Record<string, unknown> = {};
  const root = deep;
  for (let i = 0; i < 70; i++) {
    const next = {};
    deep.d = next;
    deep = next;
  }
  const e = refused(() => encodeEvent(event({ event: { type: 'X', payload: root } })), 'event.payload' + '.d'.repeat(62), 'limit exceeded');
  assert.match(e.message, /found level 65/);
  refused(() => encodeEvent(event({ event: { type: 'X', payload: { s: 'x'.repeat(256 * 1024 + 1) } } })), 'event.payload.s', 'limit exceeded');
  refused(() => encodeEvent(event({ event: { type: 'X', payload: { a: new Array(100_001).fill(0) } } })), 'event.payload.a', 'limit exceeded');
  const big = Array.from({ length: 8 }, () => 'y'.repeat(200 * 1024));
  refused(() => encodeEvent(event({ event: { type: 'X', payload: { big } } })), '(record)', 'limit exceeded');
});

test('a snapshot is encoded in the Rust field order and its status is checked', () => {
  const s = {
    instance: {
      id: 'i1',
      machineName: 'Order',
      currentState: 'Paid',
      context: {},
      publicMember: { paid: true },
      createdAt: 1,
      updatedAt: 2,
      status: 'active',
    },
    snapshotAt: 3,
    lastEventId: 'e9',
  };
  assert.equal(
    encodeSnapshot(s).value,
    '{"instance":{"id":"i1","machineName":"Order","currentState":"Paid","context":{},"publicMember":{"paid":true},' +
      '"createdAt":1,"updatedAt":2,"status":"active"},"snapshotAt":3,"lastEventId":"e9"}',
  );
  refused(() => encodeSnapshot({ ...s, instance: { ...s.instance, status: 'running' } }), 'instance.status');
  refused(() => encodeSnapshot({ ...s, pendingTimeouts: [{ stateKey: 'a', eventType: 'b', remainingMs: 0.5 }] }), 'pendingTimeouts[0].remainingMs');
});

test('a snapshot deletion is keyed by its instance and written as the wire contract says', () => {
  const r = encodeSnapshotDeletion({ instanceId: 'i1', snapshotDeletedAt: 5 });
  assert.deepEqual(r, { kind: 'snapshot-deletion', key: 'i1', value: '{"instanceId":"i1","snapshotDeletedAt":5}' });
  refused(() => encodeSnapshotDeletion({ instanceId: '', snapshotDeletedAt: 5 }), 'instanceId');
});

test('a BigInt sequence is written as exact digits', () => {
  const r = encodeEvent({ ...event(), sequence: 9_007_199_254_740_993n } as PersistedEvent);
  assert.match(r.value, /,"sequence":9007199254740993}$/);
  refused(() => encodeEvent({ ...event(), sequence: -1 } as PersistedEvent), 'sequence');
});

test('string lengths are measured as written in JSON, escapes included, as the decoder measures them', () => {
  // 150,000 newlines are 300,000 bytes once escaped: over 256 KiB.
  refused(() => encodeEvent(event({ event: { type: 'X', payload: { s: '\n'.repeat(150_000) } } })), 'event.payload.s', 'limit exceeded');
  refused(() => encodeEvent(event({ event: { type: 'X', payload: { s: '\u0001'.repeat(50_000) } } })), 'event.payload.s', 'limit exceeded');
  assert.ok(encodeEvent(event({ event: { type: 'X', payload: { s: '\n'.repeat(100_000) } } })));
});

test('a record over the producer limit is refused before it could fail at send', () => {
  const big = Array.from({ length: 4 }, () => 'y'.repeat(250_100));
  const e = refused(() => encodeEvent(event({ event: { type: 'X', payload: { big } } })), '(record)', 'limit exceeded');
  assert.match(e.message, /at most 1000000 bytes/);
});

test('states and names are index keys too: two of them share an index entry', () => {
  const long = 's'.repeat(DEFAULT_LIMITS.maxKeyBytes + 1);
  refused(() => encodeEvent(event({ stateAfter: long })), 'stateAfter', 'not storable');
  refused(() => encodeEvent(event({ machineName: long })), 'machineName', 'not storable');
  refused(
    () => encodeSnapshot({ instance: { id: 'i', machineName: 'M', currentState: long, context: {}, createdAt: 1, updatedAt: 1, status: 'active' }, snapshotAt: 1, lastEventId: '' }),
    'instance.currentState',
    'not storable',
  );
  assert.ok(encodeEvent(event({ id: 'e'.repeat(DEFAULT_LIMITS.maxKeyBytes), causedBy: ['p'.repeat(DEFAULT_LIMITS.maxKeyBytes)] })));
});

test('a __proto__ key is published as a key, and boxed primitives as their values', () => {
  const payload = JSON.parse('{"__proto__":{"x":1},"a":1}') as Record<string, unknown>;
  const r = encodeEvent(event({ event: JSON.parse('{"type":"GO","__proto__":5}'), publicMemberSnapshot: payload }));
  const text = r.value;
  assert.match(text, /"event":\{"type":"GO","payload":\{\},"__proto__":5\}/);
  assert.match(text, /"publicMemberSnapshot":\{"__proto__":\{"x":1\},"a":1\}/);
  // eslint-disable-next-line no-new-wrappers
  const boxed = encodeEvent(event({ event: { type: 'X', payload: { a: new String('ab'), b: new Number(5), c: new Boolean(false) } } }));
  assert.deepEqual(JSON.parse(boxed.value).event.payload, { a: 'ab', b: 5, c: false });
  refused(() => encodeEvent(event({ event: { type: 'X', payload: { n: Object(1n) } } })), 'event.payload.n');
});
