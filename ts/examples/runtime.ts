/**
 * A small xcomponent-style runtime writing through `@xclog/xcomponent`: Order, Inventory and
 * Payment machines in three components, `causedBy` chains across components, a snapshot every
 * N transitions (and always on a final state), each append awaited before the next
 * transition as xcomponent-ai's PersistenceManager does, including its `caused` back-patch
 * through `getAllEvents()` after every append with a cause.
 *
 * ```text
 * eval "$(scripts/stack.sh env)"
 * node ts/build/examples/runtime.js --topic xclog.events --flows 20 --read postgres
 * node ts/build/examples/runtime.js --topic xclog.events --restore --read mongo --history ORDER_ID
 * ```
 *
 * Options: `--topic`, `--brokers` (XCLOG_KAFKA_BROKERS), `--read postgres|mongo` (DATABASE_URL or
 * MONGODB_URI), `--database` (MongoDB database, default xcomponent), `--projection` (the
 * projection to wait for; default: the one in the store), `--flows N`, `--restore` (restore every
 * instance from the snapshots instead of publishing), `--history ID` (with --restore: print one
 * instance's events), `--no-wait` (reads do not wait for the projection), `--json` (print the
 * summary as JSON).
 *
 * The runtime takes any xcomponent-ai `EventStore` / `SnapshotStore`, so the same code runs on
 * the seed's direct PostgreSQL store for comparison (`examples/seed-postgres.ts`).
 */

import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';

import { connectXclog } from '../src/index.js';
import type { FSMInstance, InstanceSnapshot, PersistedEvent } from '../src/index.js';

/** xcomponent-ai's store interfaces, as the runtime uses them. */
export interface EventStore {
  append(event: PersistedEvent): Promise<void>;
  getEventsForInstance(instanceId: string): Promise<PersistedEvent[]>;
  getAllEvents(): Promise<PersistedEvent[]>;
}
export interface SnapshotStore {
  saveSnapshot(snapshot: InstanceSnapshot): Promise<void>;
  getAllSnapshots(): Promise<InstanceSnapshot[]>;
}

interface Machine {
  component: string;
  initial: string;
  final: string;
  /** event type -> [from, to] */
  transitions: Record<string, [string, string]>;
}

/** The three machines of an order flow. */
export const MACHINES: Record<string, Machine> = {
  Order: {
    component: 'OrderComponent',
    initial: 'Created',
    final: 'Completed',
    transitions: {
      SUBMIT: ['Created', 'PendingPayment'],
      PAYMENT_CONFIRMED: ['PendingPayment', 'Paid'],
      SHIP: ['Paid', 'Shipped'],
      DELIVER: ['Shipped', 'Completed'],
    },
  },
  Inventory: {
    component: 'InventoryComponent',
    initial: 'Requested',
    final: 'Picked',
    transitions: { RESERVE: ['Requested', 'Reserved'], PICK: ['Reserved', 'Picked'] },
  },
  Payment: {
    component: 'PaymentComponent',
    initial: 'Pending',
    final: 'Completed',
    transitions: {
      PROCESS: ['Pending', 'Processing'],
      VALIDATE: ['Processing', 'Validated'],
      COMPLETE: ['Validated', 'Completed'],
    },
  },
};

/** Counts of what the runtime persisted. */
export interface RuntimeStats {
  events: number;
  snapshots: number;
  transitions: number;
}

/** The runtime: instances in memory, every transition persisted before it is applied further. */
export class MiniRuntime {
  readonly instances = new Map<string, FSMInstance>();
  readonly stats: RuntimeStats = { events: 0, snapshots: 0, transitions: 0 };
  private readonly counts = new Map<string, number>();

  constructor(
    private readonly events: EventStore,
    private readonly snapshots: SnapshotStore,
    private readonly snapshotInterval = 2,
  ) {}

