// The golden files of schema/testdata/v1 are the oracle shared with the Rust codec: every
// TypeScript-runtime case encodes to its `.expect`, every xclog JSON file re-encodes byte for
// byte, and every malformed JSON value is refused with the kind and field path of its `.error`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import { XclogRecordError, encodeRecord } from '../../src/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
// build/test/unit -> the repository root.
const golden = path.resolve(here, '../../../../schema/testdata/v1');
const read = (f: string) => readFileSync(path.join(golden, f), 'utf8');
const files = (dir: string, ext: string) =>
  readdirSync(path.join(golden, dir))
    .filter((f) => f.endsWith(ext))
    .sort();

test('every TypeScript-runtime golden file encodes to its .expect', () => {
  const cases = files('ts-runtime', '.json');
  assert.ok(cases.length >= 8, `found ${cases.length} cases`);
  for (const f of cases) {
    const expected = JSON.stringify(JSON.parse(read(`ts-runtime/${f}.expect`)));
    assert.equal(encodeRecord(JSON.parse(read(`ts-runtime/${f}`))).value, expected, f);
  }
});

test('every xclog JSON golden file re-encodes byte for byte', () => {
  const cases = files('xclog', '.json');
  assert.ok(cases.length >= 3, `found ${cases.length} cases`);
  for (const f of cases) {
    const text = read(`xclog/${f}`).trimEnd();
    assert.equal(encodeRecord(JSON.parse(text)).value, text, f);
  }
});

test('every malformed JSON value is refused with the Rust decoder kind and field path', () => {
  let checked = 0;
  for (const f of files('malformed', '.json')) {
    // Header and key errors cannot happen here: the package writes its own headers and key.
    if (existsSync(path.join(golden, `malformed/${f}.headers`))) continue;
    let value: unknown;
    try {
      value = JSON.parse(read(`malformed/${f}`));
    } catch {
      continue; // not JSON text at all: a JavaScript object cannot be one
    }
    const error = read(`malformed/${f}.error`).trim();
    const m = /^(malformed|limit exceeded): (.*?): expected /.exec(error);
    assert.ok(m, `${f}.error: ${error}`);
    assert.throws(
      () => encodeRecord(value),
      (e: unknown) => {
        assert.ok(e instanceof XclogRecordError, `${f}: ${String(e)}`);
        assert.equal(e.kind, m[1], `${f}: ${e.message}`);
        assert.equal(e.path, m[2], `${f}: ${e.message}`);
        return true;
      },
      f,
    );
    checked += 1;
  }
  assert.ok(checked >= 10, `checked ${checked} malformed cases`);
});
