/**
 * The xclog wire contract (docs/WIRE-FORMAT.md, schema version 1) on the publishing side:
 * validation, normalisation and the JSON encoding of events, snapshots and snapshot
 * deletions.
 *
 * Invariant: a record this module encodes is one the projectors store. Everything the Rust
 * decoder refuses (`malformed`, `limit exceeded`) and everything the stores cannot hold (NUL
 * characters, unpaired surrogates, index keys longer than a btree entry) is refused here with
 * the same field path the decoder would name, before anything is published. Values that
 * `JSON.stringify` would silently change or drop (BigInt, NaN, functions, Maps, cycles) are
 * refused too: a record is published as given or not at all.
 *
 * The golden files of `schema/testdata/v1/` are the oracle: `test/unit/golden.test.ts`
 * encodes every TypeScript-runtime case to what its `.expect` file says and refuses every
 * malformed value with the path of its `.error` file.
 */

import type { InstanceSnapshot, PersistedEvent } from './types.js';

/** The schema version this package writes (header `xclog-schema-version`). */
export const SCHEMA_VERSION = 1;

/** The limits of WIRE-FORMAT section 3.4, as the projectors apply them by default. */
export interface WireLimits {
  /**
   * Largest encoded record, in bytes (1,000,000: librdkafka's own `message.max.bytes`, under
   * the 1 MiB readers accept, so that a record refused by neither is never refused at send).
   */
  maxRecordBytes: number;
  /** Deepest nesting of objects and arrays; the record itself is level 1 (64). */
  maxDepth: number;
  /** Longest string, object keys included, in bytes as written in JSON, escapes included (256 KiB). */
  maxStringBytes: number;
  /** Longest array (100,000). */
  maxArrayLength: number;
  /**
   * Longest id, instance id, machine or component name, state, and `causedBy` entry, in UTF-8
   * bytes (1,300). These are index keys in both stores, two of them in one entry for some
   * indexes (`(parent_id, child_id)`, `(machine_name, current_state)`); PostgreSQL refuses a
   * btree entry above about 2,700 bytes, so longer ones could never be stored.
   */
  maxKeyBytes: number;
}

/** The defaults: WIRE-FORMAT section 3.4, and what the producer and the stores can take. */
export const DEFAULT_LIMITS: Readonly<WireLimits> = Object.freeze({
  maxRecordBytes: 1_000_000,
  maxDepth: 64,
  maxStringBytes: 256 * 1024,
  maxArrayLength: 100_000,
  maxKeyBytes: 1300,
});

/** What kind of problem a refused record has. */
export type RecordErrorKind = 'malformed' | 'limit exceeded' | 'not storable';

/**
 * A record that cannot be published: nothing was sent. `path` names the field the same way
 * the Rust decoder does (`event.type`, `causedBy[1]`, `(record)` for the whole value).
 */
export class XclogRecordError extends Error {
  override readonly name = 'XclogRecordError';
  constructor(
    readonly kind: RecordErrorKind,
    readonly path: string,
    readonly expected: string,
    readonly found: string,
  ) {
    super(`${kind}: ${path}: expected ${expected}, found ${found}`);
  }
}

/** The three record kinds (header `xclog-kind`). */
export type RecordKind = 'event' | 'snapshot' | 'snapshot-deletion';

/** One record ready for the topic. */
export interface EncodedRecord {
  kind: RecordKind;
  /** The Kafka key: the instance id. */
  key: string;
  /** Compact JSON, exactly as the Rust encoder writes the same record. */
  value: string;
}

const ABSENT = 'nothing (the field is absent)';
const INTEGER = 'an integer (epoch milliseconds)';
const UNSIGNED = 'a non-negative integer or null';
const MAX_I64 = 9_223_372_036_854_775_807n;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const utf8 = new TextEncoder();
function byteLength(s: string): number {
  // Fast path: every UTF-16 unit is at most 3 UTF-8 bytes.
  return s.length * 3 <= 1024 ? utf8.encode(s).length : Buffer.byteLength(s, 'utf8');
}

