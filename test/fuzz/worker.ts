// The fuzz worker (bundled by harness.ts, run in a child process so that a hang or a runaway
// allocation can be stopped from outside): for each seed it derives the mutated file, parses it fully
// with our reader, and reports 'ok', the SiloError's class, or the foreign exception / huge allocation.
import { crc32 as zlibCrc32 } from 'node:zlib';
import { SiloError } from '../../src/engine/errors.js';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import { TorchCheckpoint } from '../../src/formats/torch-checkpoint.js';
import { decodePng, decodePng16 } from '../../src/io/png.js';
import { decodeJpeg } from '../../src/io/jpeg-decode.js';
import { int, mutateOnce, pick, pickleHugeInt, rng, safetensorsDuplicateKey, safetensorsHeaderText, safetensorsHugeNumber, type Field, type Mutated, type Rand } from './mutate.js';
import { jpegFields, pickleFields, pngFields, safetensorsFields, zipFields } from './fields.js';
import { buildCheckpoint } from '../helpers/torch-fixtures.js';
import type { BaseFile, FuzzFormat, WorkerIn, WorkerOut } from './protocol.js';

/** Reads everything a user's load would: every tensor's values, every pixel. */
const TARGETS: Record<FuzzFormat, (bytes: Uint8Array, variant: number) => Promise<unknown> | unknown> = {
  safetensors: (bytes) => {
    const f = SafetensorsFile.parse(bytes, 'fuzz.safetensors');
    for (const n of f.names()) {
      f.info(n);
      f.getF32(n);
    }
  },
  pth: async (bytes, variant) => {
    // Half the cases skip CRCs so that mutations inside data.pkl reach the unpickler.
    const c = await TorchCheckpoint.open(bytes, 'fuzz.pth', { verifyCrc: (variant & 1) === 0, allowExpandedTensors: (variant & 2) !== 0 });
    const sd = c.stateDict();
    for (const t of sd.tensors.values()) await c.tensorBytes(t);
  },
  png: (bytes, variant) => (variant & 1 ? decodePng16(bytes, 'fuzz.png') : decodePng(bytes, 'fuzz.png')),
  jpeg: (bytes) => decodeJpeg(bytes, 'fuzz.jpg'),
  // The seed picks the behaviour (see makeCase): proves the harness tells each outcome apart.
  selftest: (bytes) => {
    const kind = bytes[0]!;
    if (kind === 1) throw new SiloError('refused on purpose');
    if (kind === 2) throw new TypeError('a raw TypeError');
    if (kind === 3) for (;;);
    if (kind === 4) return new Uint8Array(96 << 20).fill(1).length;
    if (kind === 5) return new Promise(() => {});
    return null;
  },
};

const FIELDS: Record<FuzzFormat, (b: Uint8Array) => Field[]> = { safetensors: safetensorsFields, pth: zipFields, png: pngFields, jpeg: jpegFields, selftest: () => [] };
const EXTRA: Record<FuzzFormat, ((r: Rand, b: Uint8Array) => Mutated | null)[]> = {
  safetensors: [safetensorsDuplicateKey, safetensorsHugeNumber, safetensorsHugeNumber, safetensorsHeaderText],
  pth: [],
  png: [],
  jpeg: [],
  selftest: [],
};

/** Recomputes every chunk CRC it can reach, so mutations get past the CRC check into the decoder. */
function fixPngCrcs(b: Uint8Array): void {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let p = 8; p + 12 <= b.length; ) {
    const len = v.getUint32(p);
    if (p + 12 + len > b.length) break;
    v.setUint32(p + 8 + len, zlibCrc32(b.subarray(p + 4, p + 8 + len)));
    p += 12 + len;
  }
}

