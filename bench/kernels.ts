// Kernel microbenchmarks: each kernel beside a naive baseline measured in the same run, and both as a
// fraction of the adapter's FMA / copy ceilings measured by probes in the same run.

import type { Engine } from '../src/engine/device.js';
import type { Recorder } from '../src/engine/recorder.js';
import type { Tensor } from '../src/engine/tensor.js';
import { matmul, matmulNaive } from '../src/engine/ops/matmul.js';
import { conv2d, conv2dNaive } from '../src/engine/ops/conv2d.js';
import { groupNorm, layerNorm } from '../src/engine/ops/norm.js';
import { softmax } from '../src/engine/ops/softmax.js';
import { softmaxBackward } from '../src/engine/ops/softmax-backward.js';
import { attention, attentionNaive } from '../src/engine/ops/attention.js';
import { groupNormSiluNaive } from './naive.js';
import { measureCeilings, type Ceilings } from './probes.js';
import { timeProgram, printTable, randomArray, type Row } from './harness.js';

interface KernelCase {
  group: string;
  name: string;
  /** FLOP per run (compute-bound kernels) or bytes moved (memory-bound kernels). */
  work: number;
  unit: 'GFLOP/s' | 'GB/s';
  inputs: (e: Engine) => Tensor[];
  ours: (rec: Recorder, t: Tensor[]) => Tensor;
  naive?: (rec: Recorder, t: Tensor[]) => Tensor;
  /** Why there is no naive measurement. */
  naiveNote?: string;
}

const rand = (e: Engine, shape: number[], seed: number, name: string) =>
  e.tensor(randomArray(shape.reduce((a, b) => a * b, 1), seed), shape, 'f32', name);

function matmulCase(m: number, k: number, n: number, transB = false): KernelCase {
  return {
    group: 'matmul',
    name: `${m}x${k} @ ${k}x${n}${transB ? ' (B^T)' : ''}`,
    work: 2 * m * n * k,
    unit: 'GFLOP/s',
    inputs: (e) => [rand(e, [m, k], 1, 'a'), rand(e, transB ? [n, k] : [k, n], 2, 'b')],
    ours: (rec, [a, b]) => matmul(rec, a!, b!, { transB }),
    naive: transB ? undefined : (rec, [a, b]) => matmulNaive(rec, a!, b!),
    naiveNote: transB ? 'naive kernel has no transpose' : undefined,
  };
}

function convCase(c: number, hw: number): KernelCase {
  return {
    group: 'conv2d 3x3',
    name: `${c}->${c} @ ${hw}x${hw}`,
    work: 2 * c * hw * hw * c * 9,
    unit: 'GFLOP/s',
    inputs: (e) => [rand(e, [1, c, hw, hw], 3, 'x'), rand(e, [c, c, 3, 3], 4, 'w'), rand(e, [c], 5, 'b')],
    ours: (rec, [x, w, b]) => conv2d(rec, x!, w!, b!, { padding: 1 }),
    naive: (rec, [x, w, b]) => conv2dNaive(rec, x!, w!, b!, { padding: 1 }),
  };
}

function groupNormCase(c: number, hw: number): KernelCase {
  const bytes = c * hw * hw * 4;
  return {
    group: 'group norm + SiLU',
    name: `32 groups, ${c} ch @ ${hw}x${hw}`,
    work: 2 * bytes, // one read and one write of the activation (the ideal)
    unit: 'GB/s',
    inputs: (e) => [rand(e, [1, c, hw, hw], 6, 'x'), rand(e, [c], 7, 'w'), rand(e, [c], 8, 'b')],
    ours: (rec, [x, w, b]) => groupNorm(rec, x!, 32, w!, b!, { act: 'silu' }),
    naive: (rec, [x, w, b]) => groupNormSiluNaive(rec, x!, 32, w!, b!),
  };
}

function attentionCase(lq: number, lk: number, heads: number, d: number, naiveFits: boolean): KernelCase {
  return {
    group: 'attention',
    name: `${lq}q x ${lk}k, ${heads} heads x ${d}`,
    work: 4 * heads * lq * lk * d,
    unit: 'GFLOP/s',
    inputs: (e) => [rand(e, [1, lq, heads * d], 9, 'q'), rand(e, [1, lk, heads * d], 10, 'k'), rand(e, [1, lk, heads * d], 11, 'v')],
    ours: (rec, [q, k, v]) => attention(rec, q!, k!, v!, { heads }),
    naive: naiveFits ? (rec, [q, k, v]) => attentionNaive(rec, q!, k!, v!, { heads }) : undefined,
    naiveNote: naiveFits ? undefined : `naive score matrix ${((heads * lq * lk * 4) / 2 ** 20).toFixed(0)} MiB exceeds the binding limit`,
  };
}