/** Field paths as the Rust decoder prints them. */
class Path {
  private constructor(private readonly segs: readonly (string | number)[]) {}
  static readonly root = new Path([]);
  key(k: string): Path {
    return new Path([...this.segs, k]);
  }
  index(i: number): Path {
    return new Path([...this.segs, i]);
  }
  toString(): string {
    if (this.segs.length === 0) return '(record)';
    let out = '';
    this.segs.forEach((s, i) => {
      if (typeof s === 'number') out += `[${s}]`;
      else out += i === 0 ? s : `.${s}`;
    });
    return out;
  }
}

function malformed(path: Path, expected: string, found: string): XclogRecordError {
  return new XclogRecordError('malformed', path.toString(), expected, found);
}

/** A short description of a value, in the words of the Rust decoder's messages. */
export function describe(v: unknown): string {
  if (v === undefined) return ABSENT;
  if (v === null) return 'null';
  switch (typeof v) {
    case 'boolean':
      return `the boolean ${v}`;
    case 'number':
      return `the number ${v}`;
    case 'bigint':
      return `the BigInt ${v}n`;
    case 'string':
      if (v === '') return 'an empty string';
      return [...v].length <= 40 ? `the string ${JSON.stringify(v)}` : `a string of ${byteLength(v)} bytes`;
    case 'function':
      return 'a function';
    case 'symbol':
      return 'a symbol';
    default:
      if (Array.isArray(v)) return v.length === 1 ? 'an array of 1 element' : `an array of ${v.length} elements`;
      return objectName(v as object);
  }
}

function objectName(o: object): string {
  const proto = Object.getPrototypeOf(o);
  if (proto === Object.prototype || proto === null) return 'an object';
  const name = (proto?.constructor?.name as string | undefined) ?? 'object';
  return `a ${name}`;
}