/** The case a seed stands for: same bytes, same description, on every machine. */
export function makeCase(format: FuzzFormat, bases: readonly BaseFile[], seed: number): { bytes: Uint8Array; what: string; variant: number } {
  if (format === 'selftest') return { bytes: Uint8Array.of(seed % 6), what: `behaviour ${seed % 6}`, variant: 0 };
  const r = rng(seed);
  const base = pick(r, bases);
  let bytes = base.bytes;
  const steps: string[] = [];
  if (base.pth && r() < 0.6) {
    // Mutate the pickle (or a storage), then zip it again with true sizes and CRCs: reaches the unpickler and the tensor checks.
    let pickle = base.pth.pickle;
    const storages = { ...base.pth.storages };
    for (let k = 0, n = 1 + int(r, 3); k < n; k++) {
      if (r() < 0.15) {
        const key = pick(r, Object.keys(storages));
        const m = mutateOnce(r, storages[key]!, []);
        storages[key] = m.bytes;
        steps.push(`storage ${key}: ${m.what}`);
        continue;
      }
      const m = mutateOnce(r, pickle, pickleFields(pickle), [pickleHugeInt, pickleHugeInt]);
      pickle = m.bytes;
      steps.push(`pickle: ${m.what}`);
    }
    const opts = { method: pick(r, [0, 8] as const), zip64: r() < 0.5 };
    bytes = buildCheckpoint(pickle, storages, opts).bytes;
    steps.push(`zipped (method ${opts.method}${opts.zip64 ? ', zip64' : ''})`);
  } else {
    for (let k = 0, n = 1 + int(r, 3); k < n; k++) {
      const m = mutateOnce(r, bytes, FIELDS[format](bytes), EXTRA[format]);
      bytes = m.bytes;
      steps.push(m.what);
    }
  }
  const variant = int(r, 4);
  if (format === 'png' && variant & 2) {
    bytes = bytes.slice();
    fixPngCrcs(bytes);
    steps.push('CRCs fixed');
  }
  return { bytes, what: `base ${base.name}, variant ${variant}: ${steps.join('; ')}`, variant };
}


async function main(input: WorkerIn): Promise<void> {
  const { format, bases, seeds, hugeBytes = 512 << 20, verbose = false } = input;
  const post = (m: WorkerOut) => process.send!(m);
  for (const seed of seeds) {
    post({ t: 'start', seed, what: '(making the case: a fuzzer bug)' });
    const c = makeCase(format, bases, seed);
    post({ t: 'start', seed, what: c.what });
    const rss0 = process.resourceUsage().maxRSS * 1024;
    let outcome: string;
    let failure = false;
    let detail: string | undefined;
    try {
      await TARGETS[format](c.bytes, c.variant);
      outcome = 'ok';
    } catch (e) {
      if (e instanceof SiloError) {
        outcome = e.constructor.name;
        if (verbose) detail = e.message;
      }
      else {
        failure = true;
        const err = e as Error;
        outcome = `not a SiloError: ${err?.constructor?.name ?? typeof e}: ${err?.message ?? String(e)}\n${(err?.stack ?? '').split('\n').slice(1, 6).join('\n')}`;
      }
    }
    // A huge allocation shows as a jump of the peak RSS, or as external (ArrayBuffer) memory still counted after the case.
    const grew = process.resourceUsage().maxRSS * 1024 - rss0;
    const external = process.memoryUsage().arrayBuffers;
    if (grew > hugeBytes || external > hugeBytes) {
      failure = true;
      outcome = `huge allocation (peak RSS +${(grew / 2 ** 20).toFixed(0)} MiB, ArrayBuffers ${(external / 2 ** 20).toFixed(0)} MiB) after ${outcome}`;
    }
    post({ t: 'done', seed, outcome, failure, detail });
  }
  process.send!({ t: 'end' } satisfies WorkerOut, () => process.disconnect?.());
}

// The IPC channel must not keep the process alive: a case whose promise never settles then lets it exit
// before 'end', which the harness reports as a hang.
process.once('message', (input) => {
  process.channel?.unref();
  void main(input as WorkerIn);
});
