// Golden case `degradations`: SILO's image-space operators on input.image - the Gaussian blur (its
// kernel in float64 and float32, and the output), the x`factor` super-resolution Resizer (its 1-D
// matrices, the output, and the antialiased bicubic upsampling back to full size) and the box
// inpainting mask and output. The operators' parameters come from the folder: the blur kernel's size
// from its shape and std from the manifest text, the SR factor from the tensor names, the box from
// the stored mask's zero rectangle. Image-space operators run in f32 whatever opts.dtype asks (SILO
// applies them in float32).

import type { Engine } from '../engine/device.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import type { Tensor } from '../engine/tensor.js';
import { runProgram, type Recorder } from '../engine/recorder.js';
import { BlurOperator, gaussianBlurKernel } from '../solvers/degradations/blur.js';
import { SuperResolutionOperator } from '../solvers/degradations/superres.js';
import { InpaintingOperator, type Box } from '../solvers/degradations/inpaint.js';
import type { CaseRunner } from './case.js';
import type { CheckItem, Tolerance } from './compare.js';
import { readSafetensors } from './files.js';
import { caseFileName, manifestTolerance } from './silo_cnn.js';
import { assertCompared, caseError, enforceContract, expectStated, isInputName } from './contract.js';
import type { CaseFiles } from './files.js';

/** The f32 kernel is the f64 one rounded: equal up to one f32 ulp of its largest value (0.0177). */
const KERNEL_F32_TOL: Tolerance = { atol: 2e-9 };
/** Our float64 kernel against scipy's: exp() may differ in the last bit or two. */
const KERNEL_F64_TOL: Tolerance = { atol: 1e-15 };
/** Resize matrices rounded to float32 (entries up to ~0.3): one f32 ulp. */
const MATRIX_TOL: Tolerance = { atol: 3e-8 };

/** The manifest's description of one operator (what.blur, what.sr4, ...). */
function described(files: CaseFiles, manifest: Record<string, unknown>, key: string): string {
  const what = manifest['what'];
  const text = what && typeof what === 'object' ? (what as Record<string, unknown>)[key] : undefined;
  if (typeof text !== 'string') throw caseError(files, `manifest.json what.${key}`, 'missing: the case stores its tensors but does not say how they were made');
  return text;
}

/** The blur's size and std from what.blur (`GaussialBlurOperator(kernel_size=61, intensity=3.0)`, SILO's spelling). */
function blurChoice(files: CaseFiles, manifest: Record<string, unknown>): { size: number; std: number } {
  const text = described(files, manifest, 'blur');
  const m = /^Gauss(?:i)?alBlurOperator\(kernel_size=(\d+), intensity=([0-9]+(?:\.[0-9]+)?)\)/.exec(text);
  if (!m) throw caseError(files, 'manifest.json what.blur', `${JSON.stringify(text.slice(0, 80))} is not understood (supported: GaussialBlurOperator(kernel_size=K, intensity=S))`);
  return { size: Number(m[1]), std: Number(m[2]) };
}

/** The SR factor from what.srK (`SuperResolutionOperator(..., scale_factor=K)`). */
function srChoice(files: CaseFiles, manifest: Record<string, unknown>, prefix: string): number {
  const text = described(files, manifest, prefix);
  const m = /^SuperResolutionOperator\(in_shape=\([^)]*\), scale_factor=(\d+)\)/.exec(text);
  if (!m) throw caseError(files, `manifest.json what.${prefix}`, `${JSON.stringify(text.slice(0, 80))} is not understood (supported: SuperResolutionOperator(in_shape=(...), scale_factor=K))`);
  return Number(m[1]);
}

/** Operators this runner knows how to rebuild; `noise` is described as not included. */
const WHAT_KEYS = /^(input\.image|blur|sr\d+|inpaint|noise)$/;

/** The zero rectangle of a 0/1 mask [H, W]. */
function maskBox(mask: ArrayLike<number>, h: number, w: number): Box {
  let top = h;
  let left = w;
  let bottom = -1;
  let right = -1;
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      if (mask[y * w + x] === 0) {
        top = Math.min(top, y);
        bottom = Math.max(bottom, y);
        left = Math.min(left, x);
        right = Math.max(right, x);
      }
  if (bottom < 0) return { top: 0, left: 0, h: 0, w: 0 };
  return { top, left, h: bottom - top + 1, w: right - left + 1 };
}

/** Runs one operator as its own program and reads the result back. */
async function runOn(engine: Engine, name: string, fn: (rec: Recorder) => Tensor): Promise<Float32Array> {
  const { result } = await runProgram(engine, name, fn);
  const data = await result.read();
  result.dispose();
  return data;
}

