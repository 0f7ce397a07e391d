/**
 * xcomponent-ai's direct PostgreSQL stores (`examples/persistence/postgresql.ts` of the seed:
 * Schema A, an INSERT per append, an upsert per snapshot, every read a query), kept here to
 * measure the example runtime on the seed's own store next to xclog (`ts/bench/publish.ts`).
 * One change: the seed calls `JSON.parse` on JSONB columns that node-pg has already parsed,
 * which throws for objects; this copy takes the parsed value as it is.
 */

import pg from 'pg';

import type { InstanceSnapshot, PersistedEvent } from '../src/index.js';

/** The seed's `PostgreSQLEventStore` and `PostgreSQLSnapshotStore` over one pool. */
export class SeedPostgresStores {
  private readonly pool: pg.Pool;

  constructor(connectionString: string) {
    this.pool = new pg.Pool({ connectionString, max: 20 });
  }

  async append(event: PersistedEvent): Promise<void> {
    await this.pool.query(
      `INSERT INTO fsm_events (id, instance_id, machine_name, component_name, event_type, event_payload,
         state_before, state_after, persisted_at, caused_by, caused, source_component_name, target_component_name)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
      [
        event.id,
        event.instanceId,
        event.machineName,
        event.componentName,
        event.event.type,
        JSON.stringify(event.event.payload),
        event.stateBefore,
        event.stateAfter,
        event.persistedAt,
        event.causedBy || [],
        event.caused || [],
        event.sourceComponentName || null,
        event.targetComponentName || null,
      ],
    );
  }

  private row(r: Record<string, any>): PersistedEvent {
    return {
      id: r.id,
      instanceId: r.instance_id,
      machineName: r.machine_name,
      componentName: r.component_name,
      event: { type: r.event_type, payload: r.event_payload, timestamp: Number(r.persisted_at) },
      stateBefore: r.state_before,
      stateAfter: r.state_after,
      persistedAt: Number(r.persisted_at),
      causedBy: r.caused_by,
      caused: r.caused,
      sourceComponentName: r.source_component_name,
      targetComponentName: r.target_component_name,
    };
  }

  async getEventsForInstance(instanceId: string): Promise<PersistedEvent[]> {
    const res = await this.pool.query('SELECT * FROM fsm_events WHERE instance_id = $1 ORDER BY persisted_at ASC', [instanceId]);
    return res.rows.map((r) => this.row(r));
  }

  /** The seed's getAllEvents: every row, every time. */
  async getAllEvents(): Promise<PersistedEvent[]> {
    const res = await this.pool.query('SELECT * FROM fsm_events ORDER BY persisted_at ASC');
    return res.rows.map((r) => this.row(r));
  }

  async saveSnapshot(s: InstanceSnapshot): Promise<void> {
    await this.pool.query(
      `INSERT INTO fsm_snapshots (instance_id, machine_name, current_state, status, context, public_member,
         snapshot_at, last_event_id, pending_timeouts, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CURRENT_TIMESTAMP)
       ON CONFLICT (instance_id) DO UPDATE SET current_state = $3, status = $4, context = $5,
         public_member = $6, snapshot_at = $7, last_event_id = $8, pending_timeouts = $9,
         updated_at = CURRENT_TIMESTAMP`,
      [
        s.instance.id,
        s.instance.machineName,
        s.instance.currentState,
        s.instance.status,
        JSON.stringify(s.instance.context),
        s.instance.publicMember ? JSON.stringify(s.instance.publicMember) : null,
        s.snapshotAt,
        s.lastEventId,
        s.pendingTimeouts ? JSON.stringify(s.pendingTimeouts) : null,
      ],
    );
  }

  async getAllSnapshots(): Promise<InstanceSnapshot[]> {
    const res = await this.pool.query('SELECT * FROM fsm_snapshots');
    return res.rows.map((r) => ({
      instance: {
        id: r.instance_id,
        machineName: r.machine_name,
        currentState: r.current_state,
        context: r.context,
        publicMember: r.public_member ?? undefined,
        createdAt: 0,
        updatedAt: 0,
        status: r.status,
      },
      snapshotAt: Number(r.snapshot_at),
      lastEventId: r.last_event_id,
    }));
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
