// Sinusoidal timestep embedding with diffusers' get_timestep_embedding semantics, on the GPU and
// on the CPU (for uploads). SD-1.5's Timesteps module uses flipSinToCos = true and
// downscaleFreqShift = 0; the defaults here are those of the diffusers function itself.

import source from '../../../kernels/embedding.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString, type DType } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';

export interface TimestepEmbeddingOptions {
  /** Cos half first (default false). */
  flipSinToCos?: boolean;
  /** Frequency exponent divisor is half - downscaleFreqShift (default 1). */
  downscaleFreqShift?: number;
  /** Default 10000. */
  maxPeriod?: number;
  /** Multiplies the arguments (default 1). */
  scale?: number;
  /** Output storage dtype of the GPU op (default f32). */
  dtype?: DType;
}

/** Most frequencies the kernel's uniform holds (dim up to 4097). */
export const MAX_EMBEDDING_HALF = 2048;

const f32 = Math.fround;

function settings(op: string, dim: number, opts: TimestepEmbeddingOptions) {
  assertArg(Number.isInteger(dim) && dim >= 1, `${op}: dim must be a positive integer, got ${dim}`);
  const half = Math.floor(dim / 2);
  const shift = opts.downscaleFreqShift ?? 1;
  const maxPeriod = opts.maxPeriod ?? 10000;
  assertArg(maxPeriod > 0, `${op}: maxPeriod must be positive, got ${maxPeriod}`);
  assertArg(half === 0 || half - shift !== 0, `${op}: dim ${dim} with downscaleFreqShift ${shift} divides by half - shift = 0`);
  return { half, shift, maxPeriod, scale: opts.scale ?? 1, flip: opts.flipSinToCos ?? false };
}

/**
 * The frequencies exp(-ln(maxPeriod) * k / (half - shift)), k < half, with PyTorch's f32 roundings:
 * the f32 scalar times the f32 arange, the f32 division, exp rounded to f32.
 */
export function timestepFrequencies(half: number, shift: number, maxPeriod: number): Float32Array {
  const c = f32(-Math.log(maxPeriod));
  const den = f32(half - shift);
  const out = new Float32Array(half);
  for (let k = 0; k < half; k++) out[k] = f32(Math.exp(f32(f32(c * k) / den)));
  return out;
}

/** get_timestep_embedding on the CPU: f32 frequencies and products, f64 sin/cos; [N * dim]. */
export function timestepEmbeddingCPU(timesteps: number[], dim: number, opts: TimestepEmbeddingOptions = {}): Float32Array {
  const s = settings('timestepEmbeddingCPU', dim, opts);
  const freqs = timestepFrequencies(s.half, s.shift, s.maxPeriod);
  const scale = f32(s.scale);
  const out = new Float32Array(timesteps.length * dim);
  timesteps.forEach((t, n) => {
    for (let k = 0; k < s.half; k++) {
      const arg = f32(f32(f32(t) * freqs[k]!) * scale);
      out[n * dim + (s.flip ? s.half + k : k)] = Math.sin(arg);
      out[n * dim + (s.flip ? k : s.half + k)] = Math.cos(arg);
    }
  });
  return out;
}

/** get_timestep_embedding on the GPU: timesteps [N] f32 -> [N, dim]. */
export function timestepEmbedding(rec: Recorder, timesteps: Tensor, dim: number, opts: TimestepEmbeddingOptions = {}): Tensor {
  const op = 'timestepEmbedding';
  assertArg(timesteps.rank === 1, `${op}: timesteps must be 1-D [N], got ${shapeString(timesteps.shape)}`);
  assertArg(timesteps.dtype === 'f32', `${op}: timesteps must be f32, got ${timesteps.dtype}`);
  const s = settings(op, dim, opts);
  assertArg(s.half <= MAX_EMBEDDING_HALF, `${op}: dim ${dim} exceeds the supported ${2 * MAX_EMBEDDING_HALF + 1}`);
  const engine = rec.engine;
  const dtype = opts.dtype ?? 'f32';
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'embedding', source, entry: 'timestep_embedding', dtype, consts: { WG: wg } });
  const out = engine.empty([timesteps.shape[0]!, dim], dtype, 'timestep_embedding');
  if (out.size === 0) return out;
  const g = grid1d(engine, out.size, wg);
  rec.dispatch(k, {
    op: 'timestep_embedding',
    bindings: { et: timesteps, eout: out },
    uniforms: {
      n: out.size,
      row: g.row,
      dim,
      half: s.half,
      flip: s.flip ? 1 : 0,
      scale: s.scale,
      freqs: Array.from(timestepFrequencies(s.half, s.shift, s.maxPeriod)),
    },
    workgroups: g.workgroups,
  });
  return out;
}
