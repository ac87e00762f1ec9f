// CPU reference for the row gather: out[r] = table[ids[r]], zeros for ids outside [0, V).

export function gatherRowsRef(table: ArrayLike<number>, v: number, d: number, ids: ArrayLike<number>): Float32Array {
  const out = new Float32Array(ids.length * d);
  for (let r = 0; r < ids.length; r++) {
    const id = ids[r]!;
    if (!(id >= 0 && id < v)) continue;
    for (let c = 0; c < d; c++) out[r * d + c] = table[Math.trunc(id) * d + c]!;
  }
  return out;
}
