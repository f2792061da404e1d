// src/service/credentials.ts is pure (no store, no I/O), so its tests live with the domain's.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { issueToken, parseToken, secretMatches } from '../../src/service/credentials.js';

const T0 = 1_700_000_000_000;
const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

function flip(ch: string): string {
  const i = B64URL.indexOf(ch);
  return B64URL[(i + 1) % B64URL.length]!;
}

describe('credentials', () => {
  it('a user token round-trips through parseToken and secretMatches', () => {
    const { token, record } = issueToken('user', 42, 'laptop', T0);
    assert.match(token, /^bgu_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    const parsed = parseToken(token);
    assert.ok(parsed);
    assert.equal(parsed.kind, 'user');
    assert.equal(parsed.id, record.id);
    assert.equal(token, `bgu_${parsed.id}_${parsed.secret}`);
    assert.equal(secretMatches(record, parsed.secret), true);
    assert.deepEqual({ ...record, secretHash: null }, {
      id: parsed.id, kind: 'user', subjectId: 42, secretHash: null, label: 'laptop', createdAt: T0, expiresAt: null, revokedAt: null,
    });
  });

  it('a host token uses the bgh prefix and kind host', () => {
    const { token, record } = issueToken('host', 9, 'node-1', T0, T0 + 1000);
    assert.ok(token.startsWith('bgh_'));
    assert.equal(record.kind, 'host');
    assert.equal(record.expiresAt, T0 + 1000);
    const parsed = parseToken(token);
    assert.equal(parsed?.kind, 'host');
    assert.equal(secretMatches(record, parsed!.secret), true);
  });

  it('the prefix alone decides the parsed kind (the caller must check it against the record)', () => {
    const { token } = issueToken('user', 1, 'x', T0);
    const asHost = parseToken('bgh_' + token.slice(4));
    assert.equal(asHost?.kind, 'host');
  });

  it('stores only sha256 of the secret', () => {
    const { token, record } = issueToken('user', 1, 'x', T0);
    const secret = parseToken(token)!.secret;
    assert.equal(record.secretHash.length, 32);
    assert.ok(record.secretHash.equals(createHash('sha256').update(secret).digest()));
    assert.ok(!JSON.stringify(record).includes(secret), 'the record does not contain the secret');
  });

  it('every issued token is different', () => {
    const seen = new Set<string>();
    const ids = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const { token, record } = issueToken('user', 1, 'x', T0);
      seen.add(token);
      ids.add(record.id);
    }
    assert.equal(seen.size, 200);
    assert.equal(ids.size, 200);
  });

  it('a secret with any one character changed does not match', () => {
    const { token, record } = issueToken('user', 5, 'x', T0);
    const secret = parseToken(token)!.secret;
    fc.assert(
      fc.property(fc.integer({ min: 0, max: secret.length - 1 }), (i) => {
        const changed = secret.slice(0, i) + flip(secret[i]!) + secret.slice(i + 1);
        assert.notEqual(changed, secret);
        const reparsed = parseToken(`bgu_${record.id}_${changed}`);
        assert.ok(reparsed, 'still well-formed');
        assert.equal(secretMatches(record, reparsed.secret), false);
      }),
      { numRuns: 43 },
    );
    // And each position explicitly, so no position is missed by chance.
    for (let i = 0; i < secret.length; i++) {
      assert.equal(secretMatches(record, secret.slice(0, i) + flip(secret[i]!) + secret.slice(i + 1)), false, `position ${i}`);
    }
  });

  it("another token's secret does not match", () => {
    const a = issueToken('user', 1, 'a', T0);
    const b = issueToken('user', 1, 'b', T0);
    assert.equal(secretMatches(a.record, parseToken(b.token)!.secret), false);
    assert.equal(secretMatches(a.record, ''), false);
  });

  it('a record with a malformed hash never matches and does not throw', () => {
    const { token, record } = issueToken('user', 1, 'x', T0);
    const secret = parseToken(token)!.secret;
    assert.equal(secretMatches({ ...record, secretHash: Buffer.alloc(0) }, secret), false);
    assert.equal(secretMatches({ ...record, secretHash: record.secretHash.subarray(0, 16) }, secret), false);
  });

  it('parseToken rejects anything not exactly in the token format', () => {
    const { token } = issueToken('user', 1, 'x', T0);
    const [, id, secret] = /^bgu_([^_]+)_(.*)$/.exec(token)!;
    const bad = [
      '',
      'bgu',
      `bgx_${id}_${secret}`,
      `BGU_${id}_${secret}`,
      `bgu_${id!.toUpperCase().replace(/[0-9]/g, 'A')}_${secret}`,
      `bgu_${id!.slice(1)}_${secret}`,
      `bgu_${id}0_${secret}`,
      `bgu_${id}_${secret!.slice(1)}`,
      `bgu_${id}_${secret}A`,
      `bgu_${id}_${secret!.slice(1)}=`,
      `bgu_${id}${secret}`,
      ` ${token}`,
      `${token} `,
      `${token}\n`,
      `Bearer ${token}`,
    ];
    for (const b of bad) assert.equal(parseToken(b), null, JSON.stringify(b));
    assert.ok(parseToken(token));
  });
});
