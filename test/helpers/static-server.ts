// A static file server on 127.0.0.1 for tests that load folders over HTTP (HEAD answered too).
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';

export async function serveDir(root: string): Promise<{ base: string; close: () => void }> {
  const server = createServer((req, res) => {
    let body: Buffer;
    try {
      body = readFileSync(join(root, decodeURIComponent((req.url ?? '').split('?')[0]!.replace(/\.\./g, ''))));
    } catch {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': body.byteLength }).end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}
