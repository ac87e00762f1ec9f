// Bundles bench/main.ts for Node (WGSL inlined as text) and runs it with the given arguments.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { bundle } from './build.mjs';

mkdirSync('dist', { recursive: true });
const out = await bundle('bench/main.ts', 'dist/bench.mjs', 'node');
// With both Vulkan CPU drivers installed Dawn would pick SwiftShader; benchmark lavapipe unless told.
const env = { ...process.env };
const LVP = '/usr/share/vulkan/icd.d/lvp_icd.json';
if (!env.VK_ICD_FILENAMES && !env.VK_DRIVER_FILES && existsSync(LVP)) env.VK_ICD_FILENAMES = LVP;
const r = spawnSync(process.execPath, [out, ...process.argv.slice(2)], { stdio: 'inherit', env });
process.exit(r.status ?? 1);
