/**
 * xcomponent-ai's `EventStore` and `SnapshotStore` on xclog: writes are validated, encoded and
 * published to the topic (resolving once the broker acknowledged them); reads come from the
 * projected store, waiting for this process's own writes where the caller needs them.
 *
 * Which reads wait for the projection:
 * - `getEventsForInstance`, `getEventsByTimeRange`, `getCausedEvents`, `getSnapshot`,
 *   `getAllSnapshots` (history, traces, restore) wait;
 * - `getAllEvents` does not: the xcomponent-ai runtime calls it after every append with a
 *   cause only to push the new id into its parent's `caused` in memory, which the projectors
 *   already maintain in the store. Waiting there would put a projector commit on every
 *   transition.
 */

import type { ProjectionReader } from './read/index.js';
import type { ProjectionWait, Targets } from './projection.js';
import { mergeTargets, within } from './projection.js';
import type { Delivery, Publisher } from './publisher.js';
import type { InstanceSnapshot, PersistedEvent } from './types.js';
import { type WireLimits, DEFAULT_LIMITS, encodeEvent, encodeSnapshot, encodeSnapshotDeletion } from './wire.js';

/** Default number of events `getAllEvents()` returns: the newest ones, oldest first. */
export const DEFAULT_ALL_EVENTS_LIMIT = 1_000;

/** What the two stores share: the publisher, the reader and the projection wait. */
export class XclogConnection {
  /** The topic's end offsets at connect: the first waiting read waits for them too. */
  private floor: Targets;

  constructor(
    readonly publisher: Publisher,
    readonly reader: ProjectionReader,
    readonly projection: ProjectionWait,
    startOffsets: Map<number, number>,
    readonly limits: WireLimits = DEFAULT_LIMITS,
  ) {
    this.floor = new Map([...startOffsets].filter(([, end]) => end > 0).map(([p, end]) => [p, end - 1]));
  }

  /** Waits until the projection holds everything this process wrote (no-op when waiting is off). */
  async readYourWrites(): Promise<void> {
    if (!this.projection.enabled) return;
    await this.projection.waitFor(mergeTargets(this.floor, this.publisher.acknowledged()));
  }

  /**
   * Waits until the projection has caught up with the topic's end as it is now (everything
   * any process had published), e.g. before `runtime.restore()`. Waits even when reads do not.
   */
  async waitForProjection(timeoutMs?: number): Promise<void> {
    const end = await this.publisher.endOffsets();
    const targets: Targets = new Map([...end].filter(([, e]) => e > 0).map(([p, e]) => [p, e - 1]));
    await this.projection.waitFor(mergeTargets(targets, this.publisher.acknowledged()), timeoutMs);
  }
}

/** Longest a read of `getAllEvents()`'s store page may take. */
const STORE_PAGE_TIMEOUT_MS = 10_000;

/** Default longest age of the store page `getAllEvents()` answers from. */
export const DEFAULT_ALL_EVENTS_MAX_AGE_MS = 250;

/** The newest events of the store as read at `at`, and their ids. */
interface StorePage {
  events: PersistedEvent[];
  ids: Set<string>;
  at: number;
}

