/**
 * Publishing to the xclog topic with Confluent's client on librdkafka, set up as the Rust
 * `xclog-producer` is: idempotence on, `acks=all`, key = instance id, librdkafka's own
 * `consistent_random` partitioner (CRC32 of the key, the Rust producer's default, so both
 * place every key on the same partition), the WIRE-FORMAT headers.
 *
 * A send resolves when the broker has acknowledged the record, with its partition and offset;
 * the publisher keeps the highest acknowledged offset per partition, which is what a read
 * that must see its own writes waits for.
 */

import { createRequire } from 'node:module';

import type { KafkaJS } from '@confluentinc/kafka-javascript';

import { type EncodedRecord, headersOf } from './wire.js';

/** Kafka settings of the publisher. */
export interface PublisherOptions {
  /** Bootstrap brokers, `host:port[,host:port]`. */
  brokers: string;
  /** The xclog topic. */
  topic: string;
  /**
   * How long librdkafka waits to fill a batch (`linger.ms`). Default 0: an xcomponent-ai
   * runtime awaits each append before its next transition, so any linger is added to every
   * transition (5 ms caps one awaiting caller near 170 appends/s).
   */
  lingerMs?: number;
  /** How long a record may take to be acknowledged before the send fails (default 30 s). */
  deliveryTimeoutMs?: number;
  /** Client id shown in broker logs (default `xclog-ts`). */
  clientId?: string;
  /**
   * Further librdkafka settings (TLS, SASL, ...). The settings that make the contract
   * (idempotence, acks, partitioner) cannot be changed here.
   */
  kafka?: Record<string, string | number | boolean>;
}

/** Where the broker stored a record. */
export interface Delivery {
  topic: string;
  partition: number;
  offset: number;
}

/** A record the broker did not acknowledge: it may or may not be in the log. */
export class XclogPublishError extends Error {
  override readonly name = 'XclogPublishError';
  constructor(
    message: string,
    readonly code: number | undefined,
    override readonly cause: unknown,
  ) {
    super(message);
  }
}

const OWNED = new Set(['enable.idempotence', 'acks', 'request.required.acks', 'partitioner', 'dr_cb', 'dr_msg_cb']);

const require = createRequire(import.meta.url);

/** Loads the client (a native addon; a clear error if it did not build). */
function loadClient(): typeof import('@confluentinc/kafka-javascript') {
  try {
    return require('@confluentinc/kafka-javascript') as typeof import('@confluentinc/kafka-javascript');
  } catch (e) {
    throw new Error(
      `@confluentinc/kafka-javascript could not be loaded (${(e as Error).message}); ` +
        'where no prebuilt binary can be downloaded it builds librdkafka from source: ' +
        'install a C toolchain, python3, libssl-dev and zlib1g-dev, then run npm install with CKJS_LINKING=dynamic',
    );
  }
}

/** The librdkafka settings of the publisher (exported for the contract test). */
export function producerConfig(o: PublisherOptions): Record<string, string | number | boolean> {
  for (const k of Object.keys(o.kafka ?? {})) {
    if (OWNED.has(k)) {
      throw new Error(`kafka setting '${k}' is fixed by xclog (idempotence on, acks=all, the Rust producer's partitioner)`);
    }
  }
  return {
    ...(o.kafka ?? {}),
    'bootstrap.servers': o.brokers,
    'client.id': o.clientId ?? 'xclog-ts',
    'enable.idempotence': true,
    acks: -1,
    partitioner: 'consistent_random',
    'linger.ms': o.lingerMs ?? 0,
    'message.timeout.ms': o.deliveryTimeoutMs ?? 30_000,
    // Room for a 1,000,000-byte value (the package's record limit) with its key and headers;
    // the broker's default limit for a batch is 1,048,588 bytes.
    'message.max.bytes': 1_048_576,
    log_level: 3,
  };
}

/** Publishes encoded records to one topic and remembers what the broker acknowledged. */
export class Publisher {
  private readonly acked = new Map<number, number>();
  private closed = false;

  private constructor(
    readonly topic: string,
    private readonly producer: KafkaJS.Producer,
    private readonly admin: KafkaJS.Admin,
  ) {}

  /** Connects a producer (and an admin client for end offsets) to the brokers. */
  static async connect(o: PublisherOptions): Promise<Publisher> {
    const { KafkaJS: K } = loadClient();
    const kafka = new K.Kafka({});
    const config = producerConfig(o);
    const producer = kafka.producer(config as KafkaJS.ProducerConstructorConfig);
    const admin = kafka.admin({
      'bootstrap.servers': o.brokers,
      log_level: 3,
      ...filterAdmin(o.kafka ?? {}),
    } as KafkaJS.AdminConstructorConfig);
    await producer.connect();
    try {
      await admin.connect();
    } catch (e) {
      await producer.disconnect().catch(() => {});
      throw e;
    }
    return new Publisher(o.topic, producer, admin);
  }

  /** Sends one record; resolves once the broker acknowledged it. */
  async send(record: EncodedRecord): Promise<Delivery> {
    if (this.closed) throw new XclogPublishError('the xclog publisher is closed', undefined, undefined);
    let md: KafkaJS.RecordMetadata[];
    try {
      md = await this.producer.send({
        topic: this.topic,
        messages: [{ key: record.key, value: record.value, headers: headersOf(record.kind) }],
      });
    } catch (e) {
      const code = (e as { code?: number }).code;
      throw new XclogPublishError(
        `publishing a ${record.kind} of instance ${JSON.stringify(record.key)} to ${this.topic} failed: ${(e as Error).message}`,
        code,
        e,
      );
    }
    const m = md[0];
    if (!m || m.baseOffset === undefined || m.baseOffset === null) {
      throw new XclogPublishError(`the broker acknowledged a record on ${this.topic} without an offset`, undefined, md);
    }
    const offset = Number(m.baseOffset);
    const previous = this.acked.get(m.partition);
    if (previous === undefined || offset > previous) this.acked.set(m.partition, offset);
    return { topic: this.topic, partition: m.partition, offset };
  }

  /** The highest acknowledged offset per partition of everything this publisher sent. */
  acknowledged(): Map<number, number> {
    return new Map(this.acked);
  }

  /** The topic's current end offsets (`partition -> next offset to be written`). */
  async endOffsets(): Promise<Map<number, number>> {
    const offsets = await this.admin.fetchTopicOffsets(this.topic);
    return new Map(offsets.map((o) => [o.partition, Number(o.high)]));
  }

  /** Waits for everything sent to be acknowledged, then disconnects. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.producer.flush({ timeout: 30_000 });
    } finally {
      await Promise.allSettled([this.producer.disconnect(), this.admin.disconnect()]);
    }
  }
}

/** The connection settings of `kafka` that an admin client takes too (TLS, SASL). */
function filterAdmin(kafka: Record<string, string | number | boolean>): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(kafka)) {
    if (k.startsWith('security.') || k.startsWith('ssl.') || k.startsWith('sasl.') || k === 'client.dns.lookup') out[k] = v;
  }
  return out;
}
