#!/usr/bin/env node
// Runs every compiled test file under dist/test with node's own test runner. The spec
// reporter ends with "ℹ pass N / ℹ fail N", which CI reads. Pass file-name fragments to
// run a subset: `npm test -- store api`.
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const filters = process.argv.slice(2);
const files = [];
for (const dir of ['dist/test', 'dist/src']) {
  try {
    for (const f of readdirSync(join(root, dir), { recursive: true })) {
      const path = join(dir, String(f));
      if (!path.endsWith('.test.js')) continue;
      if (filters.length > 0 && !filters.some((x) => path.includes(x))) continue;
      files.push(path);
    }
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
}
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
files.sort();
const r = spawnSync(process.execPath, ['--enable-source-maps', '--test', '--test-reporter=spec', '--test-concurrency=2', '--test-timeout=180000', ...files], {
  cwd: root,
  stdio: 'inherit',
});
console.error(`(ran ${files.length} test files: ${files.map((f) => relative('dist', f)).join(', ')})`);
process.exit(r.status ?? 1);
