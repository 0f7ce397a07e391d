/**
 * Reads the MongoDB projection (`events`, `snapshots`, `xclog_offsets`, written by
 * `xclog project --target mongo`) back into the xcomponent-ai shapes, reversing the storage
 * encoding of the sink (`projector/src/sink/mongo/document.rs`): escaped keys (`%2E` for `.`,
 * `%24` for a leading `$`, `%25` for `%`, `%00` for NUL, `%` for the empty key), and the
 * `%json`, `%arr` and `%num` wrappers for values BSON or FerretDB cannot hold as they are.
 */

import type { Db, Document, MongoClient } from 'mongodb';

import type { InstanceSnapshot, PendingTimeout, PersistedEvent } from '../types.js';
import { defineKey } from '../wire.js';
import { type EventPage, type ProjectionReader, PAGE, everyPage, parseTimeCursor, timeCursor } from './index.js';

/** Reverses the sink's key escaping; throws on a key the sink cannot have written. */
export function unescapeKey(key: string): string {
  if (key === '%') return '';
  if (!key.includes('%')) return key;
  let out = '';
  let i = 0;
  while (i < key.length) {
    const c = key[i];
    if (c !== '%') {
      out += c;
      i += 1;
      continue;
    }
    const code = key.slice(i + 1, i + 3);
    if (code === '25') out += '%';
    else if (code === '2E') out += '.';
    else if (code === '00') out += '\0';
    else if (code === '24' && out === '') out += '$';
    else throw new Error(`stored key ${JSON.stringify(key)} is badly escaped`);
    i += 3;
  }
  return out;
}

function isLong(v: object): v is { toString(): string; _bsontype: string } {
  return (v as { _bsontype?: string })._bsontype === 'Long';
}

/** Reverses the sink's value encoding. */
export function decodeValue(v: unknown): any {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(decodeValue);
  if (isLong(v)) return Number(v.toString());
  const bsontype = (v as { _bsontype?: string })._bsontype;
  if (bsontype === 'Double' || bsontype === 'Int32') return Number((v as { valueOf(): number }).valueOf());
  if (v instanceof Date) return { $date: v.toISOString() };
  if (bsontype !== undefined) return { [`$${bsontype.toLowerCase()}`]: String(v) };
  const keys = Object.keys(v);
  const doc = v as Record<string, unknown>;
  if (keys.length === 1) {
    const only = keys[0] as string;
    const inner = doc[only];
    if (only === '%json' && typeof inner === 'string') return JSON.parse(inner);
    if (only === '%arr' && Array.isArray(inner)) return inner.map(decodeValue);
    if (only === '%num' && typeof inner === 'string') return Number(inner);
  }
  const out: Record<string, unknown> = {};
  for (const k of keys) defineKey(out, unescapeKey(k), decodeValue(doc[k]));
  return out;
}

function num(v: unknown): number {
  if (typeof v === 'number') return v;
  if (v !== null && typeof v === 'object') return Number(String(v));
  return Number(v);
}

function optional(v: unknown): any {
  return v === null || v === undefined ? undefined : decodeValue(v);
}

/** An `events` document in the xcomponent-ai `PersistedEvent` shape. */
export function eventFromDocument(d: Document): PersistedEvent {
  const ev = (d.event ?? {}) as Record<string, unknown>;
  const event: Record<string, any> = { type: ev.type, payload: ev.payload === undefined ? {} : decodeValue(ev.payload) };
  if (ev.timestamp !== null && ev.timestamp !== undefined) event.timestamp = num(ev.timestamp);
  for (const k of Object.keys(ev)) {
    if (k === 'type' || k === 'payload' || k === 'timestamp') continue;
    defineKey(event, unescapeKey(k), decodeValue(ev[k]));
  }
  const e: PersistedEvent = {
    id: typeof d._id === 'string' ? d._id : String(d.id ?? d._id),
    instanceId: d.instanceId,
    machineName: d.machineName,
    componentName: d.componentName,
    event: event as PersistedEvent['event'],
    stateBefore: d.stateBefore,
    stateAfter: d.stateAfter,
    persistedAt: num(d.persistedAt),
    causedBy: Array.isArray(d.causedBy) ? d.causedBy : [],
    // A set maintained with $addToSet: sorted, it reads the same whatever order children came in.
    caused: Array.isArray(d.caused) ? [...d.caused].sort() : [],
  };
  if (typeof d.sourceComponentName === 'string') e.sourceComponentName = d.sourceComponentName;
  if (typeof d.targetComponentName === 'string') e.targetComponentName = d.targetComponentName;
  const member = optional(d.publicMemberSnapshot);
  if (member !== undefined && member !== null) e.publicMemberSnapshot = member;
  return e;
}

