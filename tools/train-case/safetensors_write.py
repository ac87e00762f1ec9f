"""A minimal safetensors writer (F32 only; numpy), so the case tool needs no safetensors package."""
import json, struct
import numpy as np


def write(path, tensors):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        shape = list(np.shape(tensors[name]))  # ascontiguousarray makes a scalar 1-d: keep its [] shape
        b = np.ascontiguousarray(tensors[name], dtype='<f4').tobytes()
        header[name] = {'dtype': 'F32', 'shape': shape, 'data_offsets': [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
