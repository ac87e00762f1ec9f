// Runs the restore loop's guided steps: the first step of each shape is captured (replay.ts) and the
// following steps replay it with their timestep and noise stream, so a step costs the JavaScript of
// re-encoding its commands instead of recording every op again. The numbers are the same bit for bit:
// the same kernels read the same buffers, and every value that follows t (the time projection, the
// scheduler's coefficients, the noise stream's offset) is recomputed on the CPU as a recording would.
// Steps that differ in shape (the last DDPM step adds no noise) and models that read t as a plain
// number are recorded as before.

import type { Engine } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import type { ProgramReport, Recorder } from '../engine/recorder.js';
import { runProgram } from '../engine/recorder.js';
import { captureProgram, type PreparedReplay, type ReplayProgram, type ReplayReport } from '../engine/replay.js';
import { mapScalar, stepParam, type Scalar } from '../engine/step-value.js';
import { copy } from '../engine/ops/elementwise.js';
import { nonFiniteCountInto, reduceTensor } from '../engine/ops/reduce.js';
import type { GuidedStep } from '../solvers/samplers/guided.js';
import { autoencoderDispatches } from './loop-report.js';

/** Records one guided step from zIn at timestep t with the DDPM noise stream `noiseOffset` (no noise: undefined). */
export type RecordStep = (rec: Recorder, zIn: Tensor, t: Scalar, noiseOffset: Scalar | undefined) => GuidedStep;

/** One step's outcome; the caller owns the tensors. */
export interface StepOutcome {
  zPrev: Tensor;
  residualNorm: Tensor;
  /** The x0 estimate, when asked for (previews). */
  x0?: Tensor;
  /** [residual norm, non-finite count of z_{t-1}]. */
  status: Float32Array;
  dispatches: number;
  autoencoderDispatches: number;
  peakLiveBytes: number;
  /** Whether the step was a replay of a captured one. */
  replayed: boolean;
  /** JavaScript time to record (or write the values of and re-encode) and submit the step (ms). */
  encodeMs: number;
  /** Of which the loop waited for: a replay encoded while the previous step ran exposes only its submit. */
  exposedEncodeMs: number;
}

/** A step the loop will run. */
export interface StepPlan {
  i: number;
  t: number;
  /** The step adds DDPM noise (stream i + 1). */
  noisy: boolean;
  /** Return the x0 estimate too (for a preview). */
  keepX0: boolean;
}

interface Ahead {
  plan: StepPlan;
  /** The latent it reads (the previous step's z_{t-1}). */
  z: Tensor;
  prepared: PreparedReplay;
  zPrev: Tensor;
  residualNorm: Tensor;
  x0?: Tensor;
}

type StepProgramResult = GuidedStep & { status: Tensor };

/** Appends the step's status [residual norm, non-finite count of z_{t-1}]: read once, no extra program. */
function withStatus(rec: Recorder, r: GuidedStep): StepProgramResult {
  const status = rec.engine.empty([2], 'f32', 'step_status');
  reduceTensor(rec, r.residualNorm, 'sum', { op: 'step_status', into: { tensor: status, slot: 0 } });
  nonFiniteCountInto(rec, r.zPrev, status, 1);
  return { ...r, status };
}

function stepTensors(r: StepProgramResult): Tensor[] {
  const glue = (r as { glueNorm?: Tensor }).glueNorm;
  return [r.zPrev, r.eps, r.x0, r.prev, r.estimate, r.residualNorm, r.grad, r.status, ...Object.values(r.extras), ...(glue ? [glue] : [])];
}

export class StepRunner {
  private program: ReplayProgram<StepProgramResult> | undefined;
  /** The next step's replay, encoded while the current one ran. */
  private ahead: Ahead | undefined;
  /** The captured program's input latent (its own tensor: the loop's latents come and go). */
  private zSlot: Tensor | undefined;
  private captured: { autoencoder: number; peak: number } | undefined;

  constructor(
    private readonly engine: Engine,
    private readonly recordStep: RecordStep,
    /** Whether steps may be captured and replayed. */
    private readonly replay: boolean,
  ) {}

  /** Runs the step `plan` from z. With `next` (the following step), a replay of it is encoded while this one runs. */
  async run(plan: StepPlan, z: Tensor, next?: StepPlan): Promise<StepOutcome> {
    const { i, t, noisy, keepX0 } = plan;
    if (!this.replay || !noisy) {
      // A step of another shape: the program's scratch goes back to the pool first.
      this.release();
      return this.recorded(i, t, z, noisy, keepX0);
    }
    if (!this.program) return this.capture(i, t, z, keepX0);
    const p = this.program;
    let ahead = this.ahead;
    this.ahead = undefined;
    if (ahead && (ahead.plan !== plan || ahead.z !== z)) {
      this.dropAhead(ahead);
      ahead = undefined;
    }
    const cur = ahead ?? this.prepareStep(plan, z);
    let report: ReplayReport;
    try {
      const running = cur.prepared.submit({ wait: true });
      // Encode the next step while this one runs (its values are queued behind it).
      if (next && next.noisy) this.ahead = this.prepareStep(next, cur.zPrev);
      report = await running;
    } catch (e) {
      this.dropAhead(cur);
      throw e;
    }
    const status = await p.result.status.read();
    return {
      zPrev: cur.zPrev, residualNorm: cur.residualNorm, x0: cur.x0, status, dispatches: p.dispatches, autoencoderDispatches: this.captured!.autoencoder,
      peakLiveBytes: this.captured!.peak, replayed: true, encodeMs: report.encodeMs, exposedEncodeMs: ahead ? report.submitMs : report.encodeMs,
    };
  }

