// The models benchmark's flags (bench/models.ts): --latent N, a multiple of 8, default 32; --profile.
import { describe, expect, it } from 'vitest';
import { parseModelArgs } from '../bench/models.js';
import { opKindBreakdown } from '../bench/harness.js';

describe('parseModelArgs', () => {
  it('defaults to a 32x32 latent and reads --latent among the other flags', () => {
    expect(parseModelArgs(['models'])).toEqual({ latent: 32, profile: false });
    expect(parseModelArgs(['models', '--filter', 'unet', '--latent', '64'])).toEqual({ latent: 64, profile: false });
    expect(parseModelArgs(['models', '--profile', '--latent', '16'])).toEqual({ latent: 16, profile: true });
  });
  it('refuses what the UNet cannot halve three times, naming the flag', () => {
    for (const bad of [['--latent'], ['--latent', '60'], ['--latent', '0'], ['--latent', 'x']]) {
      expect(() => parseModelArgs(bad), bad.join(' ')).toThrow(/--latent must be a multiple of 8/);
    }
  });
});

describe('opKindBreakdown', () => {
  it('sums a profiled program by the last segment of the op path, keeps helper dispatches beside their op, largest first', () => {
    const ms = (x: number) => x * 1e6;
    const kinds = opKindBreakdown({
      'unet/down_blocks.0/resnets.0/conv2d': { dispatches: 2, gpuNs: ms(30) },
      'unet/up_blocks.1/resnets.2/conv2d': { dispatches: 3, gpuNs: ms(10) },
      'unet/down_blocks.0/attentions.0/transformer_blocks.0/ff/linear': { dispatches: 2, gpuNs: ms(25) },
      'unet/down_blocks.0/attentions.0/transformer_blocks.0/ff/linear/transpose_b': { dispatches: 2, gpuNs: ms(15) },
      'unet/mid_block/resnets.0/group_norm': { dispatches: 3, gpuNs: ms(20) },
      'vjp/up_blocks.0/conv2d_backward/x': { dispatches: 1, gpuNs: ms(5) },
      silu: { dispatches: 1, gpuNs: 0 },
    });
    expect(kinds.map((k) => [k.kind, k.dispatches, k.gpuMs])).toEqual([
      ['conv2d', 5, 40],
      ['linear', 2, 25],
      ['group_norm', 3, 20],
      ['linear/transpose_b', 2, 15],
      ['conv2d_backward/x', 1, 5],
      ['silu', 1, 0],
    ]);
    expect(kinds.map((k) => Math.round(k.percent * 100) / 100)).toEqual([38.1, 23.81, 19.05, 14.29, 4.76, 0]);
    expect(opKindBreakdown({})).toEqual([]);
  });
});
