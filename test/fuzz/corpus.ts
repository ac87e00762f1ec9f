// The valid files the fuzzer mutates: small safetensors files written by our serializer, torch.save
// style checkpoints built by the test fixtures (stored, deflated, zip64; nested, shared, strided),
// and PNGs / JPEGs of a real photo from ../shared re-encoded small by our own encoders.
import { readFileSync } from 'node:fs';
import { f32Entry, serializeSafetensors, type SafetensorsEntry } from '../../src/formats/safetensors.js';
import { crop } from '../../src/io/image.js';
import { encodeJpeg } from '../../src/io/jpeg-encode.js';
import { decodePng, encodePng } from '../../src/io/png.js';
import type { Image8 } from '../../src/io/types.js';
import type { BaseFile } from './protocol.js';
import { buildCheckpoint, PickleWriter, specPickle, tensorSpec, writeSpec, type Spec } from '../helpers/torch-fixtures.js';

export type Corpus = BaseFile[];

const PHOTO = new URL('../../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;

const seq = (n: number, k = 1) => Uint8Array.from({ length: n }, (_, i) => (i * k * 37 + 11) & 0xff);

export function safetensorsCorpus(): Corpus {
  const raw = (dtype: SafetensorsEntry['dtype'], shape: number[], bytes: number): SafetensorsEntry => ({ dtype, shape, data: seq(bytes, shape.length + 1) });
  const all: Record<string, SafetensorsEntry> = {
    'w.f32': f32Entry([0.5, -1, 2, 3.25, 1e-3, 7, 8, 9, 10, 11, 12, -13], [3, 4]),
    'w.f16': f32Entry([1, 2, 3, 4, 5], [5], 'F16'),
    'w.bf16': f32Entry([1, -2, 3, 65504], [2, 2], 'BF16'),
    'i.i64': raw('I64', [3], 24),
    'i.i32': raw('I32', [2, 1], 8),
    'u.u8': raw('U8', [7], 7),
    'b.bool': { dtype: 'BOOL', shape: [2], data: Uint8Array.from([0, 1]) },
    'd.f64': raw('F64', [2], 16),
    'e.empty': { dtype: 'F32', shape: [0, 3], data: new Uint8Array(0) },
    's.scalar': f32Entry([42], []),
  };
  const small = { a: f32Entry([1, 2, 3], [3]), b: f32Entry([4, 5], [1, 2], 'F16') };
  // An unpadded, unsorted header written by hand, as other writers may.
  const text = new TextEncoder().encode('{"z":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"},"a":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}');
  const hand = new Uint8Array(8 + text.length + 11);
  new DataView(hand.buffer).setBigUint64(0, BigInt(text.length), true);
  hand.set(text, 8);
  hand.set(seq(11), 8 + text.length);
  return [
    { name: 'all-dtypes', bytes: serializeSafetensors(all, { format: 'pt', note: 'fuzz' }) },
    { name: 'small', bytes: serializeSafetensors(small) },
    { name: 'hand-header', bytes: hand },
  ];
}

export function pthCorpus(): Corpus {
  const storages = { '0': seq(48), '1': seq(12, 3), '2': seq(24, 5) };
  const f = (size: number[], stride?: number[], offset = 0) => tensorSpec('FloatStorage', '0', 12, size, stride, offset);
  const flat: Spec = {
    dict: [
      ['w', f([3, 4])],
      ['w_t', f([4, 3], [1, 4])],
      ['w_slice', f([2, 2], [4, 1], 5)],
      ['w_expand', f([2, 3], [0, 1])],
      ['h', tensorSpec('HalfStorage', '1', 6, [2, 3])],
      ['l', tensorSpec('LongStorage', '2', 3, [3])],
      ['n', 3],
    ],
  };
  const nested: Spec = { dict: [['epoch', 2], ['state_dict', flat], ['layers', [f([12]), null, { tuple: [f([6], [2]), 'x'] }]]] };
  // A tensor referenced twice through the memo, and a list shared by two keys.
  const w = new PickleWriter().proto(2).emptyDict().mark().str('a');
  writeSpec(w, f([3, 4])).binput(1).str('b').binget(1).str('list').emptyList().binput(2).mark().binget(1).binget(1).appends().str('again').binget(2);
  const shared = w.setitems().stop().bytes();
  const base = (name: string, pickle: Uint8Array, opts: { method?: 0 | 8; zip64?: boolean } = {}): BaseFile => ({
    name,
    bytes: buildCheckpoint(pickle, storages, opts).bytes,
    pth: { pickle, storages },
  });
  return [
    base('flat-stored', specPickle(flat)),
    base('flat-deflated', specPickle(flat), { method: 8 }),
    base('flat-zip64', specPickle(flat), { zip64: true }),
    base('nested', specPickle(nested)),
    base('shared-memo', shared, { method: 8, zip64: true }),
  ];
}

async function photo(): Promise<Image8> {
  return decodePng(new Uint8Array(readFileSync(PHOTO)), PHOTO);
}

const toChannels = (img: Image8, channels: 1 | 2 | 4): Image8 => {
  const n = img.width * img.height;
  const data = new Uint8Array(n * channels);
  for (let i = 0; i < n; i++) {
    const [r, g, b] = [img.data[3 * i]!, img.data[3 * i + 1]!, img.data[3 * i + 2]!];
    const y = (r * 299 + g * 587 + b * 114) / 1000;
    if (channels === 4) data.set([r, g, b, (i * 7) & 0xff], 4 * i);
    else if (channels === 2) data.set([y, (i * 5) & 0xff], 2 * i);
    else data[i] = y;
  }
  return { width: img.width, height: img.height, channels, data };
};

export async function pngCorpus(): Promise<Corpus> {
  const img = crop(await photo(), 100, 80, 13, 9);
  const wide: Uint16Array = Uint16Array.from(img.data, (v, i) => v * 257 + (i & 0xff));
  return [
    { name: 'rgb8', bytes: await encodePng(img) },
    { name: 'rgba8', bytes: await encodePng(toChannels(img, 4)) },
    { name: 'gray8', bytes: await encodePng(toChannels(img, 1), { filter: 'none' }) },
    { name: 'graya8', bytes: await encodePng(toChannels(img, 2), { filter: 'paeth' }) },
    { name: 'rgb16', bytes: await encodePng({ width: img.width, height: img.height, channels: 3, data: wide }) },
  ];
}

export async function jpegCorpus(): Promise<Corpus> {
  const img = crop(await photo(), 90, 70, 21, 14);
  const gray = toChannels(img, 1);
  return [
    { name: '420-q50', bytes: encodeJpeg(img.data, img.width, img.height, 50) },
    { name: '444-rst1', bytes: encodeJpeg(img.data, img.width, img.height, 75, { subsampling: '4:4:4', restartInterval: 1 }) },
    { name: '422-separate', bytes: encodeJpeg(img.data, img.width, img.height, 30, { subsampling: '4:2:2', separateScans: true }) },
    { name: 'gray-q90', bytes: encodeJpeg(gray.data, img.width, img.height, 90, { channels: 1, restartInterval: 3 }) },
  ];
}
