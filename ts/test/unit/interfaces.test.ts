// xcomponent-ai's own persistence declarations (src/types.ts of xcomponent-ai), copied verbatim
// in substance. This file fails to compile if the stores of this package stop being assignable
// to them, or if the exported record types drift from theirs.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import type {
  InstanceSnapshot as OurSnapshot,
  PersistedEvent as OurEvent,
  XclogEventStore,
  XclogSnapshotStore,
} from '../../src/index.js';

interface FSMEvent {
  type: string;
  payload: Record<string, any>;
  timestamp: number;
}

interface FSMInstance {
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

interface PersistedEvent {
  id: string;
  instanceId: string;
  machineName: string;
  componentName: string;
  event: FSMEvent;
  stateBefore: string;
  stateAfter: string;
  persistedAt: number;
  causedBy?: string[];
  caused?: string[];
  sourceComponentName?: string;
  targetComponentName?: string;
  publicMemberSnapshot?: Record<string, any>;
}

interface InstanceSnapshot {
  instance: FSMInstance;
  snapshotAt: number;
  lastEventId: string;
  pendingTimeouts?: Array<{
    stateKey: string;
    eventType: string;
    remainingMs: number;
  }>;
}

interface EventStore {
  append(event: PersistedEvent): Promise<void>;
  getEventsForInstance(instanceId: string): Promise<PersistedEvent[]>;
  getEventsByTimeRange(startTime: number, endTime: number): Promise<PersistedEvent[]>;
  getCausedEvents(eventId: string): Promise<PersistedEvent[]>;
  getAllEvents(): Promise<PersistedEvent[]>;
}

interface SnapshotStore {
  saveSnapshot(snapshot: InstanceSnapshot): Promise<void>;
  getSnapshot(instanceId: string): Promise<InstanceSnapshot | null>;
  getAllSnapshots(): Promise<InstanceSnapshot[]>;
  deleteSnapshot(instanceId: string): Promise<void>;
}

type Assert<T extends true> = T;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

// The stores are what xcomponent-ai's PersistenceConfig takes.
export type StoresAssignable = [
  Assert<XclogEventStore extends EventStore ? true : false>,
  Assert<XclogSnapshotStore extends SnapshotStore ? true : false>,
];
// The record types are xcomponent-ai's, both ways.
export type RecordsIdentical = [Assert<Same<OurEvent, PersistedEvent>>, Assert<Same<OurSnapshot, InstanceSnapshot>>];

test('the stores implement every method of xcomponent-ai EventStore and SnapshotStore', async () => {
  const { XclogEventStore: E, XclogSnapshotStore: S } = await import('../../src/index.js');
  for (const m of ['append', 'getEventsForInstance', 'getEventsByTimeRange', 'getCausedEvents', 'getAllEvents']) {
    assert.equal(typeof (E.prototype as unknown as Record<string, unknown>)[m], 'function', m);
  }
  for (const m of ['saveSnapshot', 'getSnapshot', 'getAllSnapshots', 'deleteSnapshot']) {
    assert.equal(typeof (S.prototype as unknown as Record<string, unknown>)[m], 'function', m);
  }
});