/** A `snapshots` document in the xcomponent-ai `InstanceSnapshot` shape. */
export function snapshotFromDocument(d: Document): InstanceSnapshot {
  const i = (d.instance ?? {}) as Record<string, unknown>;
  const instance: InstanceSnapshot['instance'] = {
    id: i.id as string,
    machineName: i.machineName as string,
    currentState: i.currentState as string,
    context: i.context === undefined ? {} : decodeValue(i.context),
    createdAt: i.createdAt === null || i.createdAt === undefined ? 0 : num(i.createdAt),
    updatedAt: i.updatedAt === null || i.updatedAt === undefined ? 0 : num(i.updatedAt),
    status: i.status as InstanceSnapshot['instance']['status'],
  };
  const publicMember = optional(i.publicMember);
  if (publicMember !== undefined && publicMember !== null) instance.publicMember = publicMember;
  const internalMember = optional(i.internalMember);
  if (internalMember !== undefined && internalMember !== null) instance.internalMember = internalMember;
  if (typeof i.isEntryPoint === 'boolean') instance.isEntryPoint = i.isEntryPoint;
  if (typeof i.parentInstanceId === 'string') instance.parentInstanceId = i.parentInstanceId;
  if (typeof i.parentMachineName === 'string') instance.parentMachineName = i.parentMachineName;
  const s: InstanceSnapshot = {
    instance,
    snapshotAt: num(d.snapshotAt),
    lastEventId: typeof d.lastEventId === 'string' ? d.lastEventId : '',
  };
  if (Array.isArray(d.pendingTimeouts)) {
    s.pendingTimeouts = d.pendingTimeouts.map(
      (t: Record<string, unknown>): PendingTimeout => ({
        stateKey: t.stateKey as string,
        eventType: t.eventType as string,
        remainingMs: num(t.remainingMs),
      }),
    );
  }
  return s;
}

/** Reads the MongoDB projection of one database (default `xcomponent`). */
export class MongoReader implements ProjectionReader {
  readonly store = 'mongo' as const;

  private constructor(
    private readonly client: MongoClient,
    private readonly db: Db,
  ) {}

  /** Connects to `uri` (a `MONGODB_URI`); `mongodb` must be installed. */
  static async connect(uri: string, database = 'xcomponent'): Promise<MongoReader> {
    let mod: typeof import('mongodb');
    try {
      mod = await import('mongodb');
    } catch (e) {
      throw new Error(`reading from MongoDB needs the 'mongodb' package: npm install mongodb (${(e as Error).message})`);
    }
    // Bounded: a server that stops answering fails the read instead of hanging it.
    const client = new mod.MongoClient(uri, { maxPoolSize: 4, serverSelectionTimeoutMS: 10_000, connectTimeoutMS: 10_000, socketTimeoutMS: 60_000 });
    await client.connect();
    return new MongoReader(client, client.db(database));
  }

  private async events(filter: Document, sort: Document, limit?: number): Promise<PersistedEvent[]> {
    let cursor = this.db.collection('events').find(filter).sort(sort);
    if (limit !== undefined) cursor = cursor.limit(limit);
    const docs = await cursor.toArray();
    return docs.map(eventFromDocument);
  }

  async eventsOfInstance(instanceId: string): Promise<PersistedEvent[]> {
    const events = await this.events({ instanceId }, { 'source.offset': 1, persistedAt: 1, _id: 1 });
    return events;
  }

  eventsInTimeRange(from: number, to: number): Promise<PersistedEvent[]> {
    return everyPage((after) => this.range(from, to, after, PAGE));
  }

  private async range(from: number, to: number, after: string | undefined, limit: number): Promise<EventPage> {
    const filter: Document = { persistedAt: { $gte: from, $lte: to } };
    if (after !== undefined) {
      const [at, id] = parseTimeCursor(after);
      filter.$or = [{ persistedAt: { $gt: at } }, { persistedAt: at, _id: { $gt: id } }];
    }
    const found = await this.events(filter, { persistedAt: 1, _id: 1 }, limit + 1);
    const events = found.slice(0, limit);
    const last = events[events.length - 1];
    return found.length > limit && last ? { events, next: timeCursor(last) } : { events };
  }

  eventsCausedBy(eventId: string): Promise<PersistedEvent[]> {
    return this.events({ causedBy: eventId }, { persistedAt: 1, _id: 1 });
  }

  async newestEvents(limit: number): Promise<PersistedEvent[]> {
    const events = await this.events({}, { persistedAt: -1, _id: -1 }, limit);
    return events.reverse();
  }

  eventsPage(after: string | undefined, limit: number): Promise<EventPage> {
    return this.range(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, after, limit);
  }

  async snapshot(instanceId: string): Promise<InstanceSnapshot | null> {
    const d = await this.db.collection('snapshots').findOne({ 'instance.id': instanceId });
    return d ? snapshotFromDocument(d) : null;
  }

  async allSnapshots(): Promise<InstanceSnapshot[]> {
    const docs = await this.db.collection('snapshots').find({}).sort({ _id: 1 }).toArray();
    return docs.map(snapshotFromDocument);
  }

  async projections(topic: string): Promise<string[]> {
    const docs = await this.db.collection('xclog_offsets').find({ topic }).project({ projection: 1 }).toArray();
    return [...new Set(docs.map((d) => d.projection as string).filter((p) => typeof p === 'string'))].sort();
  }

  async storedOffsets(projection: string, topic: string): Promise<Map<number, number>> {
    const docs = await this.db.collection('xclog_offsets').find({ projection, topic }).toArray();
    const out = new Map<number, number>();
    for (const d of docs) {
      if (d.nextOffset !== undefined && d.nextOffset !== null) out.set(num(d.partition), num(d.nextOffset));
    }
    return out;
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}
