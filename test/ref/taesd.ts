// f64 CPU forward of a TAESD-family encoder / decoder (taesd.py), written from the module definitions
// (nn.Sequential layout from taesdLayout, weights by their state-dict names), for finite-difference
// checks of the VJPs where the f32 GPU forward is too noisy. Slow: small inputs only.

import { taesdLayout, type TaesdConfig } from '../../src/models/taesd/config.js';
import { groupNormSpec, rowNormForward64 } from './norm-backward.js';

export type WeightGetter = (name: string) => Float32Array;

export interface Act64 {
  data: Float64Array;
  shape: [number, number, number, number];
}

/** NCHW conv, square kernel k, zero padding `pad`, stride s, optional bias. */
function conv(x: Act64, w: Float32Array, bias: Float32Array | undefined, cout: number, k: number, s: number, pad: number): Act64 {
  const [n, cin, h, wd] = x.shape;
  const oh = Math.floor((h + 2 * pad - k) / s) + 1;
  const ow = Math.floor((wd + 2 * pad - k) / s) + 1;
  const out = new Float64Array(n * cout * oh * ow);
  for (let b = 0; b < n; b++) {
    for (let o = 0; o < cout; o++) {
      const ob = (b * cout + o) * oh * ow;
      if (bias) out.fill(bias[o]!, ob, ob + oh * ow);
      for (let c = 0; c < cin; c++) {
        const ib = (b * cin + c) * h * wd;
        for (let ky = 0; ky < k; ky++) {
          for (let kx = 0; kx < k; kx++) {
            const wv = w[((o * cin + c) * k + ky) * k + kx]!;
            for (let oy = 0; oy < oh; oy++) {
              const iy = oy * s + ky - pad;
              if (iy < 0 || iy >= h) continue;
              const row = ib + iy * wd;
              const orow = ob + oy * ow;
              for (let ox = 0; ox < ow; ox++) {
                const ix = ox * s + kx - pad;
                if (ix >= 0 && ix < wd) out[orow + ox]! += wv * x.data[row + ix]!;
              }
            }
          }
        }
      }
    }
  }
  return { data: out, shape: [n, cout, oh, ow] };
}

const map = (x: Act64, f: (v: number) => number): Act64 => ({ data: x.data.map(f), shape: x.shape });
const relu = (x: Act64) => map(x, (v) => Math.max(v, 0));
const add = (a: Act64, b: Act64): Act64 => ({ data: a.data.map((v, i) => v + b.data[i]!), shape: a.shape });

function upsample2x(x: Act64): Act64 {
  const [n, c, h, w] = x.shape;
  const out = new Float64Array(n * c * 4 * h * w);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < 2 * h; y++) for (let xx = 0; xx < 2 * w; xx++) out[(p * 2 * h + y) * 2 * w + xx] = x.data[(p * h + (y >> 1)) * w + (xx >> 1)]!;
  }
  return { data: out, shape: [n, c, 2 * h, 2 * w] };
}

/** taesd.py Block(n_in, n_out) with the FLUX.2 pool branch when `pool` (names relative to `p`). */
function block(x: Act64, get: WeightGetter, p: string, cin: number, cout: number, pool: boolean, c: TaesdConfig): Act64 {
  if (pool) {
    const hidden = cin * c.poolExpansion;
    const e = conv(x, get(`${p}pool.0.weight`), undefined, hidden, 1, 1, 0);
    const nrm = rowNormForward64(e.data, groupNormSpec(e.shape, c.poolGroups, 1e-5), get(`${p}pool.1.weight`), get(`${p}pool.1.bias`));
    x = add(x, conv(relu({ data: nrm, shape: e.shape }), get(`${p}pool.3.weight`), undefined, cin, 1, 1, 0));
  }
  let h = relu(conv(x, get(`${p}conv.0.weight`), get(`${p}conv.0.bias`), cout, 3, 1, 1));
  h = relu(conv(h, get(`${p}conv.2.weight`), get(`${p}conv.2.bias`), cout, 3, 1, 1));
  h = conv(h, get(`${p}conv.4.weight`), get(`${p}conv.4.bias`), cout, 3, 1, 1);
  const skip = cin === cout ? x : conv(x, get(`${p}skip.weight`), undefined, cout, 1, 1, 0);
  return relu(add(h, skip));
}

/** The encoder (image -> latent) or decoder (latent -> raw image) of config `c`, in f64. */
export function taesdForward64(c: TaesdConfig, part: 'encoder' | 'decoder', get: WeightGetter, x: Act64): Act64 {
  let h = x;
  for (const l of taesdLayout(c)[part]) {
    const p = `${l.index}.`;
    switch (l.kind) {
      case 'conv':
        h = conv(h, get(`${p}weight`), l.bias ? get(`${p}bias`) : undefined, l.cout, 3, l.stride, 1);
        break;
      case 'block':
        h = block(h, get, p, l.cin, l.cout, l.pool, c);
        break;
      case 'relu':
        h = relu(h);
        break;
      case 'clamp':
        h = map(h, (v) => Math.tanh(v / 3) * 3);
        break;
      case 'upsample':
        h = upsample2x(h);
        break;
    }
  }
  return h;
}