/** Sets an own property, `__proto__` included (an assignment would set the prototype instead). */
export function defineKey(o: Record<string, unknown>, k: string, v: unknown): void {
  if (k === '__proto__') Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  else o[k] = v;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Bytes of `s` as written inside JSON quotes (what the decoder measures): escapes included. */
function jsonBytes(s: string): number {
  // Escaping at most multiplies a UTF-16 unit by 6 (`\u0001`): only long strings need the count.
  return Buffer.byteLength(JSON.stringify(s), 'utf8') - 2;
}

/** Checks a string's content against what the stores can hold and the length limit. */
function checkString(s: string, path: Path, limits: WireLimits, what = 'text'): void {
  if (s.length > limits.maxStringBytes || (s.length * 6 > limits.maxStringBytes && jsonBytes(s) > limits.maxStringBytes)) {
    throw new XclogRecordError(
      'limit exceeded',
      path.toString(),
      `a string of at most ${limits.maxStringBytes} bytes (as written in JSON)`,
      `a string of ${jsonBytes(s)} bytes`,
    );
  }
  const nul = s.indexOf('\0');
  if (nul >= 0) {
    throw new XclogRecordError(
      'not storable',
      path.toString(),
      `${what} without NUL characters (PostgreSQL text and JSONB cannot hold them)`,
      `a NUL character at index ${nul}`,
    );
  }
  if (!s.isWellFormed()) {
    throw new XclogRecordError(
      'not storable',
      path.toString(),
      `${what} of well-formed UTF-16 (it is sent as UTF-8)`,
      'an unpaired surrogate',
    );
  }
}

/** Walks a user value, returning its plain-JSON form (what `JSON.stringify` would write). */
class Normaliser {
  private readonly seen = new Set<object>();
  constructor(private readonly limits: WireLimits) {}

  /** `depth` is the nesting level a container at this position would have. */
  value(v: unknown, path: Path, depth: number): Json {
    if (v === null) return null;
    switch (typeof v) {
      case 'boolean':
        return v;
      case 'number':
        if (!Number.isFinite(v)) {
          throw malformed(path, 'a finite number (JSON has no NaN or Infinity)', `the number ${v}`);
        }
        return v;
      case 'string':
        checkString(v, path, this.limits);
        return v;
      case 'bigint':
        throw malformed(path, 'a JSON value (a BigInt has no JSON form; send a number or a string)', describe(v));
      case 'undefined':
      case 'function':
      case 'symbol':
        throw malformed(path, 'a JSON value', describe(v));
      default:
        return this.container(v as object, path, depth);
    }
  }

  private container(o: object, path: Path, depth: number): Json {
    // Boxed primitives are written as their value, as JSON.stringify does.
    if (o instanceof Number || o instanceof String || o instanceof Boolean) return this.value(o.valueOf(), path, depth);
    if (o instanceof BigInt) return this.value(o.valueOf(), path, depth);
    if (this.seen.has(o)) {
      throw malformed(path, 'a JSON value', 'a circular reference');
    }
    const toJSON = (o as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') {
      // Dates and other values that define their own JSON form, as JSON.stringify does.
      return this.value(toJSON.call(o, ''), path, depth);
    }
    if (depth > this.limits.maxDepth) {
      throw new XclogRecordError(
        'limit exceeded',
        path.toString(),
        `at most ${this.limits.maxDepth} levels of nesting`,
        `level ${depth}`,
      );
    }
    this.seen.add(o);
    try {
      if (Array.isArray(o)) {
        if (o.length > this.limits.maxArrayLength) {
          throw new XclogRecordError(
            'limit exceeded',
            path.toString(),
            `an array of at most ${this.limits.maxArrayLength} elements`,
            `${o.length} elements`,
          );
        }
        const out: Json[] = new Array(o.length);
        for (let i = 0; i < o.length; i++) {
          const item = o[i];
          // JSON.stringify writes a hole or an undefined element as null.
          out[i] = item === undefined ? null : this.value(item, path.index(i), depth + 1);
        }
        return out;
      }
      if (!isPlainObject(o)) {
        if (o instanceof Map || o instanceof Set || ArrayBuffer.isView(o) || o instanceof ArrayBuffer) {
          throw malformed(path, 'a JSON value (JSON.stringify would lose its content)', describe(o));
        }
      }
      return this.object(o as Record<string, unknown>, path, depth);
    } finally {
      this.seen.delete(o);
    }
  }

  /** An object's own enumerable properties; undefined ones are absent, as in JSON. */
  object(o: Record<string, unknown>, path: Path, depth: number): JsonObject {
    const out: JsonObject = {};
    for (const k of Object.keys(o)) {
      const item = o[k];
      if (item === undefined) continue;
      const p = path.key(k);
      checkString(k, p, this.limits, 'a key');
      defineKey(out, k, this.value(item, p, depth + 1));
    }
    return out;
  }
}

/** The fields of one object of a record, read one at a time with the decoder's rules. */
class Fields {
  constructor(
    private readonly o: Record<string, unknown>,
    readonly path: Path,
    private readonly limits: WireLimits,
  ) {}

  private get(name: string): unknown {
    return Object.prototype.hasOwnProperty.call(this.o, name) ? this.o[name] : undefined;
  }

  string(name: string, nonEmpty: boolean, indexKey = false): string {
    const v = this.get(name);
    const p = this.path.key(name);
    const expected = nonEmpty ? 'a non-empty string' : 'a string';
    if (typeof v !== 'string') throw malformed(p, expected, describe(v));
    if (nonEmpty && v === '') throw malformed(p, expected, 'an empty string');
    checkString(v, p, this.limits);
    if (indexKey) checkKey(v, p, this.limits);
    return v;
  }

  optString(name: string): string | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) return undefined;
    const p = this.path.key(name);
    if (typeof v !== 'string') throw malformed(p, 'a string or null', describe(v));
    checkString(v, p, this.limits);
    return v;
  }

  millis(name: string): number {
    const v = this.get(name);
    if (v === undefined) throw malformed(this.path.key(name), INTEGER, ABSENT);
    return toMillis(v, this.path.key(name), INTEGER);
  }

  optMillis(name: string): number | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) return undefined;
    return toMillis(v, this.path.key(name), INTEGER);
  }

  optSequence(name: string): number | bigint | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) return undefined;
    const p = this.path.key(name);
    if (typeof v === 'bigint') {
      if (v < 0n || v > MAX_I64) throw malformed(p, `${UNSIGNED} up to ${MAX_I64}`, describe(v));
      return v;
    }
    if (typeof v !== 'number') throw malformed(p, UNSIGNED, describe(v));
    if (!Number.isInteger(v) || v < 0) throw malformed(p, UNSIGNED, `the number ${v}`);
    if (!Number.isSafeInteger(v)) {
      throw malformed(p, `${UNSIGNED} that a JavaScript number holds exactly (pass a BigInt)`, `the number ${v}`);
    }
    return v;
  }

  optBool(name: string): boolean | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') throw malformed(this.path.key(name), 'a boolean or null', describe(v));
    return v;
  }

  strings(name: string): string[] {
    const v = this.get(name);
    if (v === undefined || v === null) return [];
    const p = this.path.key(name);
    if (!Array.isArray(v)) throw malformed(p, 'an array of strings, null or nothing', describe(v));
    if (v.length > this.limits.maxArrayLength) {
      throw new XclogRecordError(
        'limit exceeded',
        p.toString(),
        `an array of at most ${this.limits.maxArrayLength} elements`,
        `${v.length} elements`,
      );
    }
    return v.map((item: unknown, i: number) => {
      if (typeof item !== 'string') throw malformed(p.index(i), 'a string', describe(item));
      checkString(item, p.index(i), this.limits);
      checkKey(item, p.index(i), this.limits);
      return item;
    });
  }

  object(name: string): Fields {
    const v = this.get(name);
    const p = this.path.key(name);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw malformed(p, 'an object', describe(v));
    return new Fields(v as Record<string, unknown>, p, this.limits);
  }

  /** A present value of any JSON type (`null` included). */
  value(name: string, norm: Normaliser, depth: number): Json {
    const v = this.get(name);
    const p = this.path.key(name);
    if (v === undefined) throw malformed(p, 'a JSON value', ABSENT);
    return norm.value(v, p, depth);
  }

  /** An optional value: absent or `null` is absent. */
  optValue(name: string, norm: Normaliser, depth: number): Json | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) return undefined;
    return norm.value(v, this.path.key(name), depth);
  }

  /** A payload: absent or null is `{}`, anything else must be an object. */
  payload(name: string, norm: Normaliser, depth: number): JsonObject {
    const v = this.get(name);
    const p = this.path.key(name);
    if (v === undefined || v === null) return {};
    if (typeof v !== 'object' || Array.isArray(v)) throw malformed(p, 'a JSON object or null', describe(v));
    const normalised = norm.value(v, p, depth);
    if (normalised === null || typeof normalised !== 'object' || Array.isArray(normalised)) {
      throw malformed(p, 'a JSON object or null', describe(normalised));
    }
    return normalised;
  }

  /** The object's own keys other than `known`, in order, with their values. */
  rest(known: readonly string[]): [string, unknown][] {
    return Object.keys(this.o)
      .filter((k) => !known.includes(k) && this.o[k] !== undefined)
      .map((k) => [k, this.o[k]]);
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }
}

