// The training loop both surfaces run (the CLI's `silo train` and the page): steps until the target
// count or a stop request, validation every k steps, checkpoints every k steps and when stopped, and a
// report per step. Saving is the platform's (an atomic file in Node, a download in a page); the loop only
// hands over the bytes.

import { serializeSafetensors } from '../../formats/safetensors.js';
import { assertArg } from '../../engine/errors.js';
import { checkpointTensors, exportParameters } from './checkpoint.js';
import type { PairSource } from './sources.js';
import type { OperatorTrainer, StepReport, ValidationReport } from './trainer.js';

export interface ValidationSetup {
  images: { name: string; data: Float32Array; shape: readonly number[] }[];
  /** The noise level the held-out targets use. */
  sigma: number;
  /** Validate every this many steps (and at the start and the end). */
  every: number;
}

export interface TrainLoopOptions {
  trainer: OperatorTrainer;
  source: PairSource;
  /** Train until the optimizer has taken this many steps (a resumed run counts on from its checkpoint). */
  steps: number;
  validation?: ValidationSetup;
  /** Write a checkpoint every this many steps (and at the end or when stopped); 0 only at the end. */
  checkpointEvery?: number;
  /** Receives a checkpoint's bytes (parameters, optimizer, data position) and its step. */
  saveCheckpoint?: (bytes: Uint8Array<ArrayBuffer>, step: number) => Promise<void>;
  /** Metadata every checkpoint carries (the run's settings, so a resume can check them). */
  metadata?: Record<string, string>;
  onStep?: (r: StepReport) => void;
  onValidation?: (r: ValidationReport) => void;
  /** Polled between steps: true stops after the current step (with a checkpoint). */
  shouldStop?: () => boolean;
}

export interface TrainLoopResult {
  steps: StepReport[];
  validations: ValidationReport[];
  /** Stopped by shouldStop before reaching the step count. */
  stopped: boolean;
}

/** The checkpoint of the trainer's current state: parameters, moments, step and the source's position. */
export async function checkpointBytes(trainer: OperatorTrainer, source: PairSource, metadata: Record<string, string> = {}): Promise<Uint8Array<ArrayBuffer>> {
  const { tensors, metadata: meta } = await checkpointTensors(trainer.params, trainer.opt, { ...metadata, data_state: JSON.stringify(source.state()) });
  return serializeSafetensors(tensors, meta);
}

/** The trained operator alone, in the layout `silo restore --operator` reads. */
export async function exportBytes(trainer: OperatorTrainer, metadata: Record<string, string> = {}): Promise<Uint8Array<ArrayBuffer>> {
  const { tensors, metadata: meta } = await exportParameters(trainer.params, metadata);
  return serializeSafetensors(tensors, meta);
}

export async function trainLoop(o: TrainLoopOptions): Promise<TrainLoopResult> {
  const { trainer, source } = o;
  assertArg(Number.isInteger(o.steps) && o.steps >= 0, `train: steps ${o.steps} must be an integer >= 0`);
  const every = o.checkpointEvery ?? 0;
  assertArg(Number.isInteger(every) && every >= 0, `train: checkpoint interval ${every} must be an integer >= 0`);
  if (o.validation) assertArg(Number.isInteger(o.validation.every) && o.validation.every >= 1, `train: validation interval ${o.validation.every} must be an integer >= 1`);
  const result: TrainLoopResult = { steps: [], validations: [], stopped: false };
  const validate = async () => {
    if (!o.validation) return;
    const r = await trainer.validate(o.validation.images, o.validation.sigma);
    result.validations.push(r);
    o.onValidation?.(r);
  };
  const save = async () => {
    if (o.saveCheckpoint) await o.saveCheckpoint(await checkpointBytes(trainer, source, o.metadata), trainer.opt.step);
  };
  await validate();
  let lastSaved = trainer.opt.step;
  let lastValidated = trainer.opt.step;
  while (trainer.opt.step < o.steps) {
    if (o.shouldStop?.()) {
      result.stopped = true;
      break;
    }
    const micro = await source.next();
    let r: StepReport;
    try {
      r = await trainer.step(micro);
    } finally {
      for (const m of micro) {
        m.z.dispose();
        m.target.dispose();
      }
    }
    result.steps.push(r);
    o.onStep?.(r);
    if (o.validation && r.step % o.validation.every === 0) {
      await validate();
      lastValidated = r.step;
    }
    if (every > 0 && r.step % every === 0) {
      await save();
      lastSaved = r.step;
    }
  }
  if (trainer.opt.step !== lastValidated) await validate();
  if (trainer.opt.step !== lastSaved || result.stopped) await save();
  return result;
}