export const runDegradations: CaseRunner = async (engine, files, manifest, opts) => {
  const golden: SafetensorsFile = await readSafetensors(files, caseFileName(manifest, 'golden'));
  enforceContract(files, manifest, golden, {
    runner: 'degradations',
    files: ['golden'],
    tensors: ['input.image', 'blur.kernel_f64', 'blur.kernel', 'blur.output', /^sr\d+\.(output|resize_matrix_h|resize_matrix_w|upsampled_bicubic_aa)$/, 'inpaint.mask'],
    choices: ['what', 'kernel_info'],
  });
  for (const k of Object.keys((manifest['what'] ?? {}) as object)) {
    if (!WHAT_KEYS.test(k)) throw caseError(files, `manifest.json what.${k}`, 'an operator the degradations runner does not know');
  }
  if (opts.dtype === 'f16') opts.log?.('degradations: image-space operators run in f32 (as SILO); --dtype f16 is ignored');
  const names = golden.names();
  const imgShape = golden.info('input.image').shape as [number, number, number, number];
  const [, , H, W] = imgShape;
  const image = engine.tensor(golden.getF32('input.image'), imgShape, 'f32', 'input.image');
  const items: CheckItem[] = [];
  try {
    if (names.includes('blur.output')) {
      const { size, std } = blurChoice(files, manifest);
      const kShape = golden.info('blur.kernel').shape;
      if (kShape.length !== 2 || kShape[0] !== size || kShape[1] !== size) throw caseError(files, 'golden tensor "blur.kernel"', `shape [${kShape.join(', ')}], but what.blur says kernel_size=${size}`);
      opts.log?.(`degradations: Gaussian blur ${size}x${size}, std ${std}, reflect padding`);
      const k64 = gaussianBlurKernel(size, std);
      const info = (manifest['kernel_info'] ?? {}) as Record<string, unknown>;
      for (const k of Object.keys(info)) if (!['sum_f64', 'center', 'nonzero_radius'].includes(k)) throw caseError(files, `manifest.json kernel_info.${k}`, 'not understood');
      expectStated(files, 'kernel_info.sum_f64', info['sum_f64'], k64.reduce((a, b) => a + b, 0), 1e-12);
      expectStated(files, 'kernel_info.center', info['center'], k64[(size * size - 1) / 2]!, 1e-12);
      const c = (size - 1) / 2;
      let radius = 0;
      k64.forEach((v, i) => {
        if (v !== 0) radius = Math.max(radius, Math.abs(Math.floor(i / size) - c), Math.abs((i % size) - c));
      });
      expectStated(files, 'kernel_info.nonzero_radius', info['nonzero_radius'], radius);
      if (names.includes('blur.kernel_f64')) items.push({ name: 'blur.kernel_f64', actual: k64, expected: golden.getRaw('blur.kernel_f64') as Float64Array, tol: KERNEL_F64_TOL });
      const blur = new BlurOperator(engine, { size, std });
      try {
        items.push({ name: 'blur.kernel', actual: blur.kernel, expected: golden.getF32('blur.kernel'), tol: KERNEL_F32_TOL });
        const out = await runOn(engine, 'degradations/blur', (rec) => blur.apply(rec, image));
        items.push({ name: 'blur.output', actual: out, expected: golden.getF32('blur.output'), tol: manifestTolerance(manifest, 'blur.output') });
      } finally {
        blur.dispose();
      }
    }
    for (const key of names.filter((n) => /^sr\d+\.output$/.test(n))) {
      const prefix = key.slice(0, -'.output'.length);
      const factor = Number(prefix.slice(2));
      if (srChoice(files, manifest, prefix) !== factor) throw caseError(files, `manifest.json what.${prefix}`, `names another scale factor than the tensors' ${prefix}`);
      opts.log?.(`degradations: super-resolution x${factor} (Resizer, cubic a=-0.5, antialiased) and bicubic AA upsampling`);
      const sr = new SuperResolutionOperator(engine, H, W, { factor });
      try {
        const m = sr.resizeMatrices;
        if (names.includes(`${prefix}.resize_matrix_h`)) items.push({ name: `${prefix}.resize_matrix_h`, actual: Float32Array.from(m.h), expected: golden.getF32(`${prefix}.resize_matrix_h`), tol: MATRIX_TOL });
        if (names.includes(`${prefix}.resize_matrix_w`)) items.push({ name: `${prefix}.resize_matrix_w`, actual: Float32Array.from(m.w), expected: golden.getF32(`${prefix}.resize_matrix_w`), tol: MATRIX_TOL });
        const out = await runOn(engine, `degradations/${prefix}`, (rec) => sr.apply(rec, image));
        items.push({ name: key, actual: out, expected: golden.getF32(key), tol: manifestTolerance(manifest, key) });
        const upKey = `${prefix}.upsampled_bicubic_aa`;
        if (names.includes(upKey)) {
          // Upsample the golden measurement, so this item checks the upsampling alone.
          const ySrc = golden.info(key).shape;
          const y = engine.tensor(golden.getF32(key), ySrc, 'f32', key);
          try {
            const up = await runOn(engine, `degradations/${prefix}_up`, (rec) => sr.upsampleMeasurement(rec, y));
            items.push({ name: upKey, actual: up, expected: golden.getF32(upKey), tol: manifestTolerance(manifest, upKey) });
          } finally {
            y.dispose();
          }
        }
      } finally {
        sr.dispose();
      }
    }
    if (names.includes('inpaint.mask')) {
      const stored = golden.getF32('inpaint.mask');
      const box = maskBox(stored, H, W);
      opts.log?.(`degradations: box inpainting, ${box.h}x${box.w} at (${box.top}, ${box.left})`);
      const inpaint = new InpaintingOperator(engine, H, W, box);
      try {
        items.push({ name: 'inpaint.mask', actual: inpaint.mask, expected: stored, tol: { exact: true } });
        // The manifest stores no output: it is exactly input.image * mask, computed here on the host.
        const img = golden.getF32('input.image');
        const want = Float32Array.from(img, (v, i) => v * stored[i % (H * W)]!);
        const out = await runOn(engine, 'degradations/inpaint', (rec) => inpaint.apply(rec, image));
        items.push({ name: 'inpaint.output (image * mask)', actual: out, expected: want, tol: { exact: true } });
      } finally {
        inpaint.dispose();
      }
    }
  } finally {
    image.dispose();
  }
  if (items.length === 0) throw caseError(files, 'golden.safetensors', 'holds none of blur.output, sr<k>.output, inpaint.mask');
  assertCompared(files, golden, items, isInputName);
  return items;
};
