// `npm run restore-matrix [-- --steps N] [--methods a,b] [--tasks a,b] [--photo path]`: runs `silo restore`
// with the tiny golden models on a real photo for every method x task and prints a markdown table of
// timings, dispatch counts (autoencoder dispatches inside the loop) and metrics. Outputs (PNGs, JSON
// reports, the table) go to bench/results/restore-matrix-<date>/. The tiny models have random weights:
// the images are not restorations, the run proves the pipeline end to end and measures its costs.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { bundle } from './build.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const steps = arg('steps', '2');
const methods = arg('methods', 'silo-cnn,latent-dps,psld').split(',');
const tasks = arg('tasks', 'gaussian_blur,motion_blur,sr4,sr8,inpaint_center,inpaint_random,jpeg10,avgpool4').split(',');
const photo = arg('photo', '../shared/assets/images/faces256/ffhq_69037.png');
const golden = arg('golden', '../shared/golden');
const pixelSize = arg('pixel-size', '64');

const cli = await bundle('src/cli/silo.ts', 'dist/silo.mjs', 'node');
const dir = `bench/results/restore-matrix-${new Date().toISOString().replace(/[:.]/g, '-')}`;
mkdirSync(dir, { recursive: true });
const kernel = `${dir}/motion_kernel.txt`;
writeFileSync(kernel, Array.from({ length: 9 }, (_, i) => Array.from({ length: 9 }, (_, j) => (i === j ? 1 : Math.abs(i - j) === 1 ? 0.25 : 0)).join(' ')).join('\n'));

const rows = [];
for (const method of methods) {
  for (const task of tasks) {
    const base = `${dir}/${method}-${task}`;
    const args = [cli, 'restore', '--golden', golden, '--method', method, '--ground-truth', photo, '--task', task, '--steps', steps, '--out', `${base}.png`, '--report', `${base}.json`, '--measurement-out', `${base}-y.png`, '--quiet'];
    if (method !== 'silo-cnn') args.push('--size', pixelSize);
    if (task === 'motion_blur') args.push('--kernel', kernel);
    process.stderr.write(`${method} ${task} ... `);
    const t0 = Date.now();
    const r = spawnSync(process.execPath, args, { encoding: 'utf8' });
    const wall = (Date.now() - t0) / 1000;
    if (r.status !== 0) {
      process.stderr.write(`FAILED (${r.status})\n${r.stderr}\n`);
      rows.push(`| ${method} | ${task} | FAILED: ${(r.stderr.trim().split('\n').pop() ?? '').replace(/\|/g, '/')} | | | | | |`);
      continue;
    }
    const rep = JSON.parse(readFileSync(`${base}.json`, 'utf8'));
    process.stderr.write(`${wall.toFixed(0)} s\n`);
    const m = rep.metrics;
    rows.push(
      `| ${method} | ${task} | ${rep.settings.size} | ${(rep.timings_ms.per_step / 1000).toFixed(1)} | ${Math.round(rep.dispatches.per_step)} | ${rep.dispatches.autoencoder_in_loop} | ${(rep.peak_gpu_bytes.loop_step / 2 ** 20).toFixed(0)} | ${m.psnr.toFixed(2)} / ${m.consistency_psnr.toFixed(2)} |`,
    );
  }
}
const table = [
  `Command: \`npm run restore-matrix -- --steps ${steps}\` (photo ${photo}; tiny golden models, random weights; pixel methods at ${pixelSize}x${pixelSize}, silo-cnn at the golden operator's 512x512).`,
  '',
  '| method | task | size | s/step | dispatches/step | autoencoder dispatches in loop | peak MiB/step | PSNR / consistency PSNR (dB) |',
  '|---|---|---|---|---|---|---|---|',
  ...rows,
].join('\n');
writeFileSync(`${dir}/table.md`, table + '\n');
console.log(table);
console.log(`\nwrote ${dir}/`);
