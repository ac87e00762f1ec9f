// Image I/O, browser-safe: PNG decode/encode, image <-> [-1, 1] NCHW data, crops and resizing.
// Node file helpers (readImageFile, writePng) live in image-node.ts so bundles never see node: modules.

export * from './types.js';
export * from './png.js';
export * from './image.js';
export * from './resize.js';
export * from './decode.js';
export * from './jpeg.js';