function checkKey(s: string, path: Path, limits: WireLimits): void {
  const n = byteLength(s);
  if (n > limits.maxKeyBytes) {
    throw new XclogRecordError(
      'not storable',
      path.toString(),
      `at most ${limits.maxKeyBytes} bytes (it is an index key in both stores)`,
      `a string of ${n} bytes`,
    );
  }
}

function toMillis(v: unknown, path: Path, expected: string): number {
  if (typeof v !== 'number') throw malformed(path, expected, describe(v));
  if (!Number.isInteger(v)) throw malformed(path, expected, `the number ${v}`);
  if (!Number.isSafeInteger(v)) {
    throw malformed(path, `${expected} that a JavaScript number holds exactly`, `the number ${v}`);
  }
  return v;
}

function rootObject(v: unknown, limits: WireLimits): Fields {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw malformed(Path.root, 'a JSON object', describe(v));
  }
  return new Fields(v as Record<string, unknown>, Path.root, limits);
}

/** Serialises with sequences as exact integers (a BigInt sequence is written as its digits). */
function stringify(o: Record<string, unknown>): string {
  const seq = o.sequence;
  if (typeof seq !== 'bigint') return JSON.stringify(o);
  const { sequence: _omit, ...rest } = o;
  const body = JSON.stringify(rest);
  return `${body.slice(0, -1)}${body.length > 2 ? ',' : ''}"sequence":${seq.toString()}}`;
}

