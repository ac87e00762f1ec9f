// Weight strides of the 3x3 kernels (px8, igemm, Winograd's weight transform), which read a weight as
// [Cout, Cin, 3, 3]. A stride-1, padding-1 transposed convolution (the input gradient of a convolution)
// is the same convolution with flipped taps over a [Cin, Cout, 3, 3] weight, so the channel strides swap.

export function tapStrides(cin: number, cout: number, transposed: boolean): { wco: number; wci: number; flip: number } {
  return transposed ? { wco: 9, wci: cout * 9, flip: 1 } : { wco: cin * 9, wci: 9, flip: 0 };
}
