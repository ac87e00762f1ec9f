// `npm run silo -- <command> ...`: bundles the CLI for Node and runs it (the same file as `npm run build`'s dist/silo.mjs).
import { spawnSync } from 'node:child_process';
import { bundle } from './build.mjs';

const out = await bundle('src/cli/silo.ts', 'dist/silo.mjs', 'node');
const r = spawnSync(process.execPath, [out, ...process.argv.slice(2)], { stdio: 'inherit' });
process.exit(r.status ?? 1);