/** Time order, then id: the order of every event listing. */
function byTime(a: PersistedEvent, b: PersistedEvent): number {
  return a.persistedAt - b.persistedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Options of {@link XclogEventStore}. */
export interface EventStoreOptions {
  /** How many events `getAllEvents()` returns, newest first chosen, oldest first returned (default 1,000). */
  allEventsLimit?: number;
  /**
   * Age in ms at which the store page `getAllEvents()` answers from is read again, in the
   * background (default 250; 0 reads the store on every call and waits for it). This process's
   * own appends are always in the answer.
   */
  allEventsMaxAgeMs?: number;
}

/** xcomponent-ai's `EventStore` on xclog. */
export class XclogEventStore {
  private readonly allEventsLimit: number;
  private readonly allEventsMaxAgeMs: number;
  /** The newest events of the store, and when they were read. */
  private storePage: StorePage | undefined;
  private storeRead: Promise<StorePage> | undefined;
  /** This process's newest appends (at most `allEventsLimit`), oldest first. */
  private readonly recent: PersistedEvent[] = [];

  constructor(
    private readonly conn: XclogConnection,
    options: EventStoreOptions = {},
  ) {
    this.allEventsLimit = options.allEventsLimit ?? DEFAULT_ALL_EVENTS_LIMIT;
    this.allEventsMaxAgeMs = options.allEventsMaxAgeMs ?? DEFAULT_ALL_EVENTS_MAX_AGE_MS;
    if (!Number.isInteger(this.allEventsLimit) || this.allEventsLimit < 1) {
      throw new Error(`allEventsLimit must be a positive integer, found ${options.allEventsLimit}`);
    }
    if (!(this.allEventsMaxAgeMs >= 0)) {
      throw new Error(`allEventsMaxAgeMs must be 0 or more, found ${options.allEventsMaxAgeMs}`);
    }
  }

  /**
   * Publishes the event; resolves once the broker acknowledged it. A record the projectors
   * would refuse is rejected with an `XclogRecordError` naming the field, and nothing is sent.
   */
  async append(event: PersistedEvent): Promise<void> {
    await this.publish(event);
  }

  /** {@link append}, resolving with where the broker stored the event. */
  async publish(event: PersistedEvent & { sequence?: number | bigint }): Promise<Delivery> {
    const delivery = await this.conn.publisher.send(encodeEvent(event, this.conn.limits));
    this.recent.push({ ...event, caused: [...(event.caused ?? [])] });
    if (this.recent.length > this.allEventsLimit) this.recent.splice(0, this.recent.length - this.allEventsLimit);
    return delivery;
  }

  /** One instance's events in log order (waits for this process's writes). */
  async getEventsForInstance(instanceId: string): Promise<PersistedEvent[]> {
    await this.conn.readYourWrites();
    return this.conn.reader.eventsOfInstance(instanceId);
  }

  /** Events with `startTime <= persistedAt <= endTime`, by time (waits for this process's writes). */
  async getEventsByTimeRange(startTime: number, endTime: number): Promise<PersistedEvent[]> {
    await this.conn.readYourWrites();
    return this.conn.reader.eventsInTimeRange(startTime, endTime);
  }

  /** The events whose `causedBy` names `eventId`, by time (waits for this process's writes). */
  async getCausedEvents(eventId: string): Promise<PersistedEvent[]> {
    await this.conn.readYourWrites();
    return this.conn.reader.eventsCausedBy(eventId);
  }

  /**
   * The newest `allEventsLimit` events (default 1,000), oldest first, without waiting for the
   * projection: a page of the store's newest events, read again in the background once it is
   * `allEventsMaxAgeMs` old (default 250 ms), together with this process's own appends, which
   * are always included. As with xcomponent-ai's in-memory store, the event objects are shared
   * between calls until the page is read again, so an in-memory patch of `caused` is seen by
   * the next call. Use {@link getAllEventsPage} or {@link allEvents} to read everything.
   */
  async getAllEvents(): Promise<PersistedEvent[]> {
    const page = await this.newestStored();
    // Own appends the page does not hold yet (usually the newest few), after the page.
    const extra = this.recent.filter((e) => !page.ids.has(e.id));
    if (extra.length === 0) return page.events.slice();
    let merged = page.events.concat(extra);
    const last = page.events[page.events.length - 1];
    const ordered = extra.every((e, i) => (i === 0 ? !last || byTime(last, e) <= 0 : byTime(extra[i - 1] as PersistedEvent, e) <= 0));
    if (!ordered) merged = merged.sort(byTime);
    return merged.length > this.allEventsLimit ? merged.slice(merged.length - this.allEventsLimit) : merged;
  }

  /**
   * The newest page of the store. A page older than `allEventsMaxAgeMs` is answered from while
   * a fresh one is read in the background, so a call never waits for the read (reading 1,000
   * rows takes about 20 ms); only the first call, or one whose page is over 5 s old (the store
   * did not answer), waits for it, and sees its error.
   */
  private async newestStored(): Promise<StorePage> {
    const page = this.storePage;
    const age = page ? Date.now() - page.at : Infinity;
    if (age > this.allEventsMaxAgeMs && !this.storeRead) {
      const at = Date.now();
      // Bounded, so that a read the store never answers cannot hold every later call.
      this.storeRead = within(
        this.conn.reader.newestEvents(this.allEventsLimit),
        STORE_PAGE_TIMEOUT_MS,
        () => new Error(`reading the newest ${this.allEventsLimit} events from the ${this.conn.reader.store} store took over ${STORE_PAGE_TIMEOUT_MS} ms`),
      )
        .then((events) => {
          this.storePage = { events, ids: new Set(events.map((e) => e.id)), at };
          return this.storePage;
        })
        .finally(() => {
          this.storeRead = undefined;
        });
      // A background read's failure is seen by the next call that has to wait for one.
      this.storeRead.catch(() => {});
    }
    if (page && this.allEventsMaxAgeMs > 0 && age <= Math.max(5_000, this.allEventsMaxAgeMs)) return page;
    return this.storeRead ?? (this.storePage as StorePage);
  }

  /** All events by time, one page at a time: pass the previous page's `next`. */
  async getAllEventsPage(after?: string, limit = 1_000): Promise<{ events: PersistedEvent[]; next?: string }> {
    await this.conn.readYourWrites();
    return this.conn.reader.eventsPage(after, Math.max(1, Math.min(limit, 10_000)));
  }

  /** Every event by time, read a page at a time. */
  async *allEvents(pageSize = 1_000): AsyncGenerator<PersistedEvent> {
    let after: string | undefined;
    do {
      const page = await this.getAllEventsPage(after, pageSize);
      yield* page.events;
      after = page.next;
    } while (after !== undefined);
  }
}

/** xcomponent-ai's `SnapshotStore` on xclog. */
export class XclogSnapshotStore {
  constructor(private readonly conn: XclogConnection) {}

  /** Publishes the snapshot; resolves once the broker acknowledged it. */
  async saveSnapshot(snapshot: InstanceSnapshot): Promise<void> {
    await this.publish(snapshot);
  }

  /** {@link saveSnapshot}, resolving with where the broker stored the snapshot. */
  async publish(snapshot: InstanceSnapshot & { sequence?: number | bigint }): Promise<Delivery> {
    return this.conn.publisher.send(encodeSnapshot(snapshot, this.conn.limits));
  }

  /** The latest snapshot of an instance, or null (waits for this process's writes). */
  async getSnapshot(instanceId: string): Promise<InstanceSnapshot | null> {
    await this.conn.readYourWrites();
    return this.conn.reader.snapshot(instanceId);
  }

  /** Every snapshot, by instance id (waits for this process's writes). */
  async getAllSnapshots(): Promise<InstanceSnapshot[]> {
    await this.conn.readYourWrites();
    return this.conn.reader.allSnapshots();
  }

  /**
   * Publishes a snapshot deletion; resolves once the broker acknowledged it. Both projectors
   * apply it in log order, so it survives a rebuild and a later snapshot brings one back.
   */
  async deleteSnapshot(instanceId: string): Promise<void> {
    await this.conn.publisher.send(
      encodeSnapshotDeletion({ instanceId, snapshotDeletedAt: Date.now() }, this.conn.limits),
    );
  }
}
