// Where each format keeps its length and size fields, found by walking a (possibly already mutated)
// file as far as its structure still holds. The mutator grows, shrinks and overwrites these.
import type { Field } from './mutate.js';

const u16be = (b: Uint8Array, p: number) => (b[p]! << 8) | b[p + 1]!;
const u32be = (b: Uint8Array, p: number) => ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;

export function safetensorsFields(b: Uint8Array): Field[] {
  return b.length >= 8 ? [{ at: 0, size: 8, big: false, what: 'header length' }] : [];
}

export function pngFields(b: Uint8Array): Field[] {
  const out: Field[] = [];
  for (let p = 8; p + 8 <= b.length && out.length < 64; ) {
    const len = u32be(b, p);
    const type = String.fromCharCode(...b.subarray(p + 4, p + 8));
    out.push({ at: p, size: 4, big: true, what: `${type} length` });
    if (type === 'IHDR') {
      out.push({ at: p + 8, size: 4, big: true, what: 'width' }, { at: p + 12, size: 4, big: true, what: 'height' });
      out.push({ at: p + 16, size: 1, big: true, what: 'bit depth' }, { at: p + 17, size: 1, big: true, what: 'colour type' }, { at: p + 20, size: 1, big: true, what: 'interlace' });
    }
    if (len > b.length) break;
    p += 12 + len;
  }
  return out;
}

export function jpegFields(b: Uint8Array): Field[] {
  const out: Field[] = [];
  let p = 2;
  while (p + 4 <= b.length && out.length < 64) {
    if (b[p] !== 0xff) break;
    const m = b[p + 1]!;
    if (m === 0xd9) break;
    if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) {
      p += 2;
      continue;
    }
    const len = u16be(b, p + 2);
    out.push({ at: p + 2, size: 2, big: true, what: `marker ${m.toString(16)} length` });
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      out.push({ at: p + 5, size: 2, big: true, what: 'height' }, { at: p + 7, size: 2, big: true, what: 'width' }, { at: p + 9, size: 1, big: true, what: 'components' });
      for (let c = 0; c < 3; c++) out.push({ at: p + 11 + 3 * c, size: 1, big: true, what: `sampling ${c}` });
    }
    if (m === 0xdd) out.push({ at: p + 4, size: 2, big: true, what: 'restart interval' });
    p += 2 + len;
    if (m === 0xda) {
      // Skip the entropy-coded data: up to a marker that is neither stuffing (FF00) nor a restart.
      while (p + 1 < b.length && !(b[p] === 0xff && b[p + 1] !== 0x00 && !(b[p + 1]! >= 0xd0 && b[p + 1]! <= 0xd7))) p++;
    }
  }
  return out;
}

export function zipFields(b: Uint8Array): Field[] {
  const out: Field[] = [];
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let e = -1;
  for (let i = b.length - 22; i >= Math.max(0, b.length - 22 - 0xffff); i--) {
    if (v.getUint32(i, true) === 0x06054b50) {
      e = i;
      break;
    }
  }
  if (e < 0) return out;
  const f = (at: number, size: 2 | 4 | 8, what: string) => at + size <= b.length && out.push({ at, size, big: false, what });
  f(e + 8, 2, 'eocd entries on disk');
  f(e + 10, 2, 'eocd entries');
  f(e + 12, 4, 'eocd cd size');
  f(e + 16, 4, 'eocd cd offset');
  let cd = v.getUint32(e + 16, true);
  let count = v.getUint16(e + 10, true);
  if (e >= 20 && v.getUint32(e - 20, true) === 0x07064b50) {
    f(e - 20 + 8, 8, 'zip64 locator offset');
    const rec = Number(v.getBigUint64(e - 20 + 8, true));
    if (rec + 56 <= b.length) {
      f(rec + 24, 8, 'zip64 entries on disk');
      f(rec + 32, 8, 'zip64 entries');
      f(rec + 40, 8, 'zip64 cd size');
      f(rec + 48, 8, 'zip64 cd offset');
      cd = Number(v.getBigUint64(rec + 48, true));
      count = Number(v.getBigUint64(rec + 32, true));
    }
  }
  for (let k = 0; k < count && cd + 46 <= b.length && out.length < 200; k++) {
    if (v.getUint32(cd, true) !== 0x02014b50) break;
    f(cd + 20, 4, `cd ${k} compressed size`);
    f(cd + 24, 4, `cd ${k} uncompressed size`);
    f(cd + 28, 2, `cd ${k} name length`);
    f(cd + 30, 2, `cd ${k} extra length`);
    f(cd + 42, 4, `cd ${k} local offset`);
    const nameLen = v.getUint16(cd + 28, true);
    const extraLen = v.getUint16(cd + 30, true);
    for (let q = cd + 46 + nameLen; q + 4 <= Math.min(b.length, cd + 46 + nameLen + extraLen); ) {
      const len = v.getUint16(q + 2, true);
      if (v.getUint16(q, true) === 1) for (let x = 0; x + 8 <= len; x += 8) f(q + 4 + x, 8, `cd ${k} zip64 value ${x / 8}`);
      q += 4 + len;
    }
    let local = v.getUint32(cd + 42, true);
    if (local === 0xffffffff) local = -1;
    if (local >= 0 && local + 30 <= b.length && v.getUint32(local, true) === 0x04034b50) {
      f(local + 18, 4, `local ${k} compressed size`);
      f(local + 22, 4, `local ${k} uncompressed size`);
      f(local + 26, 2, `local ${k} name length`);
      f(local + 28, 2, `local ${k} extra length`);
    }
    cd += 46 + nameLen + extraLen + v.getUint16(cd + 32, true);
  }
  return out;
}

/** Integer arguments and lengths after the pickle opcodes that carry them (a byte scan: it also hits string contents, which is fine for fuzzing). */
export function pickleFields(b: Uint8Array): Field[] {
  const out: Field[] = [];
  const sizes: Record<number, [1 | 2 | 4 | 8, string]> = {
    0x4b: [1, 'BININT1'], 0x4d: [2, 'BININT2'], 0x4a: [4, 'BININT'], 0x58: [4, 'BINUNICODE length'], 0x8c: [1, 'SHORT_BINUNICODE length'],
    0x71: [1, 'BINPUT'], 0x68: [1, 'BINGET'], 0x72: [4, 'LONG_BINPUT'], 0x6a: [4, 'LONG_BINGET'], 0x8a: [1, 'LONG1 length'], 0x95: [8, 'FRAME length'], 0x43: [1, 'SHORT_BINBYTES length'],
  };
  for (let p = 0; p < b.length && out.length < 400; p++) {
    const s = sizes[b[p]!];
    if (s && p + 1 + s[0] <= b.length) out.push({ at: p + 1, size: s[0], big: false, what: `${s[1]}@op${p}` });
  }
  return out;
}
