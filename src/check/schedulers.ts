// Golden case `schedulers`: DDPM and DDIM built from the manifest's scheduler_config_input (SD-1.5's
// PNDM config, through from_config as SILO does), checked on the noise tables, set_timesteps(N) for every
// N the golden file holds, DDPM's _get_variance, and the step traces. Each trace runs as a sampler does:
// one recorded program, starting from the trace's first sample and feeding each prev_sample into the next
// step (with the trace's model outputs and noises), read back only at the end.

import type { Engine } from '../engine/device.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import type { Tensor } from '../engine/tensor.js';
import { runProgram } from '../engine/recorder.js';
import { SiloError } from '../engine/errors.js';
import { DDIMScheduler } from '../solvers/schedulers/ddim.js';
import { DDPMScheduler } from '../solvers/schedulers/ddpm.js';
import type { Scheduler } from '../solvers/schedulers/scheduler.js';
import type { CaseRunner } from './case.js';
import type { CheckItem, Tolerance } from './compare.js';
import { readSafetensors } from './files.js';
import { caseFileName } from './silo_cnn.js';
import { assertCompared, caseError, enforceContract } from './contract.js';
import type { CaseFiles } from './files.js';

interface TraceSpec {
  scheduler: 'ddpm' | 'ddim';
  num_inference_steps: number;
  step_indices: number[];
  timesteps?: number[];
  eta: number | null;
  noise_used: boolean;
}

const TRACE_KEYS = ['scheduler', 'num_inference_steps', 'step_indices', 'timesteps', 'eta', 'noise_used'];
const TRACE_PARTS = ['t', 'sample', 'model_output', 'noise', 'prev_sample', 'pred_original_sample'];

/** A trace's spec: every key understood, the step indices valid. */
function traceSpec(files: CaseFiles, name: string, raw: unknown): TraceSpec {
  const where = `manifest.json traces.${name}`;
  if (!raw || typeof raw !== 'object') throw caseError(files, where, 'must be an object');
  const spec = raw as Record<string, unknown>;
  for (const k of Object.keys(spec)) if (!TRACE_KEYS.includes(k)) throw caseError(files, `${where}.${k}`, `not understood (known: ${TRACE_KEYS.join(', ')})`);
  if (spec['scheduler'] !== 'ddpm' && spec['scheduler'] !== 'ddim') throw caseError(files, `${where}.scheduler`, `${JSON.stringify(spec['scheduler'])} (known: ddpm, ddim)`);
  if (!Number.isInteger(spec['num_inference_steps'])) throw caseError(files, `${where}.num_inference_steps`, 'must be an integer');
  const idx = spec['step_indices'];
  if (!Array.isArray(idx) || idx.length === 0 || !idx.every((i) => Number.isInteger(i) && i >= 0 && i < (spec['num_inference_steps'] as number))) {
    throw caseError(files, `${where}.step_indices`, 'must be a non-empty list of step indices');
  }
  if (spec['eta'] !== null && spec['eta'] !== undefined && typeof spec['eta'] !== 'number') throw caseError(files, `${where}.eta`, 'must be a number or null');
  if (spec['scheduler'] === 'ddpm' && typeof spec['eta'] === 'number') throw caseError(files, `${where}.eta`, 'DDPM has no eta');
  if (typeof spec['noise_used'] !== 'boolean') throw caseError(files, `${where}.noise_used`, 'must be true or false');
  return spec as unknown as TraceSpec;
}

/** The manifest's resolved configs must be what scheduler_config_input resolves to here. */
function checkResolved(files: CaseFiles, manifest: Record<string, unknown>, scheds: Record<'ddpm' | 'ddim', Scheduler>): void {
  for (const kind of ['ddpm', 'ddim'] as const) {
    const resolved = manifest[`${kind}_config_resolved`];
    if (resolved === undefined) continue;
    let theirs: unknown;
    try {
      theirs = (kind === 'ddpm' ? new DDPMScheduler(resolved as Record<string, unknown>) : new DDIMScheduler(resolved as Record<string, unknown>)).config;
    } catch (e) {
      throw caseError(files, `manifest.json "${kind}_config_resolved"`, (e as Error).message);
    }
    if (JSON.stringify(theirs) !== JSON.stringify(scheds[kind].config)) {
      throw caseError(files, `manifest.json "${kind}_config_resolved"`, `resolves to ${JSON.stringify(theirs)}, but scheduler_config_input gives ${JSON.stringify(scheds[kind].config)}`);
    }
  }
}

function tolerances(manifest: Record<string, unknown>): { table: Tolerance; trace: Tolerance } {
  const s = (manifest['suggested_tolerance'] ?? {}) as Record<string, { atol?: number; rtol?: number }>;
  const cumprod = s['alphas_cumprod'];
  const traces = s['traces'];
  if (!cumprod || !traces) throw new SiloError('schedulers manifest: suggested_tolerance needs alphas_cumprod and traces');
  return {
    // float32 tables: the alphas_cumprod rule for every table (betas, alphas, DDPM variances).
    table: { atol: cumprod.atol ?? 0, rtol: cumprod.rtol ?? 0 },
    trace: { atol: traces.atol ?? 0, rtol: traces.rtol ?? 0 },
  };
}

function slice(golden: SafetensorsFile, name: string, k: number): { data: Float32Array; shape: number[] } {
  const all = golden.getF32(name);
  const shape = golden.info(name).shape.slice(1);
  const n = shape.reduce((a, b) => a * b, 1);
  return { data: all.subarray(k * n, (k + 1) * n), shape };
}

