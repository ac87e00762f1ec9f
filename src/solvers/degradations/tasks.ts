// The degradation tasks by name, with SILO's evaluation defaults: Gaussian blur 61x61 std 3 (reflect
// padding), super-resolution x4 / x8 (the Resizer), a box of side H / 2 (256 at 512) centred or at a
// seeded random position, JPEG quality 10, measurement noise sigma 0.02, and SILO's guidance step eta
// per task (0.5 for blur, SR and JPEG, 1.0 for inpainting). Motion blur takes its kernel from a file
// (DPS's kernels are generated randomly and saved); avgpool4 is the A of the Latent-DPS golden step
// (F.avg_pool2d(x, 4)).

import type { Engine } from '../../engine/device.js';
import { assertArg } from '../../engine/errors.js';
import type { U64 } from '../../engine/random.js';
import { AvgPoolOperator } from './avgpool.js';
import { BlurOperator } from './blur.js';
import { InpaintingOperator } from './inpaint.js';
import { JpegOperator } from './jpeg.js';
import { motionBlurOperator, type BlurKernel } from './kernel-file.js';
import { SILO_NOISE_SIGMA } from './noise.js';
import { SuperResolutionOperator } from './superres.js';
import type { Degradation } from './types.js';

export const DEGRADATION_TASKS = ['gaussian_blur', 'motion_blur', 'sr4', 'sr8', 'inpaint_center', 'inpaint_random', 'jpeg10', 'avgpool4'] as const;
export type DegradationTask = (typeof DEGRADATION_TASKS)[number];

export interface DegradationTaskOptions {
  /** gaussian_blur: kernel side (default 61) and std (default 3). */
  blurSize?: number;
  blurStd?: number;
  /** motion_blur (required): the kernel, read with loadBlurKernel (npy, text, safetensors, PNG). */
  motionKernel?: BlurKernel;
  /** inpaint_*: box side (default floor(H / 2)). */
  boxSide?: number;
  /** inpaint_random: the Philox seed of the box position (default 0) and the margins (default 16, 16 at 512x512, scaled with the image size like the box). */
  seed?: U64;
  margin?: [number, number];
  /** Measurement noise sigma in [-1, 1] units (default SILO's 0.02). */
  sigma?: number;
  /** Guidance step size (default: SILO's for the task). */
  eta?: number;
}

export interface DegradationSetup {
  task: DegradationTask;
  operator: Degradation;
  /** SILO's guidance step size for the task (or opts.eta). */
  eta: number;
  /** Measurement noise sigma in [-1, 1] units. */
  sigma: number;
  /** One line for logs and reports. */
  description: string;
}

/** SILO's eta: 1.0 for inpainting, 0.5 for blur, SR and JPEG (avgpool4, SR-like, takes SR's). */
export const SILO_ETA: Readonly<Record<DegradationTask, number>> = {
  gaussian_blur: 0.5,
  motion_blur: 0.5,
  sr4: 0.5,
  sr8: 0.5,
  inpaint_center: 1.0,
  inpaint_random: 1.0,
  jpeg10: 0.5,
  avgpool4: 0.5,
};

export function isDegradationTask(name: string): name is DegradationTask {
  return (DEGRADATION_TASKS as readonly string[]).includes(name);
}

/** Builds the task's operator for height x width images; the caller disposes `operator`. */
export function makeDegradation(engine: Engine, task: DegradationTask, height: number, width: number, opts: DegradationTaskOptions = {}): DegradationSetup {
  assertArg(isDegradationTask(task), `makeDegradation: unknown task '${String(task)}' (known: ${DEGRADATION_TASKS.join(', ')})`);
  assertArg(Number.isInteger(height) && height >= 1 && Number.isInteger(width) && width >= 1, `makeDegradation: image size must be positive integers, got ${height}x${width}`);
  const sigma = opts.sigma ?? SILO_NOISE_SIGMA;
  assertArg(Number.isFinite(sigma) && sigma >= 0, `makeDegradation: sigma must be finite and >= 0, got ${sigma}`);
  const eta = opts.eta ?? SILO_ETA[task];
  const noise = `noise sigma ${sigma}`;
  const side = opts.boxSide ?? Math.floor(height / 2);
  let operator: Degradation;
  let description: string;
  switch (task) {
    case 'gaussian_blur': {
      const size = opts.blurSize ?? 61;
      const std = opts.blurStd ?? 3.0;
      operator = new BlurOperator(engine, { size, std });
      description = `Gaussian blur ${size}x${size} std ${std}, reflect padding`;
      break;
    }
    case 'motion_blur': {
      const k = opts.motionKernel;
      assertArg(k, `makeDegradation: task 'motion_blur' needs opts.motionKernel (read a kernel file with loadBlurKernel)`);
      operator = motionBlurOperator(engine, k);
      description = `motion blur ${k.size}x${k.size} from ${k.source}, reflect padding`;
      break;
    }
    case 'sr4':
    case 'sr8': {
      const factor = task === 'sr4' ? 4 : 8;
      const op = new SuperResolutionOperator(engine, height, width, { factor });
      operator = op;
      description = `super-resolution x${factor} (bicubic antialiased Resizer) to ${op.outH}x${op.outW}`;
      break;
    }
    case 'inpaint_center': {
      const op = InpaintingOperator.centered(engine, height, width, side);
      operator = op;
      description = `inpainting, centred ${side}x${side} box at (${op.box.top}, ${op.box.left})`;
      break;
    }
    case 'inpaint_random': {
      const seed = opts.seed ?? 0;
      const op = InpaintingOperator.random(engine, height, width, seed, side, opts.margin ?? [Math.round((16 * height) / 512), Math.round((16 * width) / 512)]);
      operator = op;
      description = `inpainting, ${side}x${side} box at (${op.box.top}, ${op.box.left}) drawn with seed ${String(seed)}`;
      break;
    }
    case 'jpeg10': {
      operator = new JpegOperator({ quality: 10 });
      description = 'JPEG quality 10, 4:2:0 (libjpeg tables; adjoint: straight-through rounding)';
      break;
    }
    case 'avgpool4': {
      const op = new AvgPoolOperator(engine, 4);
      operator = op;
      const [oh, ow] = op.outputSize(height, width);
      description = `4x4 average pooling to ${oh}x${ow}`;
      break;
    }
  }
  return { task, operator, eta, sigma, description: `${task}: ${description}, ${noise}, eta ${eta}` };
}
