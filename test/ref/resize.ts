// CPU reference for PIL's 8-bit Image.resize, written from its definition as dense matrices: output
// index i samples the input at c = (i + 0.5) * in / out; input j gets weight k((j - c + 0.5) / fs),
// fs = max(in / out, 1) (kernel stretched when shrinking), normalised over j; weights are rounded to
// 22-bit fixed point; the horizontal pass runs first and is rounded (half up) and clipped to 8 bits.

const KERNELS = {
  box: (x: number) => (x > -0.5 && x <= 0.5 ? 1 : 0),
  bilinear: (x: number) => Math.max(0, 1 - Math.abs(x)),
  bicubic: (x: number) => {
    const a = -0.5;
    const t = Math.abs(x);
    return t < 1 ? (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1 : t < 2 ? a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a : 0;
  },
};

/** [out][in] fixed-point weights (integers, 2^22 = 1). */
export function resizeMatrixRef(inSize: number, outSize: number, filter: keyof typeof KERNELS): number[][] {
  const k = KERNELS[filter];
  const fs = Math.max(inSize / outSize, 1);
  const rows: number[][] = [];
  for (let i = 0; i < outSize; i++) {
    const c = ((i + 0.5) * inSize) / outSize;
    const w = Array.from({ length: inSize }, (_, j) => k((j - c + 0.5) * (1 / fs)));
    const sum = w.reduce((s, v) => s + v, 0);
    rows.push(w.map((v) => Math.sign(v) * Math.floor(Math.abs(v / sum) * 2 ** 22 + 0.5)));
  }
  return rows;
}

/** Interleaved 8-bit pixels resized to ow x oh (an unchanged axis is skipped, as PIL does). */
export function resizeRef(data: ArrayLike<number>, w: number, h: number, ch: number, ow: number, oh: number, filter: keyof typeof KERNELS): Uint8Array {
  const round8 = (acc: number) => Math.min(255, Math.max(0, Math.floor(acc / 2 ** 22 + 0.5)));
  let cur = Array.from(data);
  if (ow !== w) {
    const m = resizeMatrixRef(w, ow, filter);
    const next: number[] = [];
    for (let y = 0; y < h; y++) for (let x = 0; x < ow; x++) for (let c = 0; c < ch; c++) next.push(round8(m[x]!.reduce((s, v, j) => s + v * cur[(y * w + j) * ch + c]!, 0)));
    cur = next;
  }
  if (oh !== h) {
    const m = resizeMatrixRef(h, oh, filter);
    const next: number[] = [];
    for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) for (let c = 0; c < ch; c++) next.push(round8(m[y]!.reduce((s, v, j) => s + v * cur[(j * ow + x) * ch + c]!, 0)));
    cur = next;
  }
  return Uint8Array.from(cur);
}
