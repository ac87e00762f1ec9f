// `npm run bench [-- suite] [--quick] [--filter text] [--reductions tree|subgroups] [suite flags]`: runs a
// benchmark suite on the current adapter, prints a table and writes JSON to bench/results/.
import { mkdirSync, writeFileSync } from 'node:fs';
import { Engine } from '../src/engine/device.js';
import { runKernelBench } from './kernels.js';
import { parseModelArgs, runModelBench } from './models.js';
import { runSolverBench } from './solvers.js';
import { parseTrainingArgs, runTrainingBench } from './training.js';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const suite = args.find((a) => !a.startsWith('--')) ?? 'kernels';
  const quick = args.includes('--quick');
  const fi = args.indexOf('--filter');
  const filter = fi >= 0 ? args[fi + 1] : undefined;
  // Bad flags fail before the adapter is set up.
  const modelArgs = suite === 'models' ? parseModelArgs(args) : undefined;
  if (suite === 'training') parseTrainingArgs(args);
  const ri = args.indexOf('--reductions');
  const reductions = ri >= 0 ? args[ri + 1] : undefined;
  if (ri >= 0 && reductions !== 'tree' && reductions !== 'subgroups') {
    throw new Error(`--reductions takes tree or subgroups, got ${reductions ?? 'nothing'}`);
  }
  // Default: the engine's choice (subgroups on hardware adapters that can).
  const engine = await Engine.create(reductions ? { subgroupReductions: reductions === 'subgroups' } : {});
  console.log(engine.summary());
  let payload: unknown;
  if (suite === 'kernels') payload = await runKernelBench(engine, { quick, filter });
  else if (suite === 'models') payload = await runModelBench(engine, { filter, ...modelArgs });
  else if (suite === 'solvers') payload = await runSolverBench(engine, { filter, args });
  else if (suite === 'training') payload = await runTrainingBench(engine, { args });
  else throw new Error(`unknown benchmark suite "${suite}" (available: kernels, models, solvers, training)`);
  const adapter = (engine.info.description || engine.info.architecture || engine.info.vendor || 'adapter').split(/[\s:(]/)[0]!.toLowerCase();
  mkdirSync('bench/results', { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = `bench/results/${suite}-${adapter}-${stamp}.json`;
  writeFileSync(
    file,
    JSON.stringify({ suite, date: new Date().toISOString(), adapter: engine.info, limits: engine.limits, subgroupReductions: engine.subgroupReductions, quick, filter, command: `npm run bench -- ${args.join(' ')}`.trim(), ...(payload as object) }, null, 2),
  );
  console.log(`\nwrote ${file}`);
  engine.destroy();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
