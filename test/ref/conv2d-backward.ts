// CPU references (f64) for the conv2d / conv_transpose2d VJPs: gradients accumulated over the forward's
// own loops (the definitions), independent of the kernels' transposed-conv / implicit-GEMM forms.

export interface ConvBackwardRefOptions {
  stride?: [number, number];
  padding?: [number, number];
  padEnd?: [number, number];
  groups?: number;
  outputPadding?: [number, number];
}

export interface ConvGradsRef {
  gradX: Float64Array;
  gradW: Float64Array;
  gradB: Float64Array;
}

/** conv2d: x [N, Cin, H, W], w [Cout, Cin/groups, KH, KW], g [N, Cout, OH, OW] (OH with padEnd). */
export function conv2dBackwardRef(
  x: ArrayLike<number>,
  xShape: number[],
  w: ArrayLike<number>,
  wShape: number[],
  g: ArrayLike<number>,
  opts: ConvBackwardRefOptions = {},
): ConvGradsRef {
  const [n, cin, h, wd] = xShape as [number, number, number, number];
  const [cout, cig, kh, kw] = wShape as [number, number, number, number];
  const [sy, sx] = opts.stride ?? [1, 1];
  const [py, px] = opts.padding ?? [0, 0];
  const [ey, ex] = opts.padEnd ?? [0, 0];
  const cog = cout / (opts.groups ?? 1);
  const oh = Math.floor((h + 2 * py + ey - kh) / sy) + 1;
  const ow = Math.floor((wd + 2 * px + ex - kw) / sx) + 1;
  const gradX = new Float64Array(x.length);
  const gradW = new Float64Array(w.length);
  const gradB = new Float64Array(cout);
  for (let b = 0; b < n; b++) {
    for (let co = 0; co < cout; co++) {
      const grp = Math.floor(co / cog);
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++) {
          const gv = g[((b * cout + co) * oh + oy) * ow + ox]!;
          gradB[co] += gv;
          for (let c = 0; c < cig; c++) {
            const ci = grp * cig + c;
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * sy - py + ky;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * sx - px + kx;
                if (ix < 0 || ix >= wd) continue;
                const xi = ((b * cin + ci) * h + iy) * wd + ix;
                const wi = ((co * cig + c) * kh + ky) * kw + kx;
                gradX[xi] += gv * w[wi]!;
                gradW[wi] += gv * x[xi]!;
              }
            }
          }
        }
      }
    }
  }
  return { gradX, gradW, gradB };
}

/** conv_transpose2d: x [N, Cin, H, W], w [Cin, Cout/groups, KH, KW], g [N, Cout, OH, OW]. */
export function convTranspose2dBackwardRef(
  x: ArrayLike<number>,
  xShape: number[],
  w: ArrayLike<number>,
  wShape: number[],
  g: ArrayLike<number>,
  opts: ConvBackwardRefOptions = {},
): ConvGradsRef {
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
  const gradX = new Float64Array(x.length);
  const gradW = new Float64Array(w.length);
  const gradB = new Float64Array(cout);
  for (let i = 0; i < g.length; i++) gradB[Math.floor(i / (oh * ow)) % cout] += g[i]!;
  for (let b = 0; b < n; b++) {
    for (let ci = 0; ci < cin; ci++) {
      const grp = Math.floor(ci / cig);
      for (let iy = 0; iy < h; iy++) {
        for (let ix = 0; ix < wd; ix++) {
          const xi = ((b * cin + ci) * h + iy) * wd + ix;
          for (let c = 0; c < cog; c++) {
            const co = grp * cog + c;
            for (let ky = 0; ky < kh; ky++) {
              const oy = iy * sy - py + ky;
              if (oy < 0 || oy >= oh) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ox = ix * sx - px + kx;
                if (ox < 0 || ox >= ow) continue;
                const gv = g[((b * cout + co) * oh + oy) * ow + ox]!;
                const wi = ((ci * cog + c) * kh + ky) * kw + kx;
                gradX[xi] += gv * w[wi]!;
                gradW[wi] += gv * x[xi]!;
              }
            }
          }
        }
      }
    }
  }
  return { gradX, gradW, gradB };
}
