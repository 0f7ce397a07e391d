// The reverse of the MongoDB sink's storage encoding (projector/src/sink/mongo/document.rs).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { decodeValue, unescapeKey } from '../../src/read/mongo.js';

test('escaped keys come back as the keys that were published', () => {
  assert.equal(unescapeKey('plain'), 'plain');
  assert.equal(unescapeKey('%'), '');
  assert.equal(unescapeKey('a%2Eb'), 'a.b');
  assert.equal(unescapeKey('%24set'), '$set');
  assert.equal(unescapeKey('100%25'), '100%');
  assert.equal(unescapeKey('n%00l'), 'n\0l');
  assert.throws(() => unescapeKey('a%24'), /badly escaped/);
  assert.throws(() => unescapeKey('%zz'), /badly escaped/);
});

test('wrapped values come back as the values that were published', () => {
  assert.deepEqual(decodeValue({ '%json': 'null' }), null);
  assert.deepEqual(decodeValue({ '%json': '{"deep":[1]}' }), { deep: [1] });
  assert.deepEqual(decodeValue([{ '%arr': [1, { '%arr': [2] }] }]), [[1, [2]]]);
  assert.equal(decodeValue({ '%num': '18446744073709551615' }), 18446744073709551615);
  assert.deepEqual(decodeValue({ 'a%2Eb': { '%24x': 1 } }), { 'a.b': { $x: 1 } });
});

test('a stored __proto__ key comes back as a key, not as the prototype', () => {
  const v = decodeValue(JSON.parse('{"__proto__":{"x":1},"a":2}'));
  assert.deepEqual(Object.keys(v), ['__proto__', 'a']);
  assert.equal((v as { x?: number }).x, undefined);
  assert.deepEqual(JSON.parse(JSON.stringify(v)), JSON.parse('{"__proto__":{"x":1},"a":2}'));
});
