/**
 * Reads the PostgreSQL projection (`fsm_events`, `fsm_snapshots`, `xclog_offsets`, written by
 * `xclog project --target postgres`) back into the xcomponent-ai shapes: `event.timestamp` from
 * its own column, the event's other keys from `event_extra`, BIGINT columns as numbers, and no
 * xclog-only column (sequence, source position) in the result.
 */

import type pg from 'pg';

import type { InstanceSnapshot, PendingTimeout, PersistedEvent } from '../types.js';
import { defineKey } from '../wire.js';
import { type EventPage, type ProjectionReader, PAGE, everyPage, parseTimeCursor, timeCursor } from './index.js';

const EVENT_COLUMNS = `id, instance_id, machine_name, component_name, event_type, event_payload,
  state_before, state_after, persisted_at, caused_by, caused, source_component_name,
  target_component_name, event_timestamp, event_extra, public_member_snapshot, source_offset`;

const SNAPSHOT_COLUMNS = `instance_id, machine_name, current_state, status, context, public_member,
  snapshot_at, last_event_id, pending_timeouts, internal_member, is_entry_point,
  parent_instance_id, parent_machine_name, instance_created_at, instance_updated_at`;

interface EventRow {
  id: string;
  instance_id: string;
  machine_name: string;
  component_name: string;
  event_type: string;
  event_payload: Record<string, unknown>;
  state_before: string;
  state_after: string;
  persisted_at: string;
  caused_by: string[] | null;
  caused: string[] | null;
  source_component_name: string | null;
  target_component_name: string | null;
  event_timestamp: string | null;
  event_extra: Record<string, unknown> | null;
  public_member_snapshot: unknown;
  source_offset: string | null;
}

interface SnapshotRow {
  instance_id: string;
  machine_name: string;
  current_state: string;
  status: 'active' | 'completed' | 'error';
  context: Record<string, any>;
  public_member: Record<string, any> | null;
  snapshot_at: string;
  last_event_id: string;
  pending_timeouts: PendingTimeout[] | null;
  internal_member: Record<string, any> | null;
  is_entry_point: boolean | null;
  parent_instance_id: string | null;
  parent_machine_name: string | null;
  instance_created_at: string | null;
  instance_updated_at: string | null;
}

/** An event row in the xcomponent-ai `PersistedEvent` shape. */
export function eventFromRow(r: EventRow): PersistedEvent {
  const event: Record<string, any> = { type: r.event_type, payload: r.event_payload ?? {} };
  if (r.event_timestamp !== null) event.timestamp = Number(r.event_timestamp);
  if (r.event_extra && typeof r.event_extra === 'object' && !Array.isArray(r.event_extra)) {
    for (const [k, v] of Object.entries(r.event_extra)) defineKey(event, k, v);
  }
  const e: PersistedEvent = {
    id: r.id,
    instanceId: r.instance_id,
    machineName: r.machine_name,
    componentName: r.component_name,
    event: event as PersistedEvent['event'],
    stateBefore: r.state_before,
    stateAfter: r.state_after,
    persistedAt: Number(r.persisted_at),
    causedBy: r.caused_by ?? [],
    // A set (children are linked in whatever order they are projected): sorted, it reads the
    // same from PostgreSQL and MongoDB.
    caused: [...(r.caused ?? [])].sort(),
  };
  if (r.source_component_name !== null) e.sourceComponentName = r.source_component_name;
  if (r.target_component_name !== null) e.targetComponentName = r.target_component_name;
  if (r.public_member_snapshot !== null && r.public_member_snapshot !== undefined) {
    e.publicMemberSnapshot = r.public_member_snapshot as Record<string, any>;
  }
  return e;
}

/** A snapshot row in the xcomponent-ai `InstanceSnapshot` shape. */
export function snapshotFromRow(r: SnapshotRow): InstanceSnapshot {
  const instance: InstanceSnapshot['instance'] = {
    id: r.instance_id,
    machineName: r.machine_name,
    currentState: r.current_state,
    context: r.context,
    // Rows written before the log (xcomponent-ai Schema A) have no instance times.
    createdAt: r.instance_created_at === null ? 0 : Number(r.instance_created_at),
    updatedAt: r.instance_updated_at === null ? 0 : Number(r.instance_updated_at),
    status: r.status,
  };
  if (r.public_member !== null) instance.publicMember = r.public_member;
  if (r.internal_member !== null) instance.internalMember = r.internal_member;
  if (r.is_entry_point !== null) instance.isEntryPoint = r.is_entry_point;
  if (r.parent_instance_id !== null) instance.parentInstanceId = r.parent_instance_id;
  if (r.parent_machine_name !== null) instance.parentMachineName = r.parent_machine_name;
  const s: InstanceSnapshot = {
    instance,
    snapshotAt: Number(r.snapshot_at),
    lastEventId: r.last_event_id,
  };
  if (r.pending_timeouts !== null) s.pendingTimeouts = r.pending_timeouts;
  return s;
}

/** Reads the PostgreSQL projection through a small pool. */
export class PostgresReader implements ProjectionReader {
  readonly store = 'postgres' as const;

  private constructor(private readonly pool: pg.Pool) {}

