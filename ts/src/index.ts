/**
 * `@xclog/xcomponent`: xcomponent-ai's `EventStore` and `SnapshotStore` on xclog.
 *
 * ```ts
 * const { eventStore, snapshotStore, close } = await connectXclog({
 *   brokers: '127.0.0.1:9092', topic: 'xclog.events',
 *   read: { postgres: process.env.DATABASE_URL },
 * });
 * ```
 *
 * Writes (`append`, `saveSnapshot`, `deleteSnapshot`) go to the Kafka topic and resolve once
 * the broker acknowledged them (`wire.ts` validates first, `publisher.ts` sends). Reads come
 * from the store an `xclog project` daemon materializes (`read/`), and wait for this process's
 * own writes to be projected (`projection.ts`), except `getAllEvents` (`stores.ts` says why).
 */

import { MongoReader } from './read/mongo.js';
import { PostgresReader } from './read/postgres.js';
import type { ProjectionReader } from './read/index.js';
import { ProjectionWait, type WaitOptions } from './projection.js';
import { Publisher, type PublisherOptions } from './publisher.js';
import { type EventStoreOptions, XclogConnection, XclogEventStore, XclogSnapshotStore } from './stores.js';
import { DEFAULT_LIMITS, type WireLimits } from './wire.js';

export type { FSMEvent, FSMInstance, InstanceSnapshot, PendingTimeout, PersistedEvent } from './types.js';
export { XclogConnection, XclogEventStore, XclogSnapshotStore, DEFAULT_ALL_EVENTS_LIMIT } from './stores.js';
export type { EventStoreOptions } from './stores.js';
export { XclogProjectionLagError } from './projection.js';
export type { WaitOptions } from './projection.js';
export { Publisher, XclogPublishError, producerConfig } from './publisher.js';
export type { Delivery, PublisherOptions } from './publisher.js';
export {
  DEFAULT_LIMITS,
  SCHEMA_VERSION,
  XclogRecordError,
  encodeEvent,
  encodeRecord,
  encodeSnapshot,
  encodeSnapshotDeletion,
  headersOf,
} from './wire.js';
export type { EncodedRecord, RecordErrorKind, RecordKind, SnapshotDeletion, WireLimits } from './wire.js';
export { PostgresReader } from './read/postgres.js';
export { MongoReader } from './read/mongo.js';
export type { ProjectionReader } from './read/index.js';

/** Where reads come from: the PostgreSQL or the MongoDB projection. */
export type ReadOptions = WaitOptions &
  ({ postgres: string; mongo?: undefined } | { mongo: string; database?: string; postgres?: undefined });

/** Options of {@link connectXclog}. */
export interface ConnectOptions extends Omit<PublisherOptions, 'topic' | 'brokers'>, EventStoreOptions {
  /** Bootstrap brokers, `host:port[,host:port]`. */
  brokers: string;
  /** The xclog topic (it must exist). */
  topic: string;
  /** The projected store to read, and how reads wait for it. */
  read: ReadOptions;
  /** Limits records are checked against before publishing (default: WIRE-FORMAT section 3.4). */
  limits?: WireLimits;
}

/** What {@link connectXclog} gives. */
export interface XclogStores {
  eventStore: XclogEventStore;
  snapshotStore: XclogSnapshotStore;
  /** Waits until the projection has caught up with the topic's end (e.g. before `restore()`). */
  waitForProjection(timeoutMs?: number): Promise<void>;
  /** Waits for every send to be acknowledged, then disconnects from Kafka and the store. */
  close(): Promise<void>;
}

/** Connects to Kafka and to the projected store, and returns the two stores. */
export async function connectXclog(options: ConnectOptions): Promise<XclogStores> {
  const { read } = options;
  if (!options.brokers) throw new Error('connectXclog: brokers is required (for example 127.0.0.1:9092)');
  if (!options.topic) throw new Error('connectXclog: topic is required (for example xclog.events)');
  if (!read || (typeof read.postgres !== 'string' && typeof read.mongo !== 'string')) {
    throw new Error('connectXclog: read must name a store: { postgres: DATABASE_URL } or { mongo: MONGODB_URI, database }');
  }
  const reader: ProjectionReader =
    typeof read.postgres === 'string'
      ? await PostgresReader.connect(read.postgres)
      : await MongoReader.connect(read.mongo as string, (read as { database?: string }).database ?? 'xcomponent');
  let publisher: Publisher | undefined;
  try {
    publisher = await Publisher.connect({ ...options, brokers: options.brokers, topic: options.topic });
    const start = await publisher.endOffsets().catch((e: Error) => {
      throw new Error(`topic ${options.topic} cannot be read from ${options.brokers}: ${e.message} (does it exist?)`);
    });
    if (start.size === 0) throw new Error(`topic ${options.topic} does not exist on ${options.brokers}`);
    const conn = new XclogConnection(
      publisher,
      reader,
      new ProjectionWait(reader, options.topic, read),
      start,
      options.limits ?? DEFAULT_LIMITS,
    );
    const eventStore = new XclogEventStore(conn, options);
    const snapshotStore = new XclogSnapshotStore(conn);
    const pub = publisher;
    return {
      eventStore,
      snapshotStore,
      waitForProjection: (timeoutMs?: number) => conn.waitForProjection(timeoutMs),
      close: async () => {
        try {
          await pub.close();
        } finally {
          await reader.close();
        }
      },
    };
  } catch (e) {
    await publisher?.close().catch(() => {});
    await reader.close().catch(() => {});
    throw e;
  }
}