function finish(kind: RecordKind, key: string, body: Record<string, unknown>, limits: WireLimits): EncodedRecord {
  const value = stringify(body);
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > limits.maxRecordBytes) {
    throw new XclogRecordError(
      'limit exceeded',
      '(record)',
      `a record of at most ${limits.maxRecordBytes} bytes`,
      `${bytes} bytes`,
    );
  }
  return { kind, key, value };
}

const EVENT_KNOWN = ['type', 'payload', 'timestamp'] as const;

/**
 * Validates and encodes an event (an xcomponent-ai `PersistedEvent`, plus an optional
 * `sequence`). Throws {@link XclogRecordError} naming the first field at fault.
 */
export function encodeEvent(event: PersistedEvent | unknown, limits: WireLimits = DEFAULT_LIMITS): EncodedRecord {
  const f = rootObject(event, limits);
  const norm = new Normaliser(limits);
  const id = f.string('id', true, true);
  const instanceId = f.string('instanceId', true, true);
  const machineName = f.string('machineName', true, true);
  const componentName = f.string('componentName', false, true);
  const ev = f.object('event');
  const type = ev.string('type', true);
  const payload = ev.payload('payload', norm, 3);
  const timestamp = ev.optMillis('timestamp');
  const fsmEvent: Record<string, unknown> = { type, payload };
  if (timestamp !== undefined) fsmEvent.timestamp = timestamp;
  for (const [k, v] of ev.rest(EVENT_KNOWN)) {
    const p = ev.path.key(k);
    checkString(k, p, limits, 'a key');
    defineKey(fsmEvent, k, norm.value(v, p, 3));
  }
  const out: Record<string, unknown> = {
    id,
    instanceId,
    machineName,
    componentName,
    event: fsmEvent,
    stateBefore: f.string('stateBefore', false, true),
    stateAfter: f.string('stateAfter', false, true),
    persistedAt: f.millis('persistedAt'),
    causedBy: f.strings('causedBy'),
    caused: f.strings('caused'),
  };
  const source = f.optString('sourceComponentName');
  if (source !== undefined) out.sourceComponentName = source;
  const target = f.optString('targetComponentName');
  if (target !== undefined) out.targetComponentName = target;
  const member = f.optValue('publicMemberSnapshot', norm, 2);
  if (member !== undefined && member !== null) out.publicMemberSnapshot = member;
  const sequence = f.optSequence('sequence');
  if (sequence !== undefined) out.sequence = sequence;
  return finish('event', instanceId, out, limits);
}

const STATUSES = ['active', 'completed', 'error'];

/**
 * Validates and encodes a snapshot (an xcomponent-ai `InstanceSnapshot`, plus an optional
 * `sequence`). Throws {@link XclogRecordError} naming the first field at fault.
 */