  /** Connects to `connectionString` (a `DATABASE_URL`); `pg` must be installed. */
  static async connect(connectionString: string, poolSize = 4): Promise<PostgresReader> {
    let mod: typeof import('pg');
    try {
      mod = await import('pg');
    } catch (e) {
      throw new Error(`reading from PostgreSQL needs the 'pg' package: npm install pg (${(e as Error).message})`);
    }
    const Pool = (mod as unknown as { default?: typeof pg }).default?.Pool ?? mod.Pool;
    // Bounded: a store that stops answering fails the read instead of hanging it.
    const pool = new Pool({ connectionString, max: poolSize, connectionTimeoutMillis: 10_000, query_timeout: 60_000 });
    // An idle client's error (a restarted server) must not crash the process; the next
    // query reconnects.
    pool.on('error', () => {});
    const reader = new PostgresReader(pool);
    await pool.query('SELECT 1');
    return reader;
  }

  private async rows<T>(sql: string, params: unknown[]): Promise<T[]> {
    const res = await this.pool.query(sql, params);
    return res.rows as T[];
  }

  async eventsOfInstance(instanceId: string): Promise<PersistedEvent[]> {
    const out: PersistedEvent[] = [];
    let after: [string, string, string] = [String(Number.MIN_SAFE_INTEGER), String(Number.MIN_SAFE_INTEGER), ''];
    for (;;) {
      const rows = await this.rows<EventRow>(
        `SELECT ${EVENT_COLUMNS} FROM fsm_events WHERE instance_id = $1
         AND (COALESCE(source_offset, -1), persisted_at, id) > ($2::bigint, $3::bigint, $4)
         ORDER BY COALESCE(source_offset, -1), persisted_at, id LIMIT $5`,
        [instanceId, ...after, PAGE],
      );
      out.push(...rows.map(eventFromRow));
      const last = rows[rows.length - 1];
      if (rows.length < PAGE || !last) return out;
      after = [last.source_offset ?? '-1', last.persisted_at, last.id];
    }
  }

  eventsInTimeRange(from: number, to: number): Promise<PersistedEvent[]> {
    return everyPage((after) => this.range(from, to, after, PAGE));
  }

  private async range(from: number, to: number, after: string | undefined, limit: number): Promise<EventPage> {
    const [at, id] = after === undefined ? [Number.MIN_SAFE_INTEGER, ''] : parseTimeCursor(after);
    const rows = await this.rows<EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM fsm_events
       WHERE persisted_at >= $1 AND persisted_at <= $2 AND (persisted_at, id) > ($3::bigint, $4)
       ORDER BY persisted_at, id LIMIT $5`,
      [from, to, at, id, limit + 1],
    );
    const events = rows.slice(0, limit).map(eventFromRow);
    const last = events[events.length - 1];
    return rows.length > limit && last ? { events, next: timeCursor(last) } : { events };
  }

  async eventsCausedBy(eventId: string): Promise<PersistedEvent[]> {
    // `@>` is what the GIN index on caused_by serves.
    const rows = await this.rows<EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM fsm_events WHERE caused_by @> ARRAY[$1]::text[]
       ORDER BY persisted_at, id`,
      [eventId],
    );
    return rows.map(eventFromRow);
  }

  async newestEvents(limit: number): Promise<PersistedEvent[]> {
    const rows = await this.rows<EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM fsm_events ORDER BY persisted_at DESC, id DESC LIMIT $1`,
      [limit],
    );
    return rows.reverse().map(eventFromRow);
  }

  eventsPage(after: string | undefined, limit: number): Promise<EventPage> {
    return this.range(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, after, limit);
  }

  async snapshot(instanceId: string): Promise<InstanceSnapshot | null> {
    const rows = await this.rows<SnapshotRow>(
      `SELECT ${SNAPSHOT_COLUMNS} FROM fsm_snapshots WHERE instance_id = $1`,
      [instanceId],
    );
    return rows[0] ? snapshotFromRow(rows[0]) : null;
  }

  async allSnapshots(): Promise<InstanceSnapshot[]> {
    const out: InstanceSnapshot[] = [];
    let after = '';
    for (;;) {
      const rows = await this.rows<SnapshotRow>(
        `SELECT ${SNAPSHOT_COLUMNS} FROM fsm_snapshots WHERE instance_id > $1 ORDER BY instance_id LIMIT $2`,
        [after, PAGE],
      );
      out.push(...rows.map(snapshotFromRow));
      const last = rows[rows.length - 1];
      if (rows.length < PAGE || !last) return out;
      after = last.instance_id;
    }
  }

  async projections(topic: string): Promise<string[]> {
    const rows = await this.rows<{ projection: string }>(
      'SELECT DISTINCT projection FROM xclog_offsets WHERE topic = $1 ORDER BY projection',
      [topic],
    ).catch((e: { code?: string }) => {
      // No projector has ever run against this database.
      if (e.code === '42P01') return [];
      throw e;
    });
    return rows.map((r) => r.projection);
  }

  async storedOffsets(projection: string, topic: string): Promise<Map<number, number>> {
    const rows = await this.rows<{ partition: number; next_offset: string }>(
      'SELECT partition, next_offset FROM xclog_offsets WHERE projection = $1 AND topic = $2',
      [projection, topic],
    );
    return new Map(rows.map((r) => [r.partition, Number(r.next_offset)]));
  }

  private closed = false;

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
