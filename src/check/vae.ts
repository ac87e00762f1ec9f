// Golden case `vae_mini` (diffusers AutoencoderKL): encode input.image and compare enc.moments /
// enc.mean / enc.logvar / enc.std, enc.latent_sample = mean + std * input.posterior_noise, decode input.z
// and compare dec.sample, plus every debug.* intermediate (debug.enc.X = encoder module X, debug.dec.X =
// decoder module X, debug.post_quant_conv), and in f32 the VJPs dec.vjp_z (d/dz of
// sum(input.vjp_cotangent_dec * decode(z))) and enc.vjp_image_of_mean (d/d image of
// sum(input.vjp_cotangent_mean * mean)), untiled. Any tensor of the golden file that is missing or shaped differently from what the model produces is an error naming
// the file and the tensor.

import type { Engine } from '../engine/device.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import type { Tensor } from '../engine/tensor.js';
import { shapeString } from '../engine/dtype.js';
import { SiloError } from '../engine/errors.js';
import { runProgram } from '../engine/recorder.js';
import { WeightLoader } from '../models/weights.js';
import { AutoencoderKL } from '../models/vae/autoencoder.js';
import { parseVaeConfig } from '../models/vae/config.js';
import { decodeVjp, encodeMeanVjp } from '../models/vae/vjp.js';
import type { Taps } from '../models/vae/encoder.js';
import type { CaseRunner } from './case.js';
import type { CheckItem, Tolerance } from './compare.js';
import { readJson, readSafetensors } from './files.js';
import { assertCompared, caseError, enforceContract, expectSameConfig, expectStated, isInputName } from './contract.js';

export class GoldenFileError extends SiloError {}

/**
 * f16 storage rounds every parameter and activation to 11 significant bits. On lavapipe the worst element
 * measured |x - ref| / (1 + |ref|) = 1.6e-2 (debug.enc.mid_block, values up to ~10), 5e-3 on dec.sample
 * and 3.5e-3 on enc.*; the bound leaves ~3x on the worst.
 */
export const VAE_F16_TOLERANCE: Tolerance = { atol: 5e-2, rtol: 5e-2 };

function fileName(manifest: Record<string, unknown>, kind: string): string {
  const name = (manifest['files'] as Record<string, string> | undefined)?.[kind];
  if (!name) throw new GoldenFileError(`manifest of case ${String(manifest['case'])} names no "${kind}" file`);
  return name;
}

/**
 * The manifest's suggested tolerance for a tensor: its own key, else a "prefix.*" key. debug.* has no
 * entry of its own and takes enc.* (the golden README gives the VAE's enc.* / dec.sample one rule).
 */
export function vaeTolerance(manifest: Record<string, unknown>, name: string): Tolerance {
  const all = (manifest['suggested_tolerance'] ?? {}) as Record<string, { atol?: number; rtol?: number }>;
  const key = name.startsWith('debug.') ? 'enc.*' : name in all ? name : `${name.split('.')[0]}.*`;
  const t = all[key];
  if (!t || t.atol === undefined) throw new GoldenFileError(`manifest of case ${String(manifest['case'])} has no suggested_tolerance for "${name}" (looked up "${key}")`);
  return { atol: t.atol, rtol: t.rtol ?? 0 };
}

/**
 * The manifest's rule for a VJP tensor: the suggested_tolerance key listing it among " / "-separated
 * names, with atol_relative_to_max_abs (gradients of arbitrary scale).
 */
export function vaeVjpTolerance(manifest: Record<string, unknown>, name: string): Tolerance {
  const all = (manifest['suggested_tolerance'] ?? {}) as Record<string, { atol_relative_to_max_abs?: number }>;
  const key = Object.keys(all).find((k) => k.split('/').map((s) => s.trim()).includes(name));
  const rel = key === undefined ? undefined : all[key]!.atol_relative_to_max_abs;
  if (rel === undefined) throw new GoldenFileError(`manifest of case ${String(manifest['case'])} has no atol_relative_to_max_abs for "${name}"`);
  return { atolRelativeToMaxAbs: rel };
}

function goldenShape(golden: SafetensorsFile, name: string): number[] {
  if (!golden.has(name)) throw new GoldenFileError(`${golden.source}: missing tensor "${name}"`);
  return golden.info(name).shape.slice();
}

/** Checks a golden tensor's shape against `want` (a -1 matches anything) and returns its values. */
export function goldenValues(golden: SafetensorsFile, name: string, want: readonly number[]): Float32Array {
  const shape = goldenShape(golden, name);
  const ok = shape.length === want.length && shape.every((d, i) => want[i] === -1 || d === want[i]);
  if (!ok) throw new GoldenFileError(`${golden.source}: tensor "${name}" has shape ${shapeString(shape)}, expected ${shapeString(want)}`);
  return golden.getF32(name);
}