  /** PersistenceManager.persistEvent: append (awaited), then back-patch the cause's `caused`. */
  private async persist(
    instance: FSMInstance,
    event: PersistedEvent['event'] & { _sourceComponent?: string },
    stateBefore: string,
    causedBy: string | undefined,
  ): Promise<string> {
    const id = randomUUID();
    const persisted: PersistedEvent = {
      id,
      instanceId: instance.id,
      machineName: instance.machineName,
      componentName: (MACHINES[instance.machineName] as Machine).component,
      event,
      stateBefore,
      stateAfter: instance.currentState,
      persistedAt: Date.now(),
      causedBy: causedBy ? [causedBy] : undefined,
      caused: [],
      sourceComponentName: event._sourceComponent,
      publicMemberSnapshot: { ...(instance.publicMember ?? instance.context) },
    };
    await this.events.append(persisted);
    this.stats.events += 1;
    if (causedBy) {
      // What xcomponent-ai does after every append with a cause: find the parent among all
      // events and push the new id into its `caused`, in memory only.
      const all = await this.events.getAllEvents();
      all.find((e) => e.id === causedBy)?.caused?.push(id);
    }
    return id;
  }

  private async snapshot(instance: FSMInstance, lastEventId: string): Promise<void> {
    await this.snapshots.saveSnapshot({ instance: { ...instance }, snapshotAt: Date.now(), lastEventId });
    this.stats.snapshots += 1;
  }

  /** Creates an instance and persists its INSTANCE_CREATED event; returns [instance, event id]. */
  async create(machineName: string, publicMember: Record<string, any>, causedBy?: string, parent?: FSMInstance): Promise<[FSMInstance, string]> {
    const m = MACHINES[machineName] as Machine;
    const now = Date.now();
    const instance: FSMInstance = {
      id: randomUUID(),
      machineName,
      currentState: m.initial,
      context: {},
      publicMember: { ...publicMember },
      internalMember: {},
      createdAt: now,
      updatedAt: now,
      status: 'active',
    };
    if (parent) {
      instance.parentInstanceId = parent.id;
      instance.parentMachineName = parent.machineName;
    }
    this.instances.set(instance.id, instance);
    const payload: Record<string, any> = { triggerEvent: causedBy ? 'inter_machine transition' : 'manual create', initialContext: publicMember };
    if (parent) {
      payload.parentInstanceId = parent.id;
      payload.parentMachineName = parent.machineName;
    }
    const id = await this.persist(instance, { type: 'INSTANCE_CREATED', payload, timestamp: now }, '', causedBy);
    return [instance, id];
  }

  /** Sends an event to an instance; returns the id of the persisted transition. */
  async send(
    instanceId: string,
    type: string,
    payload: Record<string, any>,
    causedBy?: string,
    sourceComponent?: string,
  ): Promise<string> {
    const instance = this.instances.get(instanceId);
    if (!instance) throw new Error(`unknown instance ${instanceId}`);
    const m = MACHINES[instance.machineName] as Machine;
    const t = m.transitions[type];
    if (!t || t[0] !== instance.currentState) throw new Error(`${instance.machineName} ${instanceId}: no ${type} from ${instance.currentState}`);
    const before = instance.currentState;
    instance.currentState = t[1];
    instance.updatedAt = Date.now();
    Object.assign(instance.publicMember ?? instance.context, payload);
    const event: PersistedEvent['event'] & { _sourceComponent?: string } = { type, payload, timestamp: Date.now() };
    if (sourceComponent) event._sourceComponent = sourceComponent;
    const id = await this.persist(instance, event, before, causedBy);
    this.stats.transitions += 1;
    const count = (this.counts.get(instanceId) ?? 0) + 1;
    this.counts.set(instanceId, count);
    if (count % this.snapshotInterval === 0) await this.snapshot(instance, id);
    if (instance.currentState === m.final) {
      instance.status = 'completed';
      await this.snapshot(instance, id);
    }
    return id;
  }

