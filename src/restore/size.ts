// The size rules of a restoration, as pure functions so a surface can check its inputs before any GPU
// work: images are square, sides are multiples of the VAE factor, an SR measurement is size / factor.

import { SiloError } from '../engine/errors.js';
import type { DegradationTask } from '../solvers/degradations/tasks.js';

/** SD's VAE factor: image sides must be multiples of it (checked again against the loaded VAE). */
export const LATENT_FACTOR = 8;

/** How much smaller than the image the task's measurement is. */
export function measurementFactor(task: DegradationTask): number {
  return task === 'sr4' || task === 'avgpool4' ? 4 : task === 'sr8' ? 8 : 1;
}

/** The nearest valid sides around n, for messages. */
export function nearestSizes(n: number, factor = LATENT_FACTOR): string {
  const lo = Math.floor(n / factor) * factor;
  return lo < factor ? `${factor}` : `${lo} or ${lo + factor}`;
}

export interface SizeInputs {
  task: DegradationTask;
  /** The requested side, if any. */
  size?: number;
  /** [width, height] of the ground truth or of the measurement. */
  groundTruth?: [number, number];
  measurement?: [number, number];
  /** Names for messages (a file name, "the image"). */
  measurementName?: string;
}

/** Checks a measurement's shape against the task and the requested size (before the models load). */
export function checkMeasurementShape(i: SizeInputs): void {
  if (!i.measurement) return;
  const [w, h] = i.measurement;
  const name = i.measurementName ?? 'the measurement';
  if (w !== h) throw new SiloError(`${name}: the measurement must be square, got ${w}x${h}`);
  const f = measurementFactor(i.task);
  if (i.size !== undefined && w * f !== i.size) throw new SiloError(`${name}: the measurement must be ${i.size / f}x${i.size / f} for task ${i.task} at size ${i.size}, got ${w}x${h}`);
}

/**
 * The restored image's side: the operator's (SILO's operators are built for one latent size), else the
 * requested size, else the largest multiple of the size factor the ground truth (or the measurement
 * times the task's factor) covers. The size factor is the VAE's times the UNet's: its latent sides must
 * halve without remainder at each of its down blocks (SD-1.5: 8 x 8 = 64).
 */
export function resolveSize(i: SizeInputs & { vaeFactor: number; unetMultiple?: number; operatorSize?: number }): number {
  const f = i.vaeFactor * (i.unetMultiple ?? 1);
  if (i.size !== undefined && i.size % f !== 0) {
    const why = f === i.vaeFactor ? `this VAE's factor ${f}` : `${f} (the VAE's factor ${i.vaeFactor} times the ${i.unetMultiple} the UNet's down blocks need)`;
    throw new SiloError(`restore: size ${i.size} is not a multiple of ${why}; nearest valid sizes: ${nearestSizes(i.size, f)}`);
  }
  let size = i.size ?? i.operatorSize;
  if (!size) {
    const side = i.groundTruth ? Math.min(...i.groundTruth) : Math.min(...i.measurement!) * measurementFactor(i.task);
    size = Math.floor(side / f) * f;
  }
  if (size < f) throw new SiloError(`restore: the image is smaller than ${f === i.vaeFactor ? `the VAE factor ${f}` : `the size factor ${f} (the VAE's ${i.vaeFactor} times the UNet's ${i.unetMultiple})`}`);
  if (i.operatorSize && size !== i.operatorSize) {
    throw new SiloError(`restore: this operator works on ${i.operatorSize}x${i.operatorSize} images (latent ${i.operatorSize / f}); size ${i.size} does not match`);
  }
  return size;
}
