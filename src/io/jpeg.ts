// JPEG codec written for this project: a baseline JFIF encoder (PIL-style IJG quality, 4:2:0 by
// default) and a baseline / extended-sequential decoder. See jpeg-encode.ts and jpeg-decode.ts for
// the numerics and the choices (float pipeline, libjpeg's triangular chroma upsampling).

export { encodeJpeg, SUBSAMPLING_FACTORS, type JpegEncodeOptions, type JpegSubsampling } from './jpeg-encode.js';
export { decodeJpeg, JpegError, type JpegDecodeOptions } from './jpeg-decode.js';
export {
  jpegQuantTables,
  scaleQuantTable,
  canonicalCodes,
  STD_LUMA_QUANT,
  STD_CHROMA_QUANT,
  STD_DC_LUMA,
  STD_DC_CHROMA,
  STD_AC_LUMA,
  STD_AC_CHROMA,
  ZIGZAG,
  DCT8,
  RGB_TO_YCC,
  YCC_TO_RGB,
  type HuffmanSpec,
} from './jpeg-tables.js';