export function kernelCases(engine: Engine, quick: boolean): KernelCase[] {
  const maxBind = engine.limits.maxStorageBufferBindingSize;
  const fits = (heads: number, lq: number, lk: number) => heads * lq * lk * 4 <= maxBind;
  const cases: KernelCase[] = [
    matmulCase(256, 256, 256),
    matmulCase(512, 512, 512),
    matmulCase(1024, 1024, 1024),
    matmulCase(4096, 320, 320),
    matmulCase(4096, 320, 320, true),
    matmulCase(1024, 640, 2560),
    convCase(320, 32),
    convCase(640, 16),
    convCase(1280, 8),
    groupNormCase(320, 64),
    groupNormCase(640, 32),
    attentionCase(1024, 1024, 8, 80, fits(8, 1024, 1024)),
    attentionCase(4096, 4096, 8, 40, fits(8, 4096, 4096)),
    attentionCase(4096, 77, 8, 40, fits(8, 4096, 77)),
  ];
  if (quick) return cases.filter((c) => c.work < 5e9 || c.unit === 'GB/s');
  return cases;
}

// Workgroup reductions, tree vs subgroups (engine.subgroupReductions), on the layouts that reduce across a
// workgroup (a workgroup per row: what GPUs run; CPU adapters default to a thread per row).
interface ReductionCase {
  name: string;
  inputs: (e: Engine) => Tensor[];
  run: (rec: Recorder, t: Tensor[]) => Tensor;
}

function reductionCases(): ReductionCase[] {
  return [
    {
      name: 'group norm + SiLU, 32 groups, 320 ch @ 64x64',
      inputs: (e) => [rand(e, [1, 320, 64, 64], 6, 'x'), rand(e, [320], 7, 'w'), rand(e, [320], 8, 'b')],
      run: (rec, [x, w, b]) => groupNorm(rec, x!, 32, w!, b!, { act: 'silu', layout: 'group' }),
    },
    {
      name: 'layer norm, 4096 rows of 320',
      inputs: (e) => [rand(e, [4096, 320], 12, 'x'), rand(e, [320], 13, 'w'), rand(e, [320], 14, 'b')],
      run: (rec, [x, w, b]) => layerNorm(rec, x!, [320], w!, b!, { layout: 'group' }),
    },
    {
      name: 'softmax, 8 x 1024 rows of 1024',
      inputs: (e) => [rand(e, [8 * 1024, 1024], 15, 'x')],
      run: (rec, [x]) => softmax(rec, x!, { scale: 0.125, layout: 'group' }),
    },
    {
      name: 'softmax backward, 8 x 1024 rows of 1024',
      inputs: (e) => [rand(e, [8 * 1024, 1024], 16, 'y'), rand(e, [8 * 1024, 1024], 17, 'g')],
      run: (rec, [y, g]) => softmaxBackward(rec, y!, g!, { scale: 0.125, layout: 'group' }),
    },
  ];
}

export interface ReductionResult {
  name: string;
  treeMs: number;
  subgroupMs: number;
  /** treeMs / subgroupMs: above 1 when subgroups are faster. */
  speedup: number;
}