export function encodeSnapshot(snapshot: InstanceSnapshot | unknown, limits: WireLimits = DEFAULT_LIMITS): EncodedRecord {
  const f = rootObject(snapshot, limits);
  const norm = new Normaliser(limits);
  const i = f.object('instance');
  const id = i.string('id', true, true);
  const instance: Record<string, unknown> = {
    id,
    machineName: i.string('machineName', true, true),
    currentState: i.string('currentState', false, true),
    context: i.value('context', norm, 3),
  };
  const publicMember = i.optValue('publicMember', norm, 3);
  if (publicMember !== undefined) instance.publicMember = publicMember;
  const internalMember = i.optValue('internalMember', norm, 3);
  if (internalMember !== undefined) instance.internalMember = internalMember;
  instance.createdAt = i.millis('createdAt');
  instance.updatedAt = i.millis('updatedAt');
  const statusPath = i.path.key('status');
  const status: unknown = (snapshot as { instance: Record<string, unknown> }).instance.status;
  const expectedStatus = 'one of "active", "completed", "error"';
  if (typeof status !== 'string' || !STATUSES.includes(status)) {
    throw malformed(statusPath, expectedStatus, describe(status));
  }
  instance.status = status;
  const entry = i.optBool('isEntryPoint');
  if (entry !== undefined) instance.isEntryPoint = entry;
  const parentId = i.optString('parentInstanceId');
  if (parentId !== undefined) instance.parentInstanceId = parentId;
  const parentMachine = i.optString('parentMachineName');
  if (parentMachine !== undefined) instance.parentMachineName = parentMachine;

  const out: Record<string, unknown> = {
    instance,
    snapshotAt: f.millis('snapshotAt'),
    lastEventId: f.string('lastEventId', false),
  };
  const pending = (snapshot as Record<string, unknown>).pendingTimeouts;
  if (pending !== undefined && pending !== null) {
    const p = f.path.key('pendingTimeouts');
    if (!Array.isArray(pending)) throw malformed(p, 'an array of pending timeouts or null', describe(pending));
    out.pendingTimeouts = pending.map((t: unknown, n: number) => {
      const tp = p.index(n);
      if (t === null || typeof t !== 'object' || Array.isArray(t)) throw malformed(tp, 'an object', describe(t));
      const tf = new Fields(t as Record<string, unknown>, tp, limits);
      const stateKey = tf.string('stateKey', false);
      const eventType = tf.string('eventType', false);
      const remaining = (t as Record<string, unknown>).remainingMs;
      const rp = tp.key('remainingMs');
      const remainingMs = toMillis(remaining, rp, 'an integer (milliseconds)');
      return { stateKey, eventType, remainingMs };
    });
  }
  const sequence = f.optSequence('sequence');
  if (sequence !== undefined) out.sequence = sequence;
  return finish('snapshot', id, out, limits);
}

/** A request to delete the snapshot of one instance, applied by the projectors in log order. */
export interface SnapshotDeletion {
  instanceId: string;
  /** Epoch ms of the deletion. */
  snapshotDeletedAt: number;
  /** Sequence of the instance's last event, when the writer numbers its records. */
  sequence?: number | bigint;
}

/** Validates and encodes a snapshot deletion. */
export function encodeSnapshotDeletion(deletion: SnapshotDeletion | unknown, limits: WireLimits = DEFAULT_LIMITS): EncodedRecord {
  const f = rootObject(deletion, limits);
  const instanceId = f.string('instanceId', true, true);
  const out: Record<string, unknown> = { instanceId, snapshotDeletedAt: f.millis('snapshotDeletedAt') };
  const sequence = f.optSequence('sequence');
  if (sequence !== undefined) out.sequence = sequence;
  return finish('snapshot-deletion', instanceId, out, limits);
}

/**
 * Encodes a record whose kind is judged by its shape, as the decoder does for a JSON value
 * without an `xclog-kind` header: `instance` makes a snapshot, `snapshotDeletedAt` a
 * deletion, `instanceId` or `event` an event.
 */
export function encodeRecord(value: unknown, limits: WireLimits = DEFAULT_LIMITS): EncodedRecord {
  const f = rootObject(value, limits);
  if (f.has('instance')) return encodeSnapshot(value, limits);
  if (f.has('snapshotDeletedAt')) return encodeSnapshotDeletion(value, limits);
  if (f.has('instanceId') || f.has('event')) return encodeEvent(value, limits);
  throw malformed(
    Path.root,
    'an event (an object with `instanceId` and `event`) or a snapshot (an object with `instance`)',
    'an object with neither `instanceId`, `event` nor `instance`',
  );
}

/** The Kafka headers of a record (WIRE-FORMAT section 2). */
export function headersOf(kind: RecordKind): Record<string, string> {
  return {
    'content-type': 'application/json',
    'xclog-kind': kind,
    'xclog-schema-version': String(SCHEMA_VERSION),
  };
}
