/**
 * The xcomponent-ai persistence types, field for field (xcomponent-ai `src/types.ts`), so that
 * the stores of this package are assignable to an xcomponent-ai runtime's `EventStore` and
 * `SnapshotStore`. `test/unit/interfaces.test.ts` holds xcomponent-ai's own declarations and
 * fails to compile if these drift from them.
 */

/** An event sent to an instance. */
export interface FSMEvent {
  /** Event name. */
  type: string;
  /** Event data. */
  payload: Record<string, any>;
  /** Epoch ms chosen by the sender (xcomponent-ai leaves it out for `sendToSelf`). */
  timestamp: number;
}

/** One instance of a state machine. */
export interface FSMInstance {
  id: string;
  machineName: string;
  currentState: string;
  context: Record<string, any>;
  publicMember?: Record<string, any>;
  internalMember?: Record<string, any>;
  createdAt: number;
  updatedAt: number;
  status: 'active' | 'completed' | 'error';
  isEntryPoint?: boolean;
  parentInstanceId?: string;
  parentMachineName?: string;
}

/** One state transition, as xcomponent-ai persists it. */
export interface PersistedEvent {
  id: string;
  instanceId: string;
  machineName: string;
  componentName: string;
  event: FSMEvent;
  stateBefore: string;
  stateAfter: string;
  /** Epoch ms. */
  persistedAt: number;
  /** Events that caused this one. */
  causedBy?: string[];
  /** Events this one caused (maintained by the xclog projectors). */
  caused?: string[];
  sourceComponentName?: string;
  targetComponentName?: string;
  publicMemberSnapshot?: Record<string, any>;
}

/** A pending timeout of a snapshot. */
export interface PendingTimeout {
  stateKey: string;
  eventType: string;
  remainingMs: number;
}

/** The full state of one instance at a point in time. */
export interface InstanceSnapshot {
  instance: FSMInstance;
  snapshotAt: number;
  lastEventId: string;
  pendingTimeouts?: PendingTimeout[];
}
