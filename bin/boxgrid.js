#!/usr/bin/env node
import { main } from '../dist/src/cli/main.js';

const code = await main(process.argv);
// The server command keeps running; everything else ends here (`demo --keep` has waited for
// Ctrl-C before it returns).
if (process.argv[2] !== 'server') process.exit(code);
else if (code !== 0) process.exit(code);
