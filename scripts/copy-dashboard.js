#!/usr/bin/env node
// Part of `npm run build`: copies the dashboard's static files (src/server/dashboard/, plain
// HTML, CSS and JavaScript that tsc does not touch) beside the compiled server, so that dist/src
// alone (the container image) serves them. In a checkout the server reads the sources directly.
import { cpSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const from = join(root, 'src/server/dashboard');
const to = join(root, 'dist/src/server/dashboard');
rmSync(to, { recursive: true, force: true });
mkdirSync(to, { recursive: true });
for (const f of readdirSync(from)) cpSync(join(from, f), join(to, f));
