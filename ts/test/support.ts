// Test support for the integration suites: the real services of the local stack
// (`scripts/stack.sh up`), fresh topics and databases per test, and the `xclog` binary.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import type { KafkaJS } from '@confluentinc/kafka-javascript';

const run = promisify(execFile);
const require = createRequire(import.meta.url);

export const brokers = process.env.XCLOG_KAFKA_BROKERS ?? '127.0.0.1:9092';
export const databaseUrl = process.env.DATABASE_URL ?? 'postgres://xclog:xclog@127.0.0.1:5432/xclog';
export const mongoUri = process.env.MONGODB_URI ?? 'mongodb://127.0.0.1:27017/';

/** The repository root (this file runs from ts/build/test/). */
export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const target = process.env.CARGO_TARGET_DIR ?? path.join(repo, 'target');
export const xclogBin = path.join(target, 'debug', 'xclog');
export const logDir = path.join(process.env.XCLOG_HOME ?? '/var/tmp/xclog', 'run', 'ts-tests');

/** A name unique to this run: `prefix-<time>-<random>`. */
export function unique(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
}

/** Builds a cargo binary or example of the workspace unless it is there already. */
export async function cargoBuilt(kind: 'bin' | 'example', pkg: string, name: string): Promise<string> {
  const out = kind === 'bin' ? path.join(target, 'debug', name) : path.join(target, 'debug', 'examples', name);
  if (!existsSync(out)) {
    await run('cargo', ['build', '-q', '-p', pkg, `--${kind}`, name], { cwd: repo, maxBuffer: 1 << 26 });
  }
  return out;
}

/** Runs `xclog ARGS` and returns its standard output (throws with stderr on a non-zero exit). */
export async function xclog(args: string[], env: Record<string, string> = {}): Promise<string> {
  await cargoBuilt('bin', 'xclog-cli', 'xclog');
  try {
    const { stdout } = await run(xclogBin, args, { env: { ...process.env, ...env }, maxBuffer: 1 << 28 });
    return stdout;
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    throw new Error(`xclog ${args.join(' ')} exited ${err.code}: ${err.stderr ?? ''}${err.stdout ?? ''}`);
  }
}

/** Runs `xclog ARGS` and returns its exit code and output, whatever the code. */
export async function xclogStatus(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  await cargoBuilt('bin', 'xclog-cli', 'xclog');
  try {
    const { stdout, stderr } = await run(xclogBin, args, { maxBuffer: 1 << 28 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

function kafka(): KafkaJS.Kafka {
  const { KafkaJS: K } = require('@confluentinc/kafka-javascript') as typeof import('@confluentinc/kafka-javascript');
  return new K.Kafka({});
}

/** Creates a topic with infinite retention, as `xclog produce --partitions` does. */
export async function createTopic(topic: string, partitions: number): Promise<void> {
  const admin = kafka().admin({ 'bootstrap.servers': brokers, log_level: 3 } as KafkaJS.AdminConstructorConfig);
  await admin.connect();
  try {
    await admin.createTopics({
      topics: [{ topic, numPartitions: partitions, replicationFactor: 1, configEntries: [{ name: 'retention.ms', value: '-1' }] }],
    });
  } finally {
    await admin.disconnect();
  }
}

/** Every record of a topic, read from the start: key, partition, offset, headers and value. */
export interface TopicRecord {
  key: string | null;
  partition: number;
  offset: number;
  headers: Record<string, string>;
  value: string;
}

/** Reads a topic from the beginning up to its current end. */
export async function readTopic(topic: string): Promise<TopicRecord[]> {
  const k = kafka();
  const admin = k.admin({ 'bootstrap.servers': brokers, log_level: 3 } as KafkaJS.AdminConstructorConfig);
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const total = ends.reduce((n, o) => n + Number(o.high) - Number(o.low), 0);
  const out: TopicRecord[] = [];
  if (total === 0) return out;
  const consumer = k.consumer({
    'bootstrap.servers': brokers,
    'group.id': unique('ts-read'),
    'auto.offset.reset': 'earliest',
    'enable.auto.commit': false,
    log_level: 3,
  } as KafkaJS.ConsumerConstructorConfig);
  await consumer.connect();
  await consumer.subscribe({ topics: [topic] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${out.length} of ${total} records of ${topic}`)), 60_000);
    consumer
      .run({
        eachMessage: async ({ partition, message }) => {
          const headers: Record<string, string> = {};
          for (const [hk, hv] of Object.entries(message.headers ?? {})) headers[hk] = String(Array.isArray(hv) ? hv[0] : hv);
          out.push({
            key: message.key ? message.key.toString() : null,
            partition,
            offset: Number(message.offset),
            headers,
            value: message.value ? message.value.toString() : '',
          });
          if (out.length >= total) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return out;
}

/** A fresh PostgreSQL database; returns its URL. */
export async function freshPgDatabase(name: string): Promise<string> {
  const pg = (await import('pg')).default;
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const u = new URL(databaseUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

/** A running `xclog project` daemon. */
export class Projector {
  private exited: Promise<number | null>;
  private constructor(
    readonly child: ChildProcess,
    readonly log: string,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /** Starts `xclog project --target TARGET` on `topic`, logging to a file under logDir. */
  static async start(
    targetStore: 'postgres' | 'mongo',
    topic: string,
    opts: { databaseUrl?: string; mongoDatabase?: string; group: string; httpPort: number },
  ): Promise<Projector> {
    await cargoBuilt('bin', 'xclog-cli', 'xclog');
    mkdirSync(logDir, { recursive: true });
    const log = path.join(logDir, `${opts.group}.log`);
    const args = ['project', '--target', targetStore, '--topic', topic, '--group', opts.group, '--http-addr', `127.0.0.1:${opts.httpPort}`];
    if (opts.databaseUrl) args.push('--database-url', opts.databaseUrl);
    if (opts.mongoDatabase) args.push('--mongodb-database', opts.mongoDatabase);
    const fd = openSync(log, 'a');
    const child = spawn(xclogBin, args, {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, XCLOG_KAFKA_BROKERS: brokers, MONGODB_URI: mongoUri, XCLOG_BATCH_MAX_LATENCY_MS: '20' },
    });
    return new Projector(child, log);
  }

  /** SIGTERM (drain and commit), then waits for the exit. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const timeout = new Promise<null>((r) => setTimeout(() => r(null), 60_000));
    const code = await Promise.race([this.exited, timeout]);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    return code;
  }
}

/** Waits until a projection holds the whole topic (`xclog status --wait`). */
export async function caughtUp(
  targetStore: 'postgres' | 'mongo',
  topic: string,
  group: string,
  db: { databaseUrl?: string; mongoDatabase?: string },
  seconds = 120,
): Promise<void> {
  const args = ['status', '--target', targetStore, '--topic', topic, '--group', group, '--wait', String(seconds)];
  if (db.databaseUrl) args.push('--database-url', db.databaseUrl);
  if (db.mongoDatabase) args.push('--mongodb-database', db.mongoDatabase);
  await xclog(args, { XCLOG_KAFKA_BROKERS: brokers, MONGODB_URI: mongoUri });
}
