// The one pixel cap every image decoder applies right after reading the header, before it allocates
// anything for the pixels: a few bytes can declare a 65535 x 65535 image.

/** Default largest image decoded: 2^26 pixels (8192 x 8192), 256 MiB as RGBA 8-bit. */
export const DEFAULT_MAX_PIXELS = 2 ** 26;

/** Why a width x height image is over `maxPixels` (in words), or null when it fits. */
export function pixelCapProblem(width: number, height: number, maxPixels: number = DEFAULT_MAX_PIXELS): string | null {
  const n = width * height;
  return n > maxPixels ? `${width}x${height} = ${n} pixels is more than maxPixels (${maxPixels})` : null;
}
