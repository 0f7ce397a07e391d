/**
 * What the stores need from a projected store: the xcomponent-ai queries, in the orders the
 * Rust read API (`projector/src/read/`) uses, and the projection's stored offsets for
 * read-your-writes. One implementation per store: `postgres.ts`, `mongo.ts`.
 */

import type { InstanceSnapshot, PersistedEvent } from '../types.js';

/** Largest page one query returns; longer listings are read a page at a time. */
export const PAGE = 5_000;

/** One page of events in `(persistedAt, id)` order. */
export interface EventPage {
  events: PersistedEvent[];
  /** Cursor of the next page; absent after the last one. */
  next?: string;
}

/** Reads one projected store (PostgreSQL tables or MongoDB collections). */
export interface ProjectionReader {
  /** The store's name for messages: `postgres` or `mongo`. */
  readonly store: 'postgres' | 'mongo';
  /** One instance's events in log order (partition offset, then time, then id). */
  eventsOfInstance(instanceId: string): Promise<PersistedEvent[]>;
  /** Events with `from <= persistedAt <= to`, by time then id. */
  eventsInTimeRange(from: number, to: number): Promise<PersistedEvent[]>;
  /** Events whose `causedBy` names `eventId`, by time then id. */
  eventsCausedBy(eventId: string): Promise<PersistedEvent[]>;
  /** The newest `limit` events, returned oldest first. */
  newestEvents(limit: number): Promise<PersistedEvent[]>;
  /** All events by time then id, a page at a time. */
  eventsPage(after: string | undefined, limit: number): Promise<EventPage>;
  /** The snapshot of one instance, or null. */
  snapshot(instanceId: string): Promise<InstanceSnapshot | null>;
  /** Every snapshot, by instance id. */
  allSnapshots(): Promise<InstanceSnapshot[]>;
  /** Names of the projections that store offsets of `topic`. */
  projections(topic: string): Promise<string[]>;
  /** `partition -> next offset to read` stored by `projection` for `topic`. */
  storedOffsets(projection: string, topic: string): Promise<Map<number, number>>;
  close(): Promise<void>;
}

/** Time-ordered cursor `t:<persistedAt>:<id>`, the format of the Rust read API. */
export function timeCursor(e: PersistedEvent): string {
  return `t:${e.persistedAt}:${e.id}`;
}

/** Parses a {@link timeCursor}; throws on a cursor this listing did not produce. */
export function parseTimeCursor(c: string): [number, string] {
  const m = /^t:(-?\d+):(.*)$/s.exec(c);
  if (!m) throw new Error(`invalid page cursor ${JSON.stringify(c)}: not a time-ordered cursor; start again from the first page`);
  return [Number(m[1]), m[2] ?? ''];
}

/** Reads a listing to its end, one page after another. */
export async function everyPage(page: (after: string | undefined) => Promise<EventPage>): Promise<PersistedEvent[]> {
  const out: PersistedEvent[] = [];
  let after: string | undefined;
  do {
    const p = await page(after);
    out.push(...p.events);
    after = p.next;
  } while (after !== undefined);
  return out;
}
