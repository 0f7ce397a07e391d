/**
 * Read-your-writes: a read that must see this process's writes waits until the projection
 * it reads has stored offsets past every offset the broker acknowledged to this process
 * (and, for the first such read, past the topic's end as it was at connect, so a restarted
 * runtime's `restore()` sees what the previous process wrote). The wait is bounded; past it
 * the read fails with {@link XclogProjectionLagError}, naming the projection and the partition
 * that lags.
 */

import type { ProjectionReader } from './read/index.js';

/** A projection that did not reach the offsets a read waits for in time. */
export class XclogProjectionLagError extends Error {
  override readonly name = 'XclogProjectionLagError';
  constructor(
    message: string,
    readonly projection: string | undefined,
    readonly partition: number | undefined,
    readonly storedOffset: number | undefined,
    readonly wantedOffset: number | undefined,
  ) {
    super(message);
  }
}

/** How reads wait for the projection. */
export interface WaitOptions {
  /** Name of the projection to wait for; default: the one projection of the topic in the store. */
  projection?: string;
  /** Whether reads wait at all (default true). */
  wait?: boolean;
  /** Longest wait of one read, in ms (default 5,000). */
  waitTimeoutMs?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `p`, or a rejection with `error()` once `ms` have passed. */
export function within<T>(p: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(error()), Math.max(0, ms));
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** `partition -> offset that must be stored as passed` (stored next offset > this). */
export type Targets = Map<number, number>;

/** Merges `b` into `a`, keeping the higher offset per partition. */
export function mergeTargets(a: Targets, b: Targets): Targets {
  const out = new Map(a);
  for (const [p, o] of b) {
    const cur = out.get(p);
    if (cur === undefined || o > cur) out.set(p, o);
  }
  return out;
}

/** The first partition whose stored next offset has not passed its target, if any. */
export function firstLagging(targets: Targets, stored: Map<number, number>): [number, number, number | undefined] | undefined {
  for (const [p, o] of [...targets].sort((x, y) => x[0] - y[0])) {
    const s = stored.get(p);
    if (s === undefined || s <= o) return [p, o, s];
  }
  return undefined;
}

/** Tracks one projection of one topic in one store. */
export class ProjectionWait {
  private name: string | undefined;
  /** Stored next offsets already seen: reads with nothing new to wait for skip the store. */
  private reached: Targets = new Map();
  readonly enabled: boolean;
  readonly timeoutMs: number;

  constructor(
    private readonly reader: ProjectionReader,
    private readonly topic: string,
    options: WaitOptions,
  ) {
    this.name = options.projection;
    this.enabled = options.wait ?? true;
    this.timeoutMs = options.waitTimeoutMs ?? 5_000;
  }

  /** The projection's name, found in the store when not configured. */
  async projection(deadline: number): Promise<string> {
    if (this.name !== undefined) return this.name;
    for (let pause = 10; ; pause = Math.min(pause * 2, 200)) {
      const found = await within(this.reader.projections(this.topic), Math.max(deadline - Date.now(), 1_000), () =>
        new XclogProjectionLagError(
          `the ${this.reader.store} store did not answer for the projections of topic ${this.topic} within ${this.timeoutMs} ms`,
          undefined,
          undefined,
          undefined,
          undefined,
        ),
      );
      if (found.length === 1) {
        this.name = found[0] as string;
        return this.name;
      }
      if (found.length > 1) {
        throw new XclogProjectionLagError(
          `the ${this.reader.store} store holds several projections of topic ${this.topic} (${found.join(', ')}); ` +
            'name the one to read with read.projection',
          undefined,
          undefined,
          undefined,
          undefined,
        );
      }
      if (Date.now() >= deadline) {
        throw new XclogProjectionLagError(
          `no projection of topic ${this.topic} has stored anything in the ${this.reader.store} store yet ` +
            `(waited ${this.timeoutMs} ms): start one with xclog project --target ${this.reader.store} --topic ${this.topic}`,
          undefined,
          undefined,
          undefined,
          undefined,
        );
      }
      await sleep(pause);
    }
  }

  /** Waits until every target is passed, or fails after the timeout. */
  async waitFor(targets: Targets, timeoutMs = this.timeoutMs): Promise<void> {
    if (targets.size === 0 || firstLagging(targets, this.reached) === undefined) return;
    const deadline = Date.now() + timeoutMs;
    const projection = await this.projection(deadline);
    for (let pause = 2; ; pause = Math.min(pause * 2, 50)) {
      const stored = await within(
        this.reader.storedOffsets(projection, this.topic),
        // At least a second: a query started just before the deadline still gets its answer,
        // so that the error says which partition lags.
        Math.max(deadline - Date.now(), 1_000),
        () =>
          new XclogProjectionLagError(
            `the ${this.reader.store} store did not answer for the stored offsets of projection ${projection} ` +
              `of topic ${this.topic} within ${timeoutMs} ms`,
            projection,
            undefined,
            undefined,
            undefined,
          ),
      );
      const lag = firstLagging(targets, stored);
      if (lag === undefined) {
        // The stored next offsets: any later target at or below them needs no query.
        this.reached = mergeTargets(this.reached, stored);
        return;
      }
      if (Date.now() >= deadline) {
        const [partition, wanted, at] = lag;
        throw new XclogProjectionLagError(
          `projection ${projection} of topic ${this.topic} in the ${this.reader.store} store has not caught up ` +
            `within ${timeoutMs} ms: partition ${partition} is at offset ${at ?? 'none (nothing stored yet)'}, ` +
            `the read waits for offset ${wanted} to be stored; is xclog project --target ${this.reader.store} running?`,
          projection,
          partition,
          at,
          wanted,
        );
      }
      await sleep(pause);
    }
  }
}