  /** A replay of `plan` from z, encoded with fresh tensors for the outputs the loop keeps. */
  private prepareStep(plan: StepPlan, z: Tensor): Ahead {
    const p = this.program!;
    const zPrev = this.engine.empty(z.shape, z.dtype, 'z_prev');
    const residualNorm = this.engine.empty(p.result.residualNorm.shape, 'f32', 'residual_norm');
    const x0 = plan.keepX0 ? this.engine.empty(p.result.x0.shape, p.result.x0.dtype, 'x0') : undefined;
    const after: [Tensor, Tensor][] = [[p.result.zPrev, zPrev], [p.result.residualNorm, residualNorm]];
    if (x0) after.push([p.result.x0, x0]);
    try {
      const prepared = p.prepare({ t: plan.t, step: plan.i }, { inputs: [[this.zSlot!, z]], after });
      return { plan, z, prepared, zPrev, residualNorm, x0 };
    } catch (e) {
      for (const x of [zPrev, residualNorm, x0]) x?.dispose();
      throw e;
    }
  }

  private dropAhead(a: Ahead): void {
    a.prepared.discard();
    for (const x of [a.zPrev, a.residualNorm, a.x0]) x?.dispose();
  }

  private async recorded(i: number, t: number, z: Tensor, noisy: boolean, keepX0: boolean): Promise<StepOutcome> {
    const t0 = performance.now();
    let encodeMs = 0;
    const { result, report } = await runProgram(
      this.engine,
      `restore/step_${i}`,
      (rec) => {
        const r = withStatus(rec, this.recordStep(rec, z, t, noisy ? i + 1 : undefined));
        encodeMs = performance.now() - t0;
        return r;
      },
      { wait: true },
    );
    const kept = new Set<Tensor>([result.zPrev, result.residualNorm, ...(keepX0 ? [result.x0] : [])]);
    let status: Float32Array;
    try {
      status = await result.status.read();
    } finally {
      for (const x of stepTensors(result)) if (!kept.has(x)) x.dispose();
    }
    return {
      zPrev: result.zPrev, residualNorm: result.residualNorm, x0: keepX0 ? result.x0 : undefined, status,
      dispatches: report.dispatches, autoencoderDispatches: autoencoderDispatches(report), peakLiveBytes: report.peakLiveBytes,
      replayed: false, encodeMs, exposedEncodeMs: encodeMs,
    };
  }

  private async capture(i: number, t: number, z: Tensor, keepX0: boolean): Promise<StepOutcome> {
    const t0 = performance.now();
    const slot = await runProgram(this.engine, 'restore/step_input', (rec) => copy(rec, z));
    this.zSlot = slot.result;
    let encodeMs = 0;
    const captured = captureProgram(
      this.engine,
      'restore/step',
      { t, step: i },
      (rec) => {
        const r = withStatus(rec, this.recordStep(rec, this.zSlot!, stepParam('t', t), mapScalar(stepParam('step', i), (s) => s + 1)));
        encodeMs = performance.now() - t0;
        return r;
      },
      { wait: true },
    );
    let program: ReplayProgram<StepProgramResult>;
    let report: ProgramReport;
    try {
      ({ program, report } = await captured);
    } catch (e) {
      this.release();
      throw e;
    }
    this.program = program;
    this.captured = { autoencoder: autoencoderDispatches(report), peak: report.peakLiveBytes };
    // The loop owns what it keeps: copies of the program's outputs (the next replay overwrites those).
    const out = await runProgram(this.engine, 'restore/step_outputs', (rec) => ({
      zPrev: copy(rec, program.result.zPrev),
      residualNorm: copy(rec, program.result.residualNorm),
      x0: keepX0 ? copy(rec, program.result.x0) : undefined,
    }));
    const status = await program.result.status.read();
    return {
      ...out.result, status, dispatches: report.dispatches, autoencoderDispatches: this.captured.autoencoder,
      peakLiveBytes: report.peakLiveBytes, replayed: false, encodeMs, exposedEncodeMs: encodeMs,
    };
  }

  /** Frees the captured program, if any, and a step encoded ahead. */
  release(): void {
    if (this.ahead) this.dropAhead(this.ahead);
    this.ahead = undefined;
    this.program?.dispose();
    this.zSlot?.dispose();
    this.program = undefined;
    this.zSlot = undefined;
  }
}