export const runVae: CaseRunner = async (engine: Engine, files, manifest, opts) => {
  const dtype = opts.dtype ?? 'f32';
  const [configJson, weights, golden] = await Promise.all([
    readJson<Record<string, unknown>>(files, fileName(manifest, 'config')),
    readSafetensors(files, fileName(manifest, 'weights')),
    readSafetensors(files, fileName(manifest, 'golden')),
  ]);
  const cfg = parseVaeConfig(configJson);
  expectSameConfig(files, 'config', manifest['config'], fileName(manifest, 'config'), configJson);
  // input.z goes into decode() directly; the stated scaling factor must still be the model's.
  expectStated(files, '"scaling_factor"', manifest['scaling_factor'], cfg.scalingFactor);
  enforceContract(files, manifest, golden, {
    runner: 'vae',
    files: ['config', 'weights', 'golden'],
    tensors: [
      'input.image', 'input.posterior_noise', 'input.z', 'input.vjp_cotangent_dec', 'input.vjp_cotangent_mean',
      /^enc\.(moments|mean|logvar|std|latent_sample|vjp_image_of_mean)$/, /^dec\.(sample|vjp_z)$/, /^debug\./,
    ],
    choices: ['config', 'scaling_factor', 'input_seeds'],
    described: ['pipeline_convention', 'image'],
  });
  for (const [out, cot] of [['dec.vjp_z', 'input.vjp_cotangent_dec'], ['enc.vjp_image_of_mean', 'input.vjp_cotangent_mean']] as const) {
    if (golden.has(out) !== golden.has(cot)) throw caseError(files, `golden tensor "${golden.has(out) ? cot : out}"`, `missing: ${out} and ${cot} go together`);
  }
  opts.log?.(`vae_mini: AutoencoderKL block_out_channels [${cfg.blockOutChannels}], latent ${cfg.latentChannels}, ${dtype}`);
  let loader: WeightLoader | undefined;
  const vae = WeightLoader.build(engine, weights, { dtype }, (w) => {
    loader = w;
    return new AutoencoderKL(w, cfg);
  });
  const owned: Tensor[] = [];
  const upload = (name: string, want: readonly number[]) => {
    const t = engine.tensor(goldenValues(golden, name, want), goldenShape(golden, name), dtype, name);
    owned.push(t);
    return t;
  };
  try {
    const image = upload('input.image', [-1, cfg.inChannels, -1, -1]);
    const f = vae.downFactor;
    const [n, , H, W] = image.shape as [number, number, number, number];
    const latentShape = [n, cfg.latentChannels, Math.floor(H / f), Math.floor(W / f)];
    const noise = upload('input.posterior_noise', latentShape);
    const z = upload('input.z', [-1, cfg.latentChannels, -1, -1]);

    const encTaps: Taps = {};
    const decTaps: Taps = {};
    const enc = await runProgram(engine, 'vae_mini/encode', (rec) => {
      const post = vae.encode(rec, image, { tiling: 'off', taps: encTaps });
      return { ...post, sample: vae.sample(rec, post, noise) };
    });
    const dec = await runProgram(engine, 'vae_mini/decode', (rec) => vae.decode(rec, z, { tiling: 'off', taps: decTaps }));
    const outputs: Record<string, Tensor> = {
      'enc.moments': enc.result.moments,
      'enc.mean': enc.result.mean,
      'enc.logvar': enc.result.logvar,
      'enc.std': enc.result.std,
      'enc.latent_sample': enc.result.sample,
      'dec.sample': dec.result,
    };
    for (const name of golden.names().filter((k) => k.startsWith('debug.'))) {
      const [, part, ...rest] = name.split('.');
      const taps = part === 'enc' ? encTaps : decTaps;
      const key = part === 'enc' || part === 'dec' ? rest.join('.') : [part, ...rest].join('.');
      const t = taps[key];
      if (!t) throw new GoldenFileError(`${golden.source}: tensor "${name}" names no intermediate of the model (have ${Object.keys(taps).join(', ')})`);
      outputs[name] = t;
    }
    const items: CheckItem[] = [];
    for (const [name, t] of Object.entries(outputs)) {
      const expected = goldenValues(golden, name, t.shape);
      const tol = vaeTolerance(manifest, name);
      items.push({
        name,
        actual: await t.read(),
        expected,
        tol: dtype === 'f16' ? { atol: Math.max(tol.atol ?? 0, VAE_F16_TOLERANCE.atol!), rtol: Math.max(tol.rtol ?? 0, VAE_F16_TOLERANCE.rtol!) } : tol,
      });
    }
    for (const t of [...Object.values(outputs), ...Object.values(encTaps), ...Object.values(decTaps)]) t.dispose();
    const vjpNames = ['dec.vjp_z', 'enc.vjp_image_of_mean'];
    if (dtype !== 'f32' && vjpNames.some((n) => golden.has(n))) opts.log?.('vae_mini: VJPs not checked (the backward ops are f32 only)');
    if (dtype === 'f32') {
      // The backward ops are f32 only: the VJP items are skipped in f16.
      const vjps: [string, (rec: Parameters<typeof decodeVjp>[0]) => Tensor][] = [];
      if (golden.has('dec.vjp_z')) {
        const gDec = upload('input.vjp_cotangent_dec', [n, cfg.outChannels, z.shape[2]! * f, z.shape[3]! * f]);
        vjps.push(['dec.vjp_z', (rec) => decodeVjp(rec, vae, z, gDec)]);
      }
      if (golden.has('enc.vjp_image_of_mean')) {
        const gMean = upload('input.vjp_cotangent_mean', latentShape);
        vjps.push(['enc.vjp_image_of_mean', (rec) => encodeMeanVjp(rec, vae, image, gMean)]);
      }
      for (const [name, run] of vjps) {
        const { result } = await runProgram(engine, `vae_mini/${name}`, run);
        items.push({ name, actual: await result.read(), expected: goldenValues(golden, name, result.shape), tol: vaeVjpTolerance(manifest, name) });
        result.dispose();
      }
    }
    assertCompared(files, golden, items, isInputName, (n) => dtype !== 'f32' && vjpNames.includes(n));
    return items;
  } finally {
    for (const t of owned) t.dispose();
    loader?.disposeAll();
  }
};
