// `npm run bench -- training`: one optimizer step of SILO's CNN operator as `silo train` takes it (the
// training pass, the L1 loss, the parameter gradients and an Adam update, one program), timed per operator
// width. Defaults are the TAEF2 proof's shapes (docs/training.md): 32 latent channels, 16x16 latents
// (128x128 crops), batch 16. The latents are seeded noise: the time does not depend on their values.
// Flags: --width N (default 1, 2 and 4), --batch N, --latent N, --channels N, --steps N (timed steps after
// one warm-up, default 2), --profile (one more step with timestamp queries: GPU time by kind of op),
// --recompute (also time the baseline: the loss from the plain forward and the gradients from
// degradationModelGrads, which re-runs the forward, as the trainer did before its training pass).

import type { Engine } from '../src/engine/device.js';
import { runProgram, type Recorder } from '../src/engine/recorder.js';
import { regressionLoss } from '../src/engine/ops/loss.js';
import { degradationConfig } from '../src/models/silo/config.js';
import { newDegradationModel } from '../src/solvers/training/init.js';
import { cnnOperator } from '../src/solvers/training/operators.js';
import { degradationModelGrads, type ParamGrads } from '../src/models/silo/cnn-vjp.js';
import type { Tensor } from '../src/engine/tensor.js';
import { Adam } from '../src/solvers/training/adam.js';
import { opKindBreakdown, printOpKinds, printTable, randomArray, timeProgram, type OpKindTime } from './harness.js';
import { BenchArgsError } from './solvers.js';

export interface TrainingBenchArgs {
  widths: number[];
  batch: number;
  latent: number;
  channels: number;
  steps: number;
  profile: boolean;
  recompute: boolean;
}

/** The suite's own flags (main.ts's --filter and --quick are ignored here; --quick means one timed step). */
export function parseTrainingArgs(args: readonly string[]): TrainingBenchArgs {
  const int = (flag: string, min: number, max: number): number | undefined => {
    const i = args.lastIndexOf(flag);
    if (i < 0) return undefined;
    const v = args[i + 1];
    if (v === undefined || v.startsWith('--')) throw new BenchArgsError(`${flag} needs a value`);
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new BenchArgsError(`${flag} must be an integer in [${min}, ${max}], got "${v}"`);
    return n;
  };
  const width = int('--width', 1, 16);
  return {
    widths: width === undefined ? [1, 2, 4] : [width],
    batch: int('--batch', 1, 256) ?? 16,
    latent: int('--latent', 1, 256) ?? 16,
    channels: int('--channels', 1, 256) ?? 32,
    steps: int('--steps', 1, 100) ?? (args.includes('--quick') ? 1 : 2),
    profile: args.includes('--profile'),
    recompute: args.includes('--recompute'),
  };
}

export interface TrainingResult {
  width: number;
  parameters: number;
  msPerStep: number;
  dispatches: number;
  /** GPU time by kind of op of one profiled step (--profile on an adapter with timestamp queries). */
  profile?: OpKindTime[];
  /** --recompute: the baseline step, timed in the same run. */
  recompute?: { msPerStep: number; dispatches: number };
}

export async function runTrainingBench(engine: Engine, opts: { args?: readonly string[] } = {}): Promise<{ settings: TrainingBenchArgs; results: TrainingResult[] }> {
  const a = parseTrainingArgs(opts.args ?? []);
  console.log(`SILO CNN operator training step: batch ${a.batch}, ${a.channels} x ${a.latent} x ${a.latent} latents, Adam; 1 warm-up + ${a.steps} timed step(s) per width`);
  const results: TrainingResult[] = [];
  for (const width of a.widths) {
    const config = degradationConfig({ latent_dim: a.channels, sigma_condition: true, latent_size: a.latent, sigma_emb_dim: 320, width });
    const loaded = await newDegradationModel(engine, config, 0);
    const op = cnnOperator(loaded.model);
    const params = op.parameters();
    const opt = new Adam(engine, params, { lr: 1e-4 });
    const shape = [a.batch, a.channels, a.latent, a.latent];
    const n = shape.reduce((p, d) => p * d, 1);
    const z = engine.tensor(randomArray(n, 1), shape, 'f32', 'z');
    const target = engine.tensor(randomArray(n, 2), shape, 'f32', 'target');
    const emb = engine.tensor(randomArray(a.batch * 320, 3), [a.batch, 320], 'f32', 'sigma_emb');
    try {
      let dispatches = 0;
      const step = (baseline: boolean) => (rec: Recorder) =>
        rec.engine.tidy(() => {
          let output: Tensor;
          let grads: (cotangent: Tensor) => ParamGrads;
          if (baseline) {
            output = loaded.model.forward(rec, z, emb);
            grads = (cot) => degradationModelGrads(rec, loaded.model, z, emb, cot).params!;
          } else ({ output, grads } = op.trainingPass(rec, op.input(rec, z), emb));
          const l = regressionLoss(rec, output, target, { kind: 'l1', clamp: [-4, 4] });
          const g = grads(l.grad);
          opt.update(rec, params.map((p) => g[p.name]!));
          dispatches = rec.dispatches;
          return l.loss;
        });
      const record = step(false);
      const t = await timeProgram(engine, `train step width ${width}`, record, { minReps: a.steps, maxReps: a.steps });
      const r: TrainingResult = { width, parameters: params.reduce((s, p) => s + p.tensor.size, 0), msPerStep: t.medianMs, dispatches };
      if (a.recompute) {
        const b = await timeProgram(engine, `train step width ${width} (recompute)`, step(true), { minReps: a.steps, maxReps: a.steps });
        r.recompute = { msPerStep: b.medianMs, dispatches };
      }
      if (a.profile && engine.hasTimestamps) {
        const { result, report } = await runProgram(engine, `train step width ${width} (profiled)`, record, { profile: true, wait: true });
        result.dispose();
        r.profile = opKindBreakdown(report.ops);
        printOpKinds(`width ${width}: GPU time by kind of op (one profiled step, ${report.profiledMs?.toFixed(0)} ms)`, r.profile, 12);
      }
      console.log(`  width ${width}: ${(r.msPerStep / 1000).toFixed(2)} s/step, ${r.parameters} parameters, ${r.dispatches} dispatches${r.recompute ? `; recomputing baseline ${(r.recompute.msPerStep / 1000).toFixed(2)} s/step, ${r.recompute.dispatches} dispatches` : ''}`);
      results.push(r);
    } finally {
      for (const t of [z, target, emb]) t.dispose();
      opt.dispose();
      op.dispose();
      loaded.dispose();
    }
  }
  printTable(
    `SILO CNN operator training steps on ${engine.summary()}`,
    results.map((r) => ({
      width: String(r.width),
      parameters: String(r.parameters),
      's/step': r.msPerStep / 1000,
      dispatches: String(r.dispatches),
      'recompute s/step': r.recompute ? r.recompute.msPerStep / 1000 : null,
      'recompute dispatches': r.recompute ? String(r.recompute.dispatches) : null,
    })),
  );
  return { settings: a, results };
}
