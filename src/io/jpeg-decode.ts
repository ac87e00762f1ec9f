// Baseline / extended sequential JPEG decoder (Huffman, 8-bit samples, 1 or 3 components, any
// sampling factors 1..4, restart markers, DQT / DHT / DRI anywhere before the scan that uses them,
// interleaved or one-scan-per-component). Progressive, lossless, hierarchical and arithmetic-coded
// files are rejected with a JpegError, as are malformed or truncated streams: decoding never returns
// an image built from missing data.
//
// Numerics: dequantise, float64 orthonormal IDCT, + 128, clamp to [0, 255] (libjpeg's range limit),
// chroma upsampling, JFIF YCbCr -> RGB, and one final rounding to 8 bits. Samples stay in float between
// the stages (libjpeg rounds after each), which moves an output by at most ~1 level from libjpeg's.
// Chroma upsampling is libjpeg's default "fancy" triangular filter along every axis subsampled by 2
// (output 2i = 3/4 c[i] + 1/4 c[i-1], output 2i+1 = 3/4 c[i] + 1/4 c[i+1], neighbours clamped to the
// component's real extent ceil(W / 2)); other ratios (3, 4) replicate samples.

import { DCT8, YCC_TO_RGB, ZIGZAG } from './jpeg-tables.js';
import { DEFAULT_MAX_PIXELS, pixelCapProblem } from './pixel-cap.js';
import { ImageError, type Image8 } from './types.js';

/** A malformed, truncated or unsupported JPEG (an ImageError, so a SiloError): names the file and the problem. */
export class JpegError extends ImageError {
  constructor(file: string, detail: string) {
    super(file, detail, 'jpeg');
  }
}

interface HuffTable {
  /** maxcode[l]: largest code of length l (-1 when none); valptr[l]: index of its first symbol. */
  maxcode: Int32Array;
  mincode: Int32Array;
  valptr: Int32Array;
  values: Uint8Array;
}

interface FrameComponent {
  id: number;
  h: number;
  v: number;
  tq: number;
  /** Blocks in the MCU-padded grid, and the component's real size in samples. */
  bw: number;
  bh: number;
  width: number;
  height: number;
  coef: Int32Array;
  /** The quantisation table latched when the component's first scan starts (natural order). */
  quant: Uint16Array | null;
}

interface Frame {
  width: number;
  height: number;
  hmax: number;
  vmax: number;
  mcux: number;
  mcuy: number;
  comps: FrameComponent[];
}

const SOF_NAMES: Record<number, string> = {
  0xc3: 'lossless (SOF3)',
  0xc5: 'hierarchical (SOF5)',
  0xc6: 'hierarchical progressive (SOF6)',
  0xc7: 'hierarchical lossless (SOF7)',
  0xc9: 'arithmetic-coded (SOF9)',
  0xca: 'arithmetic-coded progressive (SOF10)',
  0xcb: 'arithmetic-coded lossless (SOF11)',
  0xcd: 'arithmetic-coded hierarchical (SOF13)',
  0xce: 'arithmetic-coded hierarchical progressive (SOF14)',
  0xcf: 'arithmetic-coded hierarchical lossless (SOF15)',
};

function hex(m: number): string {
  return `0xFF${m.toString(16).toUpperCase().padStart(2, '0')}`;
}