async function runReductionBench(engine: Engine, filter?: string): Promise<ReductionResult[]> {
  if (!engine.canSubgroupReduce) {
    console.log('reductions: skipped (this adapter cannot reduce with subgroups)');
    return [];
  }
  const before = engine.subgroupReductions;
  const results: ReductionResult[] = [];
  try {
    for (const c of reductionCases()) {
      if (filter && !`reductions ${c.name}`.includes(filter)) continue;
      const inputs = c.inputs(engine);
      const ms: number[] = [];
      for (const on of [false, true]) {
        engine.subgroupReductions = on;
        ms.push((await timeProgram(engine, `reductions ${c.name} ${on ? 'subgroups' : 'tree'}`, (rec) => c.run(rec, inputs))).medianMs);
      }
      for (const t of inputs) t.dispose();
      results.push({ name: c.name, treeMs: ms[0]!, subgroupMs: ms[1]!, speedup: ms[0]! / ms[1]! });
      console.log(`  reductions ${c.name}: tree ${ms[0]!.toFixed(2)} ms, subgroups ${ms[1]!.toFixed(2)} ms`);
    }
  } finally {
    engine.subgroupReductions = before;
  }
  printTable(
    'workgroup reductions (a workgroup per row): tree in workgroup memory vs subgroup operations',
    results.map((r) => ({ kernel: r.name, 'tree ms': r.treeMs, 'subgroups ms': r.subgroupMs, speedup: `${r.speedup.toFixed(2)}x` })),
  );
  return results;
}

export interface KernelResult {
  group: string;
  name: string;
  unit: string;
  oursMs: number;
  oursRate: number;
  naiveMs: number | null;
  naiveRate: number | null;
  speedup: number | null;
  oursFractionOfCeiling: number;
  naiveFractionOfCeiling: number | null;
  note?: string;
}

export async function runKernelBench(
  engine: Engine,
  opts: { quick?: boolean; filter?: string } = {},
): Promise<{ ceilings: Ceilings; results: KernelResult[]; reductions: ReductionResult[] }> {
  const ceilings = await measureCeilings(engine);
  console.log(`ceilings: FMA ${ceilings.fmaGflops.toFixed(2)} GFLOP/s, copy ${ceilings.copyGBs.toFixed(2)} GB/s`);
  const results: KernelResult[] = [];
  for (const c of kernelCases(engine, !!opts.quick)) {
    if (opts.filter && !`${c.group} ${c.name}`.includes(opts.filter)) continue;
    const inputs = c.inputs(engine);
    const scale = c.unit === 'GFLOP/s' ? 1e6 : 1e6; // work / (ms * 1e6) = G per second
    const ceiling = c.unit === 'GFLOP/s' ? ceilings.fmaGflops : ceilings.copyGBs;
    const ours = await timeProgram(engine, `${c.group} ${c.name}`, (rec) => c.ours(rec, inputs));
    const naive = c.naive ? await timeProgram(engine, `${c.group} ${c.name} naive`, (rec) => c.naive!(rec, inputs), { maxReps: 5, budgetMs: 2000 }) : null;
    const oursRate = c.work / (ours.medianMs * scale);
    const naiveRate = naive ? c.work / (naive.medianMs * scale) : null;
    const r: KernelResult = {
      group: c.group,
      name: c.name,
      unit: c.unit,
      oursMs: ours.medianMs,
      oursRate,
      naiveMs: naive?.medianMs ?? null,
      naiveRate,
      speedup: naive ? naive.medianMs / ours.medianMs : null,
      oursFractionOfCeiling: oursRate / ceiling,
      naiveFractionOfCeiling: naiveRate !== null ? naiveRate / ceiling : null,
    };
    if (c.naiveNote) r.note = c.naiveNote;
    results.push(r);
    for (const t of inputs) t.dispose();
    console.log(`  ${c.group} ${c.name}: ${ours.medianMs.toFixed(2)} ms${naive ? `, naive ${naive.medianMs.toFixed(2)} ms` : ''}`);
  }
  const rows: Row[] = results.map((r) => ({
    kernel: `${r.group}: ${r.name}`,
    'ms': r.oursMs,
    rate: `${r.oursRate.toFixed(2)} ${r.unit}`,
    '% ceil': 100 * r.oursFractionOfCeiling,
    'naive ms': r.naiveMs,
    'naive rate': r.naiveRate === null ? (r.note ?? null) : `${r.naiveRate.toFixed(2)} ${r.unit}`,
    'naive % ceil': r.naiveFractionOfCeiling === null ? null : 100 * r.naiveFractionOfCeiling,
    speedup: r.speedup === null ? null : `${r.speedup.toFixed(1)}x`,
  }));
  printTable(`kernels on ${engine.summary()}\nceilings: FMA ${ceilings.fmaGflops.toFixed(2)} GFLOP/s, copy ${ceilings.copyGBs.toFixed(2)} GB/s`, rows);
  const reductions = await runReductionBench(engine, opts.filter);
  return { ceilings, results, reductions };
}