  /** One order flow across the three components; returns the Order instance id. */
  async orderFlow(n: number): Promise<string> {
    const [order] = await this.create('Order', { orderId: `ORD-${n}`, amount: 10 + (n % 90), lines: [{ sku: `SKU-${n % 7}`, qty: 1 + (n % 3) }] });
    const submit = await this.send(order.id, 'SUBMIT', { submittedBy: `customer-${n % 13}` });
    const [inventory] = await this.create('Inventory', { orderId: `ORD-${n}`, sku: `SKU-${n % 7}` }, submit, order);
    const [payment] = await this.create('Payment', { orderId: `ORD-${n}`, amount: 10 + (n % 90), method: n % 2 ? 'card' : 'transfer' }, submit, order);
    const reserve = await this.send(inventory.id, 'RESERVE', { warehouse: `W${n % 3}` }, submit, 'OrderComponent');
    const process = await this.send(payment.id, 'PROCESS', { attempt: 1 }, submit, 'OrderComponent');
    const validate = await this.send(payment.id, 'VALIDATE', { score: (n * 37) % 100 }, process);
    const complete = await this.send(payment.id, 'COMPLETE', { reference: `PAY-${n}` }, validate);
    const confirmed = await this.send(order.id, 'PAYMENT_CONFIRMED', { reference: `PAY-${n}` }, complete, 'PaymentComponent');
    await this.send(inventory.id, 'PICK', { picker: `P${n % 5}` }, reserve);
    const ship = await this.send(order.id, 'SHIP', { carrier: n % 2 ? 'DHL' : 'UPS' }, confirmed);
    await this.send(order.id, 'DELIVER', { signedBy: `customer-${n % 13}` }, ship);
    return order.id;
  }

  /** xcomponent-ai's FSMRuntime.restore(): every snapshot back into memory. */
  async restore(): Promise<number> {
    const all = await this.snapshots.getAllSnapshots();
    for (const s of all) this.instances.set(s.instance.id, s.instance);
    return all.length;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      topic: { type: 'string', default: process.env.XCLOG_TOPIC ?? 'xclog.events' },
      brokers: { type: 'string', default: process.env.XCLOG_KAFKA_BROKERS ?? '127.0.0.1:9092' },
      read: { type: 'string', default: 'postgres' },
      database: { type: 'string', default: 'xcomponent' },
      flows: { type: 'string', default: '10' },
      restore: { type: 'boolean', default: false },
      projection: { type: 'string' },
      history: { type: 'string' },
      'no-wait': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  const read =
    values.read === 'mongo'
      ? { mongo: process.env.MONGODB_URI ?? 'mongodb://127.0.0.1:27017/', database: values.database as string }
      : { postgres: process.env.DATABASE_URL ?? 'postgres://xclog:xclog@127.0.0.1:5432/xclog' };
  const xclog = await connectXclog({ brokers: values.brokers as string, topic: values.topic as string, read: { ...read, wait: !values['no-wait'], projection: values.projection, waitTimeoutMs: 30_000 } });
  try {
    const runtime = new MiniRuntime(xclog.eventStore, xclog.snapshotStore);
    if (values.restore) {
      await xclog.waitForProjection(30_000);
      const restored = await runtime.restore();
      const states = new Map<string, number>();
      for (const i of runtime.instances.values()) {
        const k = `${i.machineName} ${i.currentState} (${i.status})`;
        states.set(k, (states.get(k) ?? 0) + 1);
      }
      console.log(`restored ${restored} instances from the ${values.read} projection:`);
      for (const [k, n] of [...states].sort()) console.log(`  ${String(n).padStart(5)}  ${k}`);
      if (values.history) {
        const events = await xclog.eventStore.getEventsForInstance(values.history);
        console.log(`history of ${values.history} (${events.length} events, log order):`);
        for (const e of events) {
          const cause = e.causedBy?.length ? ` causedBy=${e.causedBy.join(',')}` : '';
          const caused = e.caused?.length ? ` caused=${e.caused.length}` : '';
          console.log(`  ${e.id}  ${e.event.type.padEnd(18)} ${e.stateBefore || '(new)'} -> ${e.stateAfter}${cause}${caused}`);
        }
      }
      return;
    }
    const flows = Number(values.flows);
    const started = performance.now();
    const orders: string[] = [];
    for (let n = 0; n < flows; n++) orders.push(await runtime.orderFlow(n));
    const seconds = (performance.now() - started) / 1000;
    const perSecond = Math.round(runtime.stats.events / seconds);
    if (values.json) {
      console.log(JSON.stringify({ ...runtime.stats, orders, eventsPerSecond: perSecond }));
    } else {
      console.log(
        `published ${runtime.stats.events} events and ${runtime.stats.snapshots} snapshots of ${runtime.instances.size} instances ` +
          `in ${seconds.toFixed(2)} s (${perSecond} events/s, each append awaited); first order: ${orders[0]}`,
      );
    }
  } finally {
    await xclog.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
