import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { markdown, NOTES_MARKER, withSection, type Outcome } from '../../bench/results-markdown.js';

function outcome(benchmark: string, value: number): Outcome {
  return {
    benchmark, description: `the ${benchmark} benchmark`, ok: true, fields: { figure: value }, targets: [], met: true, seconds: 1,
    loadAverage: { start: 0, end: 0 }, command: `npm run bench -- ${benchmark} --json`, date: '2026-11-21T00:00:00.000Z',
    machine: { cpu: 'cpu', cores: 2, ramGiB: 1, node: 'v20', platform: 'linux/x64' },
  };
}

const file = markdown([outcome('a', 1), outcome('b', 2), outcome('c', 3)]) + '\n' + NOTES_MARKER + '\n## Notes\nkept\n';

describe('withSection', () => {
  it('replaces one benchmark\'s section and keeps the others, their order and the notes', () => {
    const next = withSection(file, outcome('b', 20));
    assert.equal(next, markdown([outcome('a', 1), outcome('b', 20), outcome('c', 3)]) + '\n' + NOTES_MARKER + '\n## Notes\nkept\n');
  });

  it('the last section before the notes, too', () => {
    assert.equal(withSection(file, outcome('c', 30)), markdown([outcome('a', 1), outcome('b', 2), outcome('c', 30)]) + '\n' + NOTES_MARKER + '\n## Notes\nkept\n');
  });

  it('a benchmark not there yet goes before the notes; a "## Notes" heading after the marker is never taken for a section', () => {
    const added = withSection(file, outcome('d', 4));
    assert.equal(added, markdown([outcome('a', 1), outcome('b', 2), outcome('c', 3), outcome('d', 4)]) + '\n' + NOTES_MARKER + '\n## Notes\nkept\n');
    assert.ok(withSection(file, outcome('Notes', 5)).endsWith(NOTES_MARKER + '\n## Notes\nkept\n'));
  });
});
