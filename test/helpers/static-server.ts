// A static file server on 127.0.0.1 for tests that load folders over HTTP (HEAD answered too). Pages
// and scripts get their MIME type: Chromium runs module scripts only when served as JavaScript.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import type { AddressInfo } from 'node:net';

const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json' };

export async function serveDir(root: string): Promise<{ base: string; close: () => void }> {
  const server = createServer((req, res) => {
    const path = decodeURIComponent((req.url ?? '').split('?')[0]!.replace(/\.\./g, ''));
    let body: Buffer;
    try {
      body = readFileSync(join(root, path));
    } catch {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': body.byteLength, 'content-type': TYPES[extname(path)] ?? 'application/octet-stream' }).end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}
