import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressAllowlist, canonicalCidr, checkCidrs, MAX_ALLOW_CIDRS } from '../../src/domain/cidr.js';
import { BoxgridError } from '../../src/domain/errors.js';

describe('CIDR allowlists', () => {
  it('canonical forms: trimmed, IPv6 lower-case, a bare address is one host', () => {
    assert.equal(canonicalCidr(' 10.0.0.0/8 ', 'f'), '10.0.0.0/8');
    assert.equal(canonicalCidr('2001:DB8::/32', 'f'), '2001:db8::/32');
    assert.equal(canonicalCidr('192.0.2.7', 'f'), '192.0.2.7/32');
    assert.equal(canonicalCidr('::1', 'f'), '::1/128');
    assert.equal(canonicalCidr('0.0.0.0/0', 'f'), '0.0.0.0/0');
    assert.deepEqual(checkCidrs(['10.0.0.0/8', '10.0.0.0/8', '::1'], 'allowCidrs'), ['10.0.0.0/8', '::1/128'], 'duplicates dropped');
  });

  it('refuses what is not a range, naming the entry', () => {
    for (const bad of ['', 'nope', '10.0.0/8', '10.0.0.0/33', '10.0.0.0/-1', '10.0.0.0/8/8', '10.0.0.0/ 8', '2001:db8::/129', 'fe80::1%eth0/64', '10.0.0.0/0x8']) {
      assert.throws(() => checkCidrs(['::1', bad], 'allowCidrs'), (e: unknown) => e instanceof BoxgridError && e.code === 'invalid_request' && e.field === 'allowCidrs/1', bad);
    }
    assert.throws(() => checkCidrs(Array.from({ length: MAX_ALLOW_CIDRS + 1 }, (_, i) => `10.0.${i % 256}.0/24`), 'allowCidrs'), /at most/);
  });

  it('matches IPv4, IPv6 and IPv4-mapped IPv6 clients; an empty list admits all, an unknown address nothing', () => {
    const list = new AddressAllowlist(checkCidrs(['10.0.0.0/8', '2001:db8::/32', '::ffff:192.0.2.0/120'], 'f'));
    assert.equal(list.allows('10.1.2.3'), true);
    assert.equal(list.allows('::ffff:10.1.2.3'), true, 'an IPv4 client on a dual-stack socket');
    assert.equal(list.allows('192.0.2.9'), true, 'an IPv4 client against a v4-mapped range');
    assert.equal(list.allows('2001:db8:1::5'), true);
    assert.equal(list.allows('11.0.0.1'), false);
    assert.equal(list.allows('127.0.0.1'), false);
    assert.equal(list.allows('2001:db9::1'), false);
    assert.equal(list.allows(undefined), false);
    assert.equal(list.allows('not an address'), false);
    assert.equal(new AddressAllowlist([]).allows('203.0.113.1'), true);
    assert.equal(new AddressAllowlist([]).allows(undefined), true);
  });
});
