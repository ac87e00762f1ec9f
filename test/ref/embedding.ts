// f64 reference for diffusers' get_timestep_embedding (no f32 rounding anywhere except the
// timestep values themselves, which the op receives as f32).

export function timestepEmbeddingRef(
  timesteps: ArrayLike<number>,
  dim: number,
  opts: { flipSinToCos?: boolean; downscaleFreqShift?: number; maxPeriod?: number; scale?: number } = {},
): Float64Array {
  const half = Math.floor(dim / 2);
  const shift = opts.downscaleFreqShift ?? 1;
  const maxPeriod = opts.maxPeriod ?? 10000;
  const scale = opts.scale ?? 1;
  const out = new Float64Array(timesteps.length * dim);
  for (let n = 0; n < timesteps.length; n++) {
    for (let k = 0; k < half; k++) {
      const arg = timesteps[n]! * Math.exp((-Math.log(maxPeriod) * k) / (half - shift)) * scale;
      const sinAt = opts.flipSinToCos ? half + k : k;
      const cosAt = opts.flipSinToCos ? k : half + k;
      out[n * dim + sinAt] = Math.sin(arg);
      out[n * dim + cosAt] = Math.cos(arg);
    }
  }
  return out;
}
