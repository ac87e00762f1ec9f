// CPU references for the convolution family (f64 arithmetic, PyTorch semantics and layouts).

import { ACT_REF } from './math.js';

export interface ConvRefOptions {
  stride?: [number, number];
  padding?: [number, number];
  groups?: number;
  act?: string;
  alpha?: number;
}

/** conv2d: x [N, Cin, H, W], w [Cout, Cin/groups, KH, KW], bias [Cout]. */
export function conv2dRef(
  x: ArrayLike<number>,
  xShape: number[],
  w: ArrayLike<number>,
  wShape: number[],
  bias: ArrayLike<number> | null,
  opts: ConvRefOptions = {},
): { out: Float32Array; shape: number[] } {
  const [n, cin, h, wd] = xShape as [number, number, number, number];
  const [cout, cig, kh, kw] = wShape as [number, number, number, number];
  const [sy, sx] = opts.stride ?? [1, 1];
  const [py, px] = opts.padding ?? [0, 0];
  const groups = opts.groups ?? 1;
  const cog = cout / groups;
  const oh = Math.floor((h + 2 * py - kh) / sy) + 1;
  const ow = Math.floor((wd + 2 * px - kw) / sx) + 1;
  const f = ACT_REF[opts.act ?? 'none']!;
  const out = new Float32Array(n * cout * oh * ow);
  for (let b = 0; b < n; b++) {
    for (let co = 0; co < cout; co++) {
      const g = Math.floor(co / cog);
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++) {
          let s = bias ? bias[co]! : 0;
          for (let c = 0; c < cig; c++) {
            const ci = g * cig + c;
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * sy - py + ky;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * sx - px + kx;
                if (ix < 0 || ix >= wd) continue;
                s += x[((b * cin + ci) * h + iy) * wd + ix]! * w[((co * cig + c) * kh + ky) * kw + kx]!;
              }
            }
          }
          out[((b * cout + co) * oh + oy) * ow + ox] = f(s, opts.alpha ?? 0.01);
        }
      }
    }
  }
  return { out, shape: [n, cout, oh, ow] };
}

/**
 * conv_transpose2d as a scatter (the definition, independent of the kernel's gather form):
 * x [N, Cin, H, W], w [Cin, Cout/groups, KH, KW], bias [Cout].
 */
export function convTranspose2dRef(
  x: ArrayLike<number>,
  xShape: number[],
  w: ArrayLike<number>,
  wShape: number[],
  bias: ArrayLike<number> | null,
  opts: ConvRefOptions & { outputPadding?: [number, number] } = {},
): { out: Float32Array; shape: number[] } {
  const [n, cin, h, wd] = xShape as [number, number, number, number];
  const [, cog, kh, kw] = wShape as [number, number, number, number];
  const [sy, sx] = opts.stride ?? [1, 1];
  const [py, px] = opts.padding ?? [0, 0];
  const [opy, opx] = opts.outputPadding ?? [0, 0];
  const groups = opts.groups ?? 1;
  const cig = cin / groups;
  const cout = cog * groups;
  const oh = (h - 1) * sy - 2 * py + kh + opy;
  const ow = (wd - 1) * sx - 2 * px + kw + opx;
  const acc = new Float64Array(n * cout * oh * ow);
  for (let b = 0; b < n; b++) {
    for (let ci = 0; ci < cin; ci++) {
      const g = Math.floor(ci / cig);
      for (let iy = 0; iy < h; iy++) {
        for (let ix = 0; ix < wd; ix++) {
          const v = x[((b * cin + ci) * h + iy) * wd + ix]!;
          for (let c = 0; c < cog; c++) {
            const co = g * cog + c;
            for (let ky = 0; ky < kh; ky++) {
              const oy = iy * sy - py + ky;
              if (oy < 0 || oy >= oh) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ox = ix * sx - px + kx;
                if (ox < 0 || ox >= ow) continue;
                acc[((b * cout + co) * oh + oy) * ow + ox] += v * w[((ci * cog + c) * kh + ky) * kw + kx]!;
              }
            }
          }
        }
      }
    }
  }
  const f = ACT_REF[opts.act ?? 'none']!;
  const out = new Float32Array(acc.length);
  const plane = oh * ow;
  for (let i = 0; i < acc.length; i++) {
    const co = Math.floor(i / plane) % cout;
    out[i] = f(acc[i]! + (bias ? bias[co]! : 0), opts.alpha ?? 0.01);
  }
  return { out, shape: [n, cout, oh, ow] };
}