async function runTrace(files: CaseFiles, engine: Engine, sched: Scheduler, golden: SafetensorsFile, name: string, spec: TraceSpec, tol: Tolerance): Promise<CheckItem[]> {
  const p = `trace.${name}`;
  sched.setTimesteps(spec.num_inference_steps);
  const ts = spec.step_indices.map((i) => sched.timesteps[i]!);
  if (spec.timesteps !== undefined && JSON.stringify(spec.timesteps) !== JSON.stringify(ts)) {
    throw caseError(files, `manifest.json traces.${name}.timesteps`, `${JSON.stringify(spec.timesteps)}, but set_timesteps(${spec.num_inference_steps}) at step_indices gives ${JSON.stringify(ts)}`);
  }
  const items: CheckItem[] = [{ name: `${p}.t`, actual: ts, expected: golden.getIntegers(`${p}.t`), tol: { exact: true } }];
  const upload = (what: string, k: number): Tensor => {
    const s = slice(golden, `${p}.${what}`, k);
    return engine.tensor(s.data, s.shape, 'f32', `${p}.${what}[${k}]`);
  };
  const inputs = ts.map((_, k) => ({ mo: upload('model_output', k), noise: spec.noise_used ? upload('noise', k) : undefined }));
  const sample0 = upload('sample', 0);
  const outs: { prev: Tensor; x0: Tensor }[] = [];
  try {
    await runProgram(engine, p, (rec) => {
      let sample = sample0;
      ts.forEach((t, k) => {
        const r = sched.step(rec, inputs[k]!.mo, t, sample, { noise: inputs[k]!.noise, eta: spec.eta ?? undefined });
        outs.push({ prev: r.prevSample, x0: r.predOriginalSample });
        sample = r.prevSample;
      });
    });
    const cat = async (which: 'prev' | 'x0') => {
      const parts = await Promise.all(outs.map((o) => o[which].read()));
      const all = new Float32Array(parts.reduce((n, a) => n + a.length, 0));
      let off = 0;
      for (const a of parts) {
        all.set(a, off);
        off += a.length;
      }
      return all;
    };
    items.push({ name: `${p}.prev_sample`, actual: await cat('prev'), expected: golden.getF32(`${p}.prev_sample`), tol });
    items.push({ name: `${p}.pred_original_sample`, actual: await cat('x0'), expected: golden.getF32(`${p}.pred_original_sample`), tol });
    return items;
  } finally {
    sample0.dispose();
    for (const i of inputs) {
      i.mo.dispose();
      i.noise?.dispose();
    }
    for (const o of outs) {
      o.prev.dispose();
      o.x0.dispose();
    }
  }
}

export const runSchedulers: CaseRunner = async (engine, files, manifest, opts) => {
  const golden = await readSafetensors(files, caseFileName(manifest, 'golden'));
  const config = manifest['scheduler_config_input'] as Record<string, unknown> | undefined;
  if (!config) throw new SiloError('schedulers manifest: no scheduler_config_input');
  if (opts.dtype === 'f16') opts.log?.('schedulers: float32 arithmetic only; f16 storage does not apply, running f32');
  const tol = tolerances(manifest);
  const scheds: Record<'ddpm' | 'ddim', Scheduler> = { ddpm: new DDPMScheduler(config), ddim: new DDIMScheduler(config) };
  const traceNames = Object.keys((manifest['traces'] ?? {}) as object);
  enforceContract(files, manifest, golden, {
    runner: 'schedulers',
    files: ['golden'],
    tensors: [
      'betas', 'alphas', 'alphas_cumprod', /^(ddpm|ddim)\.timesteps\.\d+$/, /^ddpm\.variance\.\d+$/,
      (n: string) => traceNames.some((t) => TRACE_PARTS.some((part) => n === `trace.${t}.${part}`)),
    ],
    choices: ['scheduler_config_input', 'ddpm_config_resolved', 'ddim_config_resolved', 'traces'],
    described: ['timesteps_summary', 'noise_convention'],
  });
  checkResolved(files, manifest, scheds);
  opts.log?.(`schedulers: ${JSON.stringify(scheds.ddpm.config)}`);
  const items: CheckItem[] = [];
  const ddpm = scheds.ddpm as DDPMScheduler;
  for (const name of ['betas', 'alphas', 'alphas_cumprod'] as const) {
    const actual = name === 'betas' ? ddpm.betas : name === 'alphas' ? ddpm.alphas : ddpm.alphasCumprod;
    items.push({ name, actual, expected: golden.getF32(name), tol: tol.table });
  }
  for (const name of golden.names()) {
    const m = /^(ddpm|ddim)\.timesteps\.(\d+)$/.exec(name);
    if (!m) continue;
    const s = scheds[m[1] as 'ddpm' | 'ddim'];
    s.setTimesteps(Number(m[2]));
    items.push({ name, actual: s.timesteps, expected: golden.getIntegers(name), tol: { exact: true } });
  }
  for (const name of golden.names()) {
    const m = /^ddpm\.variance\.(\d+)$/.exec(name);
    if (!m) continue;
    ddpm.setTimesteps(Number(m[1]));
    items.push({ name, actual: ddpm.timesteps.map((t) => ddpm.getVariance(t)), expected: golden.getF32(name), tol: tol.table });
  }
  const traces = (manifest['traces'] ?? {}) as Record<string, TraceSpec>;
  for (const [name, raw] of Object.entries(traces)) {
    const spec = traceSpec(files, name, raw);
    items.push(...(await runTrace(files, engine, scheds[spec.scheduler], golden, name, spec, tol.trace)));
  }
  // A trace's sample, model_output and noise are its inputs (sample[k+1] is checked as prev_sample[k]).
  assertCompared(files, golden, items, (n) => /^trace\..*\.(sample|model_output|noise)$/.test(n));
  return items;
};
