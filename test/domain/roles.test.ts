import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ROLES, roleAllows, type Action, type Role } from '../../src/domain/roles.js';

describe('roles', () => {
  const matrix: Record<Role, Record<Action, boolean>> = {
    admin: { read: true, submit: true, manage: true },
    submitter: { read: true, submit: true, manage: false },
    viewer: { read: true, submit: false, manage: false },
  };

  it('has exactly admin, submitter and viewer', () => {
    assert.deepEqual([...ROLES], ['admin', 'submitter', 'viewer']);
  });

  for (const role of ROLES) {
    for (const action of ['read', 'submit', 'manage'] as const) {
      it(`${role} ${matrix[role][action] ? 'may' : 'may not'} ${action}`, () => {
        assert.equal(roleAllows(role, action), matrix[role][action]);
      });
    }
  }

  it('roles are ordered: each allows everything the next one does', () => {
    for (let i = 0; i + 1 < ROLES.length; i++) {
      for (const a of ['read', 'submit', 'manage'] as const) {
        if (roleAllows(ROLES[i + 1]!, a)) assert.ok(roleAllows(ROLES[i]!, a), `${ROLES[i]} ⊇ ${ROLES[i + 1]} on ${a}`);
      }
    }
  });
});
