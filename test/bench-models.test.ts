// The models benchmark's flag (bench/models.ts): --latent N, a multiple of 8, default 32.
import { describe, expect, it } from 'vitest';
import { parseModelArgs } from '../bench/models.js';

describe('parseModelArgs', () => {
  it('defaults to a 32x32 latent and reads --latent among the other flags', () => {
    expect(parseModelArgs(['models'])).toEqual({ latent: 32 });
    expect(parseModelArgs(['models', '--filter', 'unet', '--latent', '64'])).toEqual({ latent: 64 });
  });
  it('refuses what the UNet cannot halve three times, naming the flag', () => {
    for (const bad of [['--latent'], ['--latent', '60'], ['--latent', '0'], ['--latent', 'x']]) {
      expect(() => parseModelArgs(bad), bad.join(' ')).toThrow(/--latent must be a multiple of 8/);
    }
  });
});
