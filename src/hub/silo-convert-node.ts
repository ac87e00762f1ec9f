// SILO checkpoints into the layouts `silo restore` reads, for `silo convert` and `silo pull`:
//   a readout dict {step, config, aggregation_network, optimizer_state_dict}  -> a folder
//       <out>/config.json (constructor arguments read off the tensor shapes, the stored step and
//       config kept under "_silo_checkpoint") + <out>/weights.safetensors; the optimizer state is left out
//   anything else (SILO's bare CNN / "preserve" state dicts)                  -> one .safetensors file
// The folder appears whole or not at all: it is built beside <out> and renamed into place. Node only.

import { SiloError } from '../engine/errors.js';
import type { TorchCheckpoint } from '../formats/torch-checkpoint.js';
import { OutputFileError, fsReason } from '../formats/atomic-write-node.js';
import { convertOpenCheckpoint, openCheckpointForConvert, type ConvertOptions, type ConvertReport } from '../formats/torch-convert-node.js';
import { TorchCheckpointError } from '../formats/torch-checkpoint.js';
import { isReadoutCheckpoint, readoutConfig, SiloCheckpointError } from './silo-checkpoint.js';
import { PickleDict } from '../formats/pickle.js';

export interface SiloConvertResult {
  /** 'readout': a folder (config.json + weights.safetensors); 'state-dict': one .safetensors file. */
  layout: 'readout' | 'state-dict';
  output: string;
  /** The weights file written (output itself for 'state-dict'). */
  weights: string;
  report: ConvertReport;
  /** config.json as written (readout only). */
  config?: Record<string, unknown>;
  /** Top-level entries left out (readout: optimizer_state_dict). */
  dropped: string[];
  /** What the conversion decided that the user should know (stored settings overruled). */
  notes: string[];
}

/** The files a converted readout folder holds; a folder with anything else is never replaced. */
export const READOUT_FILES = ['config.json', 'weights.safetensors'] as const;

/** Converts `inPath`: a readout dict becomes a folder at `outPath`, anything else a .safetensors file. */
export async function convertSiloCheckpoint(inPath: string, outPath: string, options: ConvertOptions = {}): Promise<SiloConvertResult> {
  const { resolve } = await import('node:path');
  if (resolve(inPath) === resolve(outPath)) throw new TorchCheckpointError(inPath, 'output path is the input path');
  const ckpt = await openCheckpointForConvert(inPath, options);
  try {
    return await convertOpenSiloCheckpoint(ckpt, inPath, outPath, options, 'auto');
  } finally {
    await ckpt.close();
  }
}

/**
 * Converts an open checkpoint (the caller closes it). `expect` 'readout' refuses anything but a readout
 * dict, 'state-dict' writes the state dict as one file, 'auto' decides by the contents (a --key from
 * the user always means one file).
 */
export async function convertOpenSiloCheckpoint(
  ckpt: TorchCheckpoint,
  inPath: string,
  outPath: string,
  options: ConvertOptions,
  expect: 'auto' | 'readout' | 'state-dict',
): Promise<SiloConvertResult> {
  const readout = isReadoutCheckpoint(ckpt.value);
  if (expect === 'readout' && !readout) {
    const keys = ckpt.value instanceof PickleDict ? [...ckpt.value.keys()].slice(0, 8).map(String).join(', ') : '';
    throw new SiloCheckpointError(
      `${inPath}: not a SILO readout checkpoint (expected a dict with an "aggregation_network" state dict; found ${keys ? `keys ${keys}` : 'no dict'})`,
    );
  }
  if (!readout || expect === 'state-dict' || options.keyPath !== undefined) {
    const report = await convertOpenCheckpoint(ckpt, inPath, outPath, options);
    return { layout: 'state-dict', output: outPath, weights: outPath, report, dropped: [], notes: [] };
  }
  if (/\.safetensors$/i.test(outPath)) {
    throw new SiloCheckpointError(
      `${inPath} is a SILO readout checkpoint, which converts to a folder (config.json + weights.safetensors), not to ${outPath}; ` +
        'give a folder path (or --key aggregation_network for the bare weights file)',
    );
  }
  const { config, dropped, notes } = readoutConfig(ckpt, inPath);
  const { join } = await import('node:path');
  let report!: ConvertReport;
  await writeFolderAtomic(outPath, async (dir) => {
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(dir, 'config.json'), `${JSON.stringify(config, null, 1)}\n`);
    report = await convertOpenCheckpoint(ckpt, inPath, join(dir, 'weights.safetensors'), { ...options, keyPath: 'aggregation_network' });
  });
  report = { ...report, output: join(outPath, 'weights.safetensors') };
  return { layout: 'readout', output: outPath, weights: report.output, report, config, dropped, notes };
}

/**
 * Builds a folder with `fill` in a temporary sibling and renames it to `path`. An existing `path` is
 * replaced only when it holds nothing but READOUT_FILES (an earlier conversion); else refused.
 */
export async function writeFolderAtomic(path: string, fill: (dir: string) => Promise<void>): Promise<void> {
  const { mkdir, rm, rename, readdir, stat } = await import('node:fs/promises');
  const { dirname, basename, join } = await import('node:path');
  const parent = dirname(path);
  const tag = `${process.pid}.${Math.random().toString(36).slice(2, 10)}`;
  const temp = join(parent, `.${basename(path)}.${tag}.tmp`);
  const old = join(parent, `.${basename(path)}.${tag}.old`);
  const existing = await stat(path).catch(() => null);
  if (existing) {
    const names = existing.isDirectory() ? await readdir(path) : null;
    if (!names || names.some((n) => !(READOUT_FILES as readonly string[]).includes(n))) {
      throw new OutputFileError(path, `it exists and is not a converted operator folder (only ${READOUT_FILES.join(', ')}); remove it or choose another path`);
    }
  }
  try {
    await mkdir(parent, { recursive: true });
    await mkdir(temp);
  } catch (e) {
    throw new OutputFileError(path, fsReason(e));
  }
  try {
    await fill(temp);
    if (existing) await rename(path, old);
    await rename(temp, path);
  } catch (e) {
    await rm(temp, { recursive: true, force: true });
    if (existing) await rename(old, path).catch(() => undefined);
    throw e instanceof SiloError ? e : new OutputFileError(path, fsReason(e));
  }
  if (existing) await rm(old, { recursive: true, force: true });
}
