import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BoxgridError } from '../../src/domain/errors.js';
import { parseDurationSeconds } from '../../src/domain/duration.js';
import { DEFAULT_RESOURCES, RESOURCE_LIMITS, fits, parseSizeMiB, subtract, withOverrides } from '../../src/domain/resources.js';

function invalidField(field: string) {
  return (e: unknown) => {
    assert.ok(e instanceof BoxgridError, `expected a BoxgridError, got ${String(e)}`);
    assert.equal(e.code, 'invalid_request');
    assert.equal(e.field, field);
    assert.equal(e.status, 400);
    return true;
  };
}

describe('parseSizeMiB', () => {
  it('parses binary units', () => {
    assert.equal(parseSizeMiB('512Mi', 'f'), 512);
    assert.equal(parseSizeMiB('2Gi', 'f'), 2048);
    assert.equal(parseSizeMiB('1Ti', 'f'), 1024 * 1024);
    assert.equal(parseSizeMiB('1024Ki', 'f'), 1);
    assert.equal(parseSizeMiB('1.5Gi', 'f'), 1536);
    assert.equal(parseSizeMiB('0.5Gi', 'f'), 512);
  });

  it('parses decimal units, rounding up to whole MiB', () => {
    assert.equal(parseSizeMiB('1G', 'f'), 954); // 1e9 / 2^20 = 953.67…
    assert.equal(parseSizeMiB('1M', 'f'), 1); // 0.95… MiB rounds up
    assert.equal(parseSizeMiB('100M', 'f'), 96); // 95.37…
    assert.equal(parseSizeMiB('1T', 'f'), 953_675); // 953674.3…
    assert.equal(parseSizeMiB('1000k', 'f'), 1);
    assert.equal(parseSizeMiB('1.5G', 'f'), 1431); // 1430.5…
  });

  it('reads a plain number as bytes', () => {
    assert.equal(parseSizeMiB('1048576', 'f'), 1);
    assert.equal(parseSizeMiB('1048577', 'f'), 2);
    assert.equal(parseSizeMiB('1', 'f'), 1, 'one byte still needs one MiB');
  });

  it('accepts a trailing B, any letter case for the unit letter, and surrounding spaces', () => {
    assert.equal(parseSizeMiB('512MiB', 'f'), 512);
    assert.equal(parseSizeMiB('2gi', 'f'), 2048);
    assert.equal(parseSizeMiB(' 2 Gi ', 'f'), 2048);
    assert.equal(parseSizeMiB('1048576B', 'f'), 1);
  });

  it('refuses malformed text with invalid_request on the given field', () => {
    for (const bad of ['', ' ', 'abc', 'Mi', '-1Mi', '1e3', '1.Mi', '.5Gi', '512Xi', '512 Mi Mi', '1,5Gi', '512MI', '0x10']) {
      assert.throws(() => parseSizeMiB(bad, 'resources.memory'), invalidField('resources.memory'), JSON.stringify(bad));
    }
  });

  it('refuses zero', () => {
    for (const bad of ['0', '0Mi', '0.0Gi']) assert.throws(() => parseSizeMiB(bad, 'disk'), invalidField('disk'), bad);
  });

  it('property: whole binary quantities are exact', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1_000_000 }), (n) => {
        assert.equal(parseSizeMiB(`${n}Mi`, 'f'), n);
        assert.equal(parseSizeMiB(`${n}Gi`, 'f'), n * 1024);
        assert.equal(parseSizeMiB(`${n * 1024}Ki`, 'f'), n);
        assert.equal(parseSizeMiB(String(n * 1048576), 'f'), n);
      }),
      { numRuns: 500 },
    );
  });

  it('property: the result is the smallest MiB count that holds the bytes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 40 }), (bytes) => {
        const mib = parseSizeMiB(String(bytes), 'f');
        assert.ok(mib * 1048576 >= bytes);
        assert.ok((mib - 1) * 1048576 < bytes);
      }),
      { numRuns: 500 },
    );
  });

  it('an exact MiB amount written with a decimal SI unit is not rounded up an extra MiB', () => {
    // 128.974848 MB = 128,974,848 bytes = exactly 123 MiB, but 128.974848 * (1e6 / 2^20) = 123.00000000000001.
    assert.equal(parseSizeMiB('128.974848M', 'f'), 123);
    assert.equal(parseSizeMiB('0.063963136G', 'f'), 61);
    assert.equal(parseSizeMiB('0.000131072T', 'f'), 125);
  });
});

describe('resource arithmetic', () => {
  const host = { cores: 8, memoryMiB: 16384, diskMiB: 100_000, gpus: 1 };

  it('withOverrides lays job overrides over the app size', () => {
    assert.deepEqual(withOverrides(DEFAULT_RESOURCES, { cores: 4 }), { ...DEFAULT_RESOURCES, cores: 4 });
    assert.deepEqual(withOverrides(DEFAULT_RESOURCES, undefined), DEFAULT_RESOURCES);
    assert.deepEqual(withOverrides(DEFAULT_RESOURCES, {}), DEFAULT_RESOURCES);
    assert.notEqual(withOverrides(DEFAULT_RESOURCES, {}), DEFAULT_RESOURCES, 'returns a copy');
  });

  it('fits checks every dimension, inclusively', () => {
    assert.equal(fits(host, host), true);
    assert.equal(fits(DEFAULT_RESOURCES, host), true);
    for (const k of ['cores', 'memoryMiB', 'diskMiB', 'gpus'] as const) {
      assert.equal(fits({ ...host, [k]: host[k] + 0.5 }, host), false, k);
    }
    assert.equal(fits({ ...DEFAULT_RESOURCES, cores: 0.5 }, { ...host, cores: 0.5 }), true, 'fractional cores');
  });

  it('subtract is per dimension', () => {
    assert.deepEqual(subtract(host, DEFAULT_RESOURCES), { cores: 7, memoryMiB: 15872, diskMiB: 98_976, gpus: 1 });
    assert.equal(fits(DEFAULT_RESOURCES, subtract(host, DEFAULT_RESOURCES)), true);
  });

  it('the defaults fit inside the limits', () => {
    assert.equal(fits(DEFAULT_RESOURCES, RESOURCE_LIMITS), true);
  });
});


describe('parseDurationSeconds', () => {
  it('reads seconds, minutes, hours, days and weeks', () => {
    assert.equal(parseDurationSeconds('90', 'x'), 90);
    assert.equal(parseDurationSeconds('90s', 'x'), 90);
    assert.equal(parseDurationSeconds('30m', 'x'), 1800);
    assert.equal(parseDurationSeconds('12h', 'x'), 43200);
    assert.equal(parseDurationSeconds('1d', 'x'), 86400);
    assert.equal(parseDurationSeconds('1.5h', 'x'), 5400);
    assert.equal(parseDurationSeconds('2w', 'x'), 1209600);
  });
  it('refuses what is not a positive duration, naming the field', () => {
    for (const bad of ['', 'soon', '1y', '-1d', '0', '1 d x']) {
      assert.throws(() => parseDurationSeconds(bad, '--expires'), (e: unknown) => e instanceof Error && /--expires/.test(e.message), bad);
    }
  });
});
