// The restricted unpickler: every protocol's data opcodes, and refusal of anything that would run code.
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import {
  unpickle,
  PickleError,
  PickleDict,
  PickleSet,
  DATA_GLOBALS,
  isTuple,
  isList,
  type AllowedGlobal,
  type UnpickleOptions,
} from '../src/formats/pickle.js';
import { ZipArchive, bytesSource } from '../src/formats/zip.js';
import { PickleWriter } from './helpers/torch-fixtures.js';

const opts = (extra: Partial<UnpickleOptions> = {}): UnpickleOptions => ({ source: 'test.pkl', globals: DATA_GLOBALS, ...extra });
const load = (b: Uint8Array, extra?: Partial<UnpickleOptions>) => unpickle(b, opts(extra));
const b64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));
const bytes = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));

/** Expects a PickleError whose message contains every fragment. */
function refuses(data: Uint8Array, ...fragments: (string | RegExp)[]) {
  let err: unknown;
  try {
    load(data);
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a PickleError').toBeInstanceOf(PickleError);
  const msg = (err as Error).message;
  expect(msg).toContain('test.pkl');
  for (const f of fragments) expect(msg).toMatch(f);
  return err as PickleError;
}

// Python 3.11:
//   base = {'a': [1, -2, 300, 70000, -70000, 3.5, -0.0, 'x', 'é€😀', b'\x00\xff', None, True, False,
//                 (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), 2**70, -2**63, 2**31],
//           'od': OrderedDict([('k1', 1), ('k2', [])]), 3: 'int key'}
//   shared = [1]; base['shared'] = (shared, shared)
//   protocol >= 4 also: base['set'] = {1, 2}; base['fs'] = frozenset(['a'])
//   base64(pickle.dumps(base, protocol=p))
const PROTOCOLS: Record<number, string> = {
  0: 'KGRwMApWYQpwMQoobHAyCkkxCmFJLTIKYUkzMDAKYUk3MDAwMAphSS03MDAwMAphRjMuNQphRi0wLjAKYVZ4CnAzCmFW6Vx1MjBhY1xVMDAwMWY2MDAKcDQKYWNfY29kZWNzCmVuY29kZQpwNQooVlx1MDAwMP8KcDYKVmxhdGluMQpwNwp0cDgKUnA5CmFOYUkwMQphSTAwCmEodGEoSTEKdHAxMAphKEkxCkkyCnRwMTEKYShJMQpJMgpJMwp0cDEyCmEoSTEKSTIKSTMKSTQKdHAxMwphTDExODA1OTE2MjA3MTc0MTEzMDM0MjRMCmFMLTkyMjMzNzIwMzY4NTQ3NzU4MDhMCmFMMjE0NzQ4MzY0OEwKYXNWb2QKcDE0CmNjb2xsZWN0aW9ucwpPcmRlcmVkRGljdApwMTUKKHRScDE2ClZrMQpwMTcKSTEKc1ZrMgpwMTgKKGxwMTkKc3NJMwpWaW50IGtleQpwMjAKc1ZzaGFyZWQKcDIxCigobHAyMgpJMQphZzIyCnRwMjMKcy4=',
  1: 'fXEAKFgBAAAAYXEBXXECKEsBSv7///9NLAFKcBEBAEqQ7v7/R0AMAAAAAAAAR4AAAAAAAAAAWAEAAAB4cQNYCQAAAMOp4oKs8J+YgHEEY19jb2RlY3MKZW5jb2RlCnEFKFgDAAAAAMO/cQZYBgAAAGxhdGluMXEHdHEIUnEJTkkwMQpJMDAKKShLAXRxCihLAUsCdHELKEsBSwJLA3RxDChLAUsCSwNLBHRxDUwxMTgwNTkxNjIwNzE3NDExMzAzNDI0TApMLTkyMjMzNzIwMzY4NTQ3NzU4MDhMCkwyMTQ3NDgzNjQ4TAplWAIAAABvZHEOY2NvbGxlY3Rpb25zCk9yZGVyZWREaWN0CnEPKVJxEChYAgAAAGsxcRFLAVgCAAAAazJxEl1xE3VLA1gHAAAAaW50IGtleXEUWAYAAABzaGFyZWRxFShdcRZLAWFoFnRxF3Uu',
  2: 'gAJ9cQAoWAEAAABhcQFdcQIoSwFK/v///00sAUpwEQEASpDu/v9HQAwAAAAAAABHgAAAAAAAAABYAQAAAHhxA1gJAAAAw6nigqzwn5iAcQRjX2NvZGVjcwplbmNvZGUKcQVYAwAAAADDv3EGWAYAAABsYXRpbjFxB4ZxCFJxCU6IiSlLAYVxCksBSwKGcQtLAUsCSwOHcQwoSwFLAksDSwR0cQ2KCQAAAAAAAAAAQIoIAAAAAAAAAICKBQAAAIAAZVgCAAAAb2RxDmNjb2xsZWN0aW9ucwpPcmRlcmVkRGljdApxDylScRAoWAIAAABrMXERSwFYAgAAAGsycRJdcRN1SwNYBwAAAGludCBrZXlxFFgGAAAAc2hhcmVkcRVdcRZLAWFoFoZxF3Uu',
  3: 'gAN9cQAoWAEAAABhcQFdcQIoSwFK/v///00sAUpwEQEASpDu/v9HQAwAAAAAAABHgAAAAAAAAABYAQAAAHhxA1gJAAAAw6nigqzwn5iAcQRDAgD/cQVOiIkpSwGFcQZLAUsChnEHSwFLAksDh3EIKEsBSwJLA0sEdHEJigkAAAAAAAAAAECKCAAAAAAAAACAigUAAACAAGVYAgAAAG9kcQpjY29sbGVjdGlvbnMKT3JkZXJlZERpY3QKcQspUnEMKFgCAAAAazFxDUsBWAIAAABrMnEOXXEPdUsDWAcAAABpbnQga2V5cRBYBgAAAHNoYXJlZHERXXESSwFhaBKGcRN1Lg==',
  4: 'gASV8QAAAAAAAAB9lCiMAWGUXZQoSwFK/v///00sAUpwEQEASpDu/v9HQAwAAAAAAABHgAAAAAAAAACMAXiUjAnDqeKCrPCfmICUQwIA/5ROiIkpSwGFlEsBSwKGlEsBSwJLA4eUKEsBSwJLA0sEdJSKCQAAAAAAAAAAQIoIAAAAAAAAAICKBQAAAIAAZYwCb2SUjAtjb2xsZWN0aW9uc5SMC09yZGVyZWREaWN0lJOUKVKUKIwCazGUSwGMAmsylF2UdUsDjAdpbnQga2V5lIwGc2hhcmVklF2USwFhaBSGlIwDc2V0lI+UKEsBSwKQjAJmc5QoaAGRlHUu',
  5: 'gAWV8QAAAAAAAAB9lCiMAWGUXZQoSwFK/v///00sAUpwEQEASpDu/v9HQAwAAAAAAABHgAAAAAAAAACMAXiUjAnDqeKCrPCfmICUQwIA/5ROiIkpSwGFlEsBSwKGlEsBSwJLA4eUKEsBSwJLA0sEdJSKCQAAAAAAAAAAQIoIAAAAAAAAAICKBQAAAIAAZYwCb2SUjAtjb2xsZWN0aW9uc5SMC09yZGVyZWREaWN0lJOUKVKUKIwCazGUSwGMAmsylF2UdUsDjAdpbnQga2V5lIwGc2hhcmVklF2USwFhaBSGlIwDc2V0lI+UKEsBSwKQjAJmc5QoaAGRlHUu',
};

describe('unpickle: data of every protocol', () => {
  for (const [p, text] of Object.entries(PROTOCOLS)) {
    it(`protocol ${p}`, () => {
      const v = load(b64(text));
      expect(v).toBeInstanceOf(PickleDict);
      const d = v as PickleDict;
      expect(d.pyClass).toBe('dict');
      const a = d.get('a') as unknown[];
      expect(isList(a)).toBe(true);
      expect(a.slice(0, 9)).toEqual([1, -2, 300, 70000, -70000, 3.5, -0, 'x', 'é€😀']);
      expect(Object.is(a[6], -0)).toBe(true);
      expect(a[9]).toEqual(new Uint8Array([0, 255]));
      expect(a.slice(10, 13)).toEqual([null, true, false]);
      for (let i = 0; i < 5; i++) {
        expect(isTuple(a[13 + i])).toBe(true);
        expect(a[13 + i]).toEqual([1, 2, 3, 4].slice(0, i));
      }
      expect(a.slice(18)).toEqual([2n ** 70n, -(2n ** 63n), 2 ** 31]);
      const od = d.get('od') as PickleDict;
      expect(od.pyClass).toBe('collections.OrderedDict');
      expect([...od]).toEqual([['k1', 1], ['k2', []]]);
      expect(d.get(3)).toBe('int key');
      const shared = d.get('shared') as unknown[];
      expect(isTuple(shared)).toBe(true);
      expect(shared[0]).toBe(shared[1]); // memo keeps identity
      if (Number(p) >= 4) {
        expect(d.get('set')).toBeInstanceOf(PickleSet);
        expect([...(d.get('set') as PickleSet)]).toEqual([1, 2]);
        expect((d.get('fs') as PickleSet).frozen).toBe(true);
        expect([...(d.get('fs') as PickleSet)]).toEqual(['a']);
      }
    });
  }

  it('protocol 0/1 strings, protocol 5 bytearray, LONG4 and text floats', () => {
    // S'...' with escapes, T/U (Python 2 str), V raw-unicode-escape, F text float, L text long.
    expect(load(bytes("(S'a\\x41\\n\\'\\\\'\nT\x02\x00\x00\x00hiU\x02yoVx\\u00e9y\nF-1.5e-3\nFinf\nL-12345678901234567890L\nI01\nl."))).toEqual([
      "aA\n'\\",
      'hi',
      'yo',
      'xéy',
      -1.5e-3,
      Infinity,
      -12345678901234567890n,
      true,
    ]);
    // pickle.dumps(bytearray(b'ab'), protocol=5); then the same with READONLY_BUFFER
    expect(load(bytes('\x80\x05\x95\r\x00\x00\x00\x00\x00\x00\x00\x96\x02\x00\x00\x00\x00\x00\x00\x00ab\x94.'))).toEqual(new Uint8Array([0x61, 0x62]));
    expect(load(bytes('\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00ab\x98.'))).toEqual(new Uint8Array([0x61, 0x62]));
    expect(load(bytes('\x80\x02\x8b\x02\x00\x00\x00\xff\xff.'))).toBe(-1);
    expect(load(bytes('\x80\x02\x8a\x00.'))).toBe(0);
    expect(load(bytes('\x80\x02\x8a\x02\x00\x80.'))).toBe(-32768);
    // DICT, LIST, DUP, PUT, POP, MARK/POP_MARK, MEMOIZE, GET, LONG_BINGET, TUPLE3, TUPLE2
    const v = load(bytes('(K\x01K\x02d(K\x03K\x04l2p0\n0(N1\x94g0\nj\x01\x00\x00\x00\x87\x86.')) as unknown[];
    expect(isTuple(v) && v.length === 2).toBe(true);
    expect(v[0]).toBeInstanceOf(PickleDict);
    expect([...(v[0] as PickleDict)]).toEqual([[1, 2]]);
    const t = v[1] as unknown[];
    expect(t).toEqual([[3, 4], [3, 4], [3, 4]]);
    expect(t[0]).toBe(t[1]);
    expect(t[1]).toBe(t[2]);
  });

  it('BUILD on an OrderedDict keeps the state (torch puts _metadata there)', () => {
    const w = new PickleWriter().proto(2).global('collections', 'OrderedDict').emptyTuple().reduce();
    w.mark().str('w').int(1).setitems();
    w.emptyDict().str('_metadata').emptyDict().raw(0x73).build().stop();
    const d = load(w.bytes()) as PickleDict;
    expect([...d]).toEqual([['w', 1]]);
    expect(d.attributes?.get('_metadata')).toEqual(new PickleDict());
  });

  it('calls only the TypeScript function bound to an allowed global', () => {
    const calls: unknown[] = [];
    const globals = new Map<string, AllowedGlobal>([['my.mod.fn', { call: (a) => (calls.push(a), 'ok') }]]);
    const w = new PickleWriter().proto(4).stackGlobal('my.mod', 'fn').int(7).raw(0x85).reduce().stop();
    expect(load(w.bytes(), { globals })).toBe('ok');
    expect(calls).toEqual([[7]]);
  });
});

describe('unpickle: shared objects stay shared', () => {
  it('a 2^60-path DAG of memoised lists loads in linear time as one object per list', () => {
    // L0 = []; L(k+1) = [Lk, Lk] through BINPUT / BINGET, 60 levels: a few hundred bytes.
    const w = new PickleWriter().proto(2).emptyList().binput(0);
    for (let k = 0; k < 60; k++) w.raw(0x30).emptyList().mark().binget(k).binget(k).appends().binput(k + 1);
    const data = w.stop().bytes();
    expect(data.length).toBeLessThan(700);
    const t0 = performance.now();
    let v = load(data) as unknown[];
    expect(performance.now() - t0).toBeLessThan(200);
    for (let k = 0; k < 60; k++) {
      expect(v).toHaveLength(2);
      expect(v[0]).toBe(v[1]); // the same object, not a copy
      v = v[0] as unknown[];
    }
    expect(v).toEqual([]);
  });
});

describe('unpickle: refusals', () => {
  it('GLOBAL os.system + REDUCE is refused at the GLOBAL, before anything could be called', () => {
    const w = new PickleWriter().proto(2).global('os', 'system').str('touch /tmp/pwned').raw(0x85).reduce().stop();
    const e = refuses(w.bytes(), /refused global os\.system/, /not on the allow list/);
    expect(e.offset).toBe(2);
  });

  it('builtins.eval through STACK_GLOBAL (protocol 4) is refused', () => {
    const w = new PickleWriter().proto(4).stackGlobal('builtins', 'eval').str('1+1').raw(0x85).reduce().stop();
    refuses(w.bytes(), /refused global builtins\.eval/);
  });

  it('posix.system, subprocess.Popen, nt.system, and INST / OBJ forms are refused', () => {
    refuses(new PickleWriter().proto(2).global('posix', 'system').stop().bytes(), /posix\.system/);
    refuses(new PickleWriter().proto(2).global('subprocess', 'Popen').stop().bytes(), /subprocess\.Popen/);
    refuses(bytes("(S'calc'\nint\nsystem\n."), /refused global nt\.system/);
    refuses(bytes("(cos\nsystem\nS'id'\no."), /refused global os\.system/);
  });

  it('non-allowed classes (a pickled nn.Module, builtins.set on old protocols) are refused', () => {
    const w = new PickleWriter().proto(2).global('torch.nn.modules.linear', 'Linear').emptyTuple().raw(0x81).emptyDict().build().stop();
    refuses(w.bytes(), /refused global torch\.nn\.modules\.linear\.Linear/);
    // pickle.dumps({1, 2}, protocol=2)
    refuses(b64('gAJjX19idWlsdGluX18Kc2V0CnEAXXEBKEsBSwJlhXECUnEDLg=='), /refused global __builtin__\.set/);
  });

  it('REDUCE of something that is not an allowed callable is refused', () => {
    refuses(new PickleWriter().proto(2).str('os.system').str('x').raw(0x85).reduce().stop().bytes(), /REDUCE target is a string/);
    refuses(new PickleWriter().proto(2).global('collections', 'OrderedDict').str('notatuple').reduce().stop().bytes(), /not a tuple/);
  });

  it('extension codes, out-of-band buffers and unknown persistent ids are refused', () => {
    refuses(bytes('\x80\x02\x82\x01.'), /EXT1/, /extension/);
    refuses(bytes('\x80\x05\x97.'), /NEXT_BUFFER/);
    refuses(bytes('\x80\x02K\x01Q.'), /persistent id/);
  });

  it('truncated data ends with a clear error at every cut, never another exception', () => {
    const full = b64(PROTOCOLS[2]!);
    for (let n = 0; n < full.length; n++) {
      expect(() => load(full.subarray(0, n)), `cut at ${n}`).toThrow(PickleError);
    }
    refuses(full.subarray(0, 40), /truncated/);
    refuses(bytes('\x80\x02X\xff\xff\x00\x00ab.'), /data ends inside BINUNICODE/, /truncated/);
    refuses(bytes('\x80\x04\x95\x00\x00\x00\x00\x01\x00\x00\x00N.'), /FRAME/);
    refuses(bytes('\x80\x02N'), /without STOP/);
  });

  it('unknown opcodes, protocols and malformed structure are errors', () => {
    refuses(bytes('\x80\x02\xff.'), /unknown opcode 0xff/);
    refuses(bytes('\x80\x02Z.'), /unknown opcode 0x5a \('Z'\)/);
    refuses(bytes('\x80\x06N.'), /protocol 6/);
    refuses(bytes('\x80\x02R.'), /stack underflow in REDUCE/);
    refuses(bytes('\x80\x02.'), /stack underflow in STOP/);
    refuses(bytes('\x80\x02K\x01t.'), /TUPLE without a MARK/);
    refuses(bytes('\x80\x02(K\x01\x86.'), /stack underflow in TUPLE2/);
    refuses(bytes('\x80\x02h\x05.'), /memo slot 5/);
    refuses(bytes('\x80\x02)K\x01a.'), /APPEND to a tuple/);
    refuses(bytes('\x80\x02]K\x01K\x02s.'), /SETITEM on a list/);
    refuses(bytes('\x80\x02}(K\x01u.'), /odd number/);
    refuses(bytes('\x80\x02})K\x01s.'), /tuple of 0 as a dict\/set key/);
    refuses(bytes('\x80\x02X\x02\x00\x00\x00\xff\xfe.'), /not valid UTF-8/);
    refuses(bytes('\x80\x02\x8b\xd0\x07\x00\x00' + '\x01'.repeat(2000) + '.'), /LONG4 integer of 2000 bytes exceeds/);
    refuses(bytes('Ixyz\n.'), /not an integer/);
  });

  it('random corruption of a real state-dict pickle ends in PickleError or a value, never a crash', async () => {
    const zip = await ZipArchive.open(bytesSource(new Uint8Array(readFileSync('/work/shared/golden/taef2/taef2_encoder.pth')), 'enc.pth'));
    const pkl = await zip.read('taef2_encoder/data.pkl');
    const globals = new Map<string, AllowedGlobal>([...DATA_GLOBALS, ['torch._utils._rebuild_tensor_v2', { call: () => ({}) }], ['torch.HalfStorage', {}]]);
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    let refused = 0;
    for (let trial = 0; trial < 300; trial++) {
      const b = pkl.slice();
      for (let k = 0; k < 3; k++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
      try {
        unpickle(b, { source: 'fuzz', globals, persistentLoad: () => ({}) });
      } catch (e) {
        expect(e).toBeInstanceOf(PickleError);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(0);
  });
});