class Decoder {
  private pos = 0;
  private readonly quant: (Uint16Array | null)[] = [null, null, null, null];
  private readonly dcTables: (HuffTable | null)[] = [null, null, null, null];
  private readonly acTables: (HuffTable | null)[] = [null, null, null, null];
  private restartInterval = 0;
  private frame: Frame | null = null;
  private jfif = false;
  private adobeTransform = -1;
  private scans = 0;
  // Entropy-coded segment reader state.
  private bitBuf = 0;
  private bitCount = 0;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly name: string,
    private readonly maxPixels: number,
  ) {}

  fail(problem: string): never {
    throw new JpegError(this.name, problem);
  }

  private u8(): number {
    if (this.pos >= this.bytes.length) this.fail(`truncated: the file ends at byte ${this.bytes.length} inside a marker segment`);
    return this.bytes[this.pos++]!;
  }

  private u16(): number {
    return (this.u8() << 8) | this.u8();
  }

  decode(): Image8 {
    const b = this.bytes;
    if (b.length < 2 || b[0] !== 0xff || b[1] !== 0xd8) this.fail('not a JPEG file (no SOI marker 0xFFD8 at the start)');
    this.pos = 2;
    for (;;) {
      if (this.pos >= b.length) {
        // A missing EOI is tolerated (as libjpeg does) once every component has been decoded.
        if (this.frame && this.scans > 0 && this.frame.comps.every((c) => c.quant)) return this.finish();
        this.fail(this.frame ? 'truncated: the file ends before the image data is complete' : 'truncated: the file ends before a frame header (SOF)');
      }
      if (b[this.pos] !== 0xff) this.fail(`expected a marker at byte ${this.pos}, found 0x${b[this.pos]!.toString(16)}`);
      while (this.pos < b.length && b[this.pos] === 0xff) this.pos++; // fill bytes
      const m = this.u8();
      if (m === 0xd9) {
        if (!this.frame) this.fail('no image: EOI before any frame header (SOF)');
        if (this.scans === 0) this.fail('no image: EOI before any scan (SOS)');
        const missing = this.frame.comps.filter((c) => !c.quant);
        if (missing.length) this.fail(`truncated: component(s) ${missing.map((c) => c.id).join(', ')} have no scan before EOI`);
        return this.finish();
      }
      if (m === 0x01 || (m >= 0xd0 && m <= 0xd7)) {
        if (m !== 0x01) this.fail(`unexpected restart marker ${hex(m)} outside a scan at byte ${this.pos - 2}`);
        continue;
      }
      if (m === 0xd8) this.fail(`unexpected second SOI marker at byte ${this.pos - 2}`);
      if (m === 0x00) this.fail(`invalid marker 0xFF00 at byte ${this.pos - 2}`);
      const start = this.pos;
      const len = this.u16();
      if (len < 2) this.fail(`marker ${hex(m)} at byte ${start - 2} has an invalid length ${len}`);
      const end = start + len;
      if (end > b.length) this.fail(`truncated: marker segment ${hex(m)} at byte ${start - 2} needs ${len} bytes, the file has ${b.length - start}`);
      switch (m) {
        case 0xc0:
        case 0xc1:
          this.readFrame(end, m);
          break;
        case 0xc2:
          this.fail('progressive JPEG is not supported');
        case 0xc4:
          this.readHuffman(end);
          break;
        case 0xcc:
          this.fail('arithmetic-coded JPEG is not supported');
        case 0xdb:
          this.readQuant(end);
          break;
        case 0xdd:
          if (len !== 4) this.fail(`DRI segment has length ${len}, expected 4`);
          this.restartInterval = this.u16();
          break;
        case 0xdc:
          this.fail('DNL marker (image height given after the scan) is not supported');
        case 0xda:
          this.readScan(end);
          continue; // readScan leaves pos at the next marker
        case 0xe0:
          if (len >= 7 && b[start + 2] === 0x4a && b[start + 3] === 0x46 && b[start + 4] === 0x49 && b[start + 5] === 0x46 && b[start + 6] === 0) this.jfif = true;
          break;
        case 0xee:
          if (len >= 14 && String.fromCharCode(...b.subarray(start + 2, start + 7)) === 'Adobe') this.adobeTransform = b[start + 13]!;
          break;
        default:
          if (SOF_NAMES[m]) this.fail(`${SOF_NAMES[m]} JPEG is not supported`);
        // APPn, COM and other segments are skipped.
      }
      this.pos = end;
    }
  }

  private readFrame(end: number, marker: number): void {
    if (this.frame) this.fail('more than one frame header (SOF)');
    const precision = this.u8();
    if (precision !== 8) this.fail(`${precision}-bit samples are not supported (only 8-bit)`);
    const height = this.u16();
    const width = this.u16();
    const nc = this.u8();
    if (height === 0) this.fail('image height 0 (defined later by a DNL marker) is not supported');
    if (width === 0) this.fail('image width is 0');
    const tooBig = pixelCapProblem(width, height, this.maxPixels);
    if (tooBig) this.fail(tooBig);
    if (nc !== 1 && nc !== 3) this.fail(nc === 4 ? '4-component (CMYK / YCCK) JPEG is not supported' : `${nc}-component JPEG is not supported (only 1 or 3)`);
    if (end - this.pos !== 3 * nc) this.fail(`SOF${marker - 0xc0} segment length does not match its ${nc} components`);
    const raw: { id: number; h: number; v: number; tq: number }[] = [];
    for (let i = 0; i < nc; i++) {
      const id = this.u8();
      const hv = this.u8();
      const tq = this.u8();
      const h = hv >> 4;
      const v = hv & 15;
      if (h < 1 || h > 4 || v < 1 || v > 4) this.fail(`component ${id} has invalid sampling factors ${h}x${v}`);
      if (tq > 3) this.fail(`component ${id} uses quantisation table ${tq} (at most 3)`);
      if (raw.some((c) => c.id === id)) this.fail(`component id ${id} appears twice in the frame header`);
      raw.push({ id, h, v, tq });
    }
    const hmax = Math.max(...raw.map((c) => c.h));
    const vmax = Math.max(...raw.map((c) => c.v));
    for (const c of raw) {
      if (hmax % c.h || vmax % c.v) this.fail(`component ${c.id}'s sampling ${c.h}x${c.v} is not an integer fraction of ${hmax}x${vmax} (not supported, as in libjpeg)`);
    }
    const mcux = Math.ceil(width / (8 * hmax));
    const mcuy = Math.ceil(height / (8 * vmax));
    // Every coded block costs at least 2 bits (a DC and an end-of-block code): a header claiming far
    // more blocks than the file could hold is corrupt, and must not make us allocate for it.
    const minBlocks = Math.ceil(width / 8) * Math.ceil(height / 8);
    if (minBlocks > 4 * this.bytes.length) {
      this.fail(`truncated or corrupt: the header declares ${width}x${height} pixels (${minBlocks} blocks), more than ${this.bytes.length} bytes can hold`);
    }
    const comps = raw.map((c) => ({
      ...c,
      bw: mcux * c.h,
      bh: mcuy * c.v,
      width: Math.ceil((width * c.h) / hmax),
      height: Math.ceil((height * c.v) / vmax),
      coef: new Int32Array(mcux * c.h * mcuy * c.v * 64),
      quant: null,
    }));
    this.frame = { width, height, hmax, vmax, mcux, mcuy, comps };
  }

  private readQuant(end: number): void {
    while (this.pos < end) {
      const pt = this.u8();
      const pq = pt >> 4;
      const id = pt & 15;
      if (pq > 1 || id > 3) this.fail(`DQT: invalid table precision/id byte 0x${pt.toString(16)}`);
      if (this.pos + 64 * (pq + 1) > end) this.fail('DQT: segment too short for its table');
      const t = new Uint16Array(64);
      for (let k = 0; k < 64; k++) t[ZIGZAG[k]!] = pq ? this.u16() : this.u8();
      if (t.some((q) => q === 0)) this.fail(`DQT: table ${id} contains a zero divisor`);
      this.quant[id] = t;
    }
  }

  private readHuffman(end: number): void {
    while (this.pos < end) {
      const tcth = this.u8();
      const tc = tcth >> 4;
      const id = tcth & 15;
      if (tc > 1 || id > 3) this.fail(`DHT: invalid table class/id byte 0x${tcth.toString(16)}`);
      const bits: number[] = [];
      let total = 0;
      for (let i = 0; i < 16; i++) {
        bits.push(this.u8());
        total += bits[i]!;
      }
      if (total > 256 || this.pos + total > end) this.fail(`DHT: table ${tc ? 'AC' : 'DC'}${id} declares ${total} symbols, more than the segment holds`);
      const values = this.bytes.slice(this.pos, this.pos + total);
      this.pos += total;
      const maxcode = new Int32Array(18).fill(-1);
      const mincode = new Int32Array(17);
      const valptr = new Int32Array(17);
      let code = 0;
      let k = 0;
      for (let l = 1; l <= 16; l++) {
        valptr[l] = k;
        mincode[l] = code;
        code += bits[l - 1]!;
        k += bits[l - 1]!;
        if (bits[l - 1]) maxcode[l] = code - 1;
        if (code >= 1 << l) this.fail(`DHT: table ${tc ? 'AC' : 'DC'}${id} is not a valid Huffman code (too many codes of length ${l})`);
        code <<= 1;
      }
      (tc ? this.acTables : this.dcTables)[id] = { maxcode, mincode, valptr, values };
    }
  }

  // ---- entropy-coded data ----

  /** Next bit of the scan; running into a marker or the file's end means the data is cut short. */
  private bit(): number {
    if (this.bitCount === 0) {
      const b = this.bytes;
      if (this.pos >= b.length) this.fail('truncated: the file ends inside the entropy-coded data');
      const v = b[this.pos]!;
      if (v === 0xff) {
        const next = b[this.pos + 1];
        if (next === undefined) this.fail('truncated: the file ends inside the entropy-coded data');
        if (next !== 0) this.fail(`corrupt or truncated scan: marker ${hex(next)} at byte ${this.pos} before the scan's data is complete`);
        this.pos += 2;
      } else {
        this.pos++;
      }
      this.bitBuf = v;
      this.bitCount = 8;
    }
    this.bitCount--;
    return (this.bitBuf >> this.bitCount) & 1;
  }

  private receive(n: number): number {
    let v = 0;
    for (let i = 0; i < n; i++) v = (v << 1) | this.bit();
    return v;
  }

  /** receive(s) sign-extended (T.81 F.2.2.1 EXTEND). */
  private receiveExtend(s: number): number {
    const v = this.receive(s);
    return v < 1 << (s - 1) ? v - (1 << s) + 1 : v;
  }

  private huff(t: HuffTable): number {
    let code = 0;
    for (let l = 1; l <= 16; l++) {
      code = (code << 1) | this.bit();
      if (code <= t.maxcode[l]!) return t.values[t.valptr[l]! + code - t.mincode[l]!]!;
    }
    this.fail(`corrupt scan: invalid Huffman code near byte ${this.pos}`);
  }

  private readScan(end: number): void {
    const f = this.frame;
    if (!f) this.fail('scan (SOS) before the frame header (SOF)');
    const ns = this.u8();
    if (ns < 1 || ns > 4 || end - this.pos !== 2 * ns + 3) this.fail(`SOS: invalid component count ${ns} for a segment of ${end - this.pos + 3} bytes`);
    const scan: { c: FrameComponent; dc: HuffTable; ac: HuffTable }[] = [];
    for (let i = 0; i < ns; i++) {
      const id = this.u8();
      const t = this.u8();
      const c = f.comps.find((x) => x.id === id);
      if (!c) this.fail(`SOS: component ${id} is not in the frame`);
      if (scan.some((s) => s.c === c)) this.fail(`SOS: component ${id} appears twice`);
      const dc = this.dcTables[t >> 4];
      const ac = this.acTables[t & 15];
      if (!dc || !ac) this.fail(`SOS: component ${id} uses Huffman tables DC${t >> 4} / AC${t & 15}, which are not defined`);
      scan.push({ c, dc, ac });
    }
    const ss = this.u8();
    const se = this.u8();
    const ahal = this.u8();
    if (ss !== 0 || se !== 63 || ahal !== 0) this.fail(`SOS: spectral selection ${ss}..${se} / approximation 0x${ahal.toString(16)} is not sequential (progressive JPEG is not supported)`);
    if (ns > 1 && scan.reduce((a, s) => a + s.c.h * s.c.v, 0) > 10) this.fail('SOS: more than 10 blocks per MCU');
    for (const { c } of scan) {
      if (c.quant) this.fail(`component ${c.id} is coded by more than one scan`);
      const q = this.quant[c.tq];
      if (!q) this.fail(`component ${c.id} uses quantisation table ${c.tq}, which is not defined before its scan`);
      c.quant = q.slice();
    }
    this.scans++;
    this.pos = end;
    this.bitCount = 0;

    const single = ns === 1;
    const mcusX = single ? Math.ceil(scan[0]!.c.width / 8) : f.mcux;
    const mcusY = single ? Math.ceil(scan[0]!.c.height / 8) : f.mcuy;
    const total = mcusX * mcusY;
    const pred = new Int32Array(ns);
    let expectRst = 0;
    for (let m = 0; m < total; m++) {
      if (this.restartInterval > 0 && m > 0 && m % this.restartInterval === 0) {
        this.bitCount = 0; // the rest of the byte is padding
        this.expectRestart(expectRst);
        expectRst = (expectRst + 1) & 7;
        pred.fill(0);
      }
      const mx = m % mcusX;
      const my = Math.floor(m / mcusX);
      for (let si = 0; si < ns; si++) {
        const { c, dc, ac } = scan[si]!;
        const h = single ? 1 : c.h;
        const v = single ? 1 : c.v;
        for (let y = 0; y < v; y++)
          for (let x = 0; x < h; x++) {
            const base = ((my * v + y) * c.bw + mx * h + x) * 64;
            pred[si] = this.readBlock(c.coef, base, dc, ac, pred[si]!);
          }
      }
    }
    this.bitCount = 0;
    // Skip to the next marker: padding bits are gone; tolerate stray bytes and a trailing RST as libjpeg does.
    const b = this.bytes;
    while (this.pos < b.length) {
      if (b[this.pos] === 0xff && this.pos + 1 < b.length && b[this.pos + 1] !== 0 && b[this.pos + 1] !== 0xff) {
        const mk = b[this.pos + 1]!;
        if (mk >= 0xd0 && mk <= 0xd7) {
          this.pos += 2;
          continue;
        }
        return;
      }
      this.pos++;
    }
  }

  private expectRestart(n: number): void {
    const b = this.bytes;
    if (this.pos + 1 >= b.length) this.fail('truncated: the file ends where a restart marker is due');
    if (b[this.pos] !== 0xff) this.fail(`corrupt scan: expected restart marker RST${n} at byte ${this.pos}, found data`);
    while (this.pos < b.length && b[this.pos] === 0xff) this.pos++;
    const m = b[this.pos++];
    if (m !== 0xd0 + n) this.fail(`corrupt scan: expected restart marker RST${n} at byte ${this.pos - 2}, found ${m === undefined ? 'the end of the file' : hex(m)}`);
  }

  private readBlock(coef: Int32Array, base: number, dc: HuffTable, ac: HuffTable, pred: number): number {
    const s = this.huff(dc);
    if (s > 11) this.fail(`corrupt scan: DC magnitude category ${s} (at most 11) near byte ${this.pos}`);
    const value = pred + (s ? this.receiveExtend(s) : 0);
    coef[base] = value;
    for (let k = 1; k < 64; ) {
      const rs = this.huff(ac);
      const r = rs >> 4;
      const sz = rs & 15;
      if (sz === 0) {
        if (r !== 15) break; // end of block
        k += 16;
        if (k > 64) this.fail(`corrupt scan: a zero run passes the end of a block near byte ${this.pos}`);
        continue;
      }
      k += r;
      if (k > 63) this.fail(`corrupt scan: AC coefficient index ${k} past the end of a block near byte ${this.pos}`);
      coef[base + ZIGZAG[k]!] = this.receiveExtend(sz);
      k++;
    }
    return value;
  }

  // ---- reconstruction ----

  private finish(): Image8 {
    const f = this.frame!;
    const { width, height } = f;
    const planes = f.comps.map((c) => this.upsample(c, this.idctPlane(c), f));
    const colour = planes.length === 3;
    // libjpeg's rule: JFIF means YCbCr; else an Adobe marker's transform flag decides; else ids 'R','G','B' mean RGB.
    const ids = f.comps.map((c) => c.id);
    const rgbIds = ids[0] === 0x52 && ids[1] === 0x47 && ids[2] === 0x42;
    const isYcc = colour && (this.jfif || (this.adobeTransform >= 0 ? this.adobeTransform !== 0 : !rgbIds));
    const n = width * height;
    const channels = colour ? 3 : 1;
    const data = new Uint8Array(n * channels);
    const round = (v: number) => (v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v));
    if (!colour) {
      const p = planes[0]!;
      for (let i = 0; i < n; i++) data[i] = round(p[i]!);
    } else if (!isYcc) {
      for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) data[3 * i + c] = round(planes[c]![i]!);
    } else {
      const [py, pcb, pcr] = planes as [Float64Array, Float64Array, Float64Array];
      const m = YCC_TO_RGB;
      for (let i = 0; i < n; i++) {
        const y = py[i]!;
        const cb = pcb[i]! - 128;
        const cr = pcr[i]! - 128;
        data[3 * i] = round(y + m[2]! * cr);
        data[3 * i + 1] = round(y + m[4]! * cb + m[5]! * cr);
        data[3 * i + 2] = round(y + m[7]! * cb);
      }
    }
    return { width, height, channels, data };
  }

  /** Dequantise + IDCT every block of a component: samples (+128, clamped to [0, 255]) of its padded grid. */
  private idctPlane(c: FrameComponent): Float64Array {
    const stride = c.bw * 8;
    const out = new Float64Array(stride * c.bh * 8);
    const q = c.quant!;
    const tmp = new Float64Array(64);
    const deq = new Float64Array(64);
    for (let by = 0; by < c.bh; by++)
      for (let bx = 0; bx < c.bw; bx++) {
        const base = (by * c.bw + bx) * 64;
        for (let k = 0; k < 64; k++) deq[k] = c.coef[base + k]! * q[k]!;
        // tmp[y, v] = sum_u C[u, y] F[u, v]; out[y, x] = sum_v tmp[y, v] C[v, x].
        for (let y = 0; y < 8; y++)
          for (let v = 0; v < 8; v++) {
            let s = 0;
            for (let u = 0; u < 8; u++) s += DCT8[u * 8 + y]! * deq[u * 8 + v]!;
            tmp[y * 8 + v] = s;
          }
        for (let y = 0; y < 8; y++)
          for (let x = 0; x < 8; x++) {
            let s = 128;
            for (let v = 0; v < 8; v++) s += tmp[y * 8 + v]! * DCT8[v * 8 + x]!;
            out[(by * 8 + y) * stride + bx * 8 + x] = s < 0 ? 0 : s > 255 ? 255 : s;
          }
      }
    return out;
  }

  /** A component's samples brought to the image size (see the file comment for the filter). */
  private upsample(c: FrameComponent, plane: Float64Array, f: Frame): Float64Array {
    const stride = c.bw * 8;
    const rx = f.hmax / c.h;
    const ry = f.vmax / c.v;
    const { width, height } = f;
    if (rx === 1 && ry === 1) {
      const out = new Float64Array(height * width);
      for (let y = 0; y < height; y++) out.set(plane.subarray(y * stride, y * stride + width), y * width);
      return out;
    }
    // Per axis: two taps (index, weight) per output coordinate.
    const taps = (len: number, n: number, ratio: number) => {
      const i0 = new Int32Array(len);
      const i1 = new Int32Array(len);
      const w0 = new Float64Array(len);
      for (let o = 0; o < len; o++) {
        if (ratio === 2) {
          const i = o >> 1;
          i0[o] = i;
          i1[o] = o & 1 ? Math.min(i + 1, n - 1) : Math.max(i - 1, 0);
          w0[o] = 0.75;
        } else {
          // ratio 1 is the identity; 3 and 4 replicate.
          i0[o] = i1[o] = Math.min(Math.floor(o / ratio), n - 1);
          w0[o] = 1;
        }
      }
      return { i0, i1, w0 };
    };
    const ty = taps(height, c.height, ry);
    const tx = taps(width, c.width, rx);
    // Vertical pass to height x c.width, then horizontal to height x width.
    const mid = new Float64Array(height * c.width);
    for (let y = 0; y < height; y++) {
      const a = ty.i0[y]! * stride;
      const b = ty.i1[y]! * stride;
      const w = ty.w0[y]!;
      for (let x = 0; x < c.width; x++) mid[y * c.width + x] = w * plane[a + x]! + (1 - w) * plane[b + x]!;
    }
    const out = new Float64Array(height * width);
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) {
        const w = tx.w0[x]!;
        out[y * width + x] = w * mid[y * c.width + tx.i0[x]!]! + (1 - w) * mid[y * c.width + tx.i1[x]!]!;
      }
    return out;
  }
}

/** Decodes a baseline (or extended sequential, 8-bit, Huffman) JPEG; `name` labels errors. */
export interface JpegDecodeOptions {
  /** Refuse larger images right after the frame header, before allocating anything. Default 2^26 pixels, as PNG. */
  maxPixels?: number;
}

export function decodeJpeg(bytes: Uint8Array, name: string, options: JpegDecodeOptions = {}): Image8 {
  return new Decoder(bytes, name, options.maxPixels ?? DEFAULT_MAX_PIXELS).decode();
}
