// Verifies a Mainspring webhook the way a receiver should: Standard Webhooks signature over
// "<webhook-id>.<webhook-timestamp>.<raw body>", a timestamp no older than 5 minutes, constant-time compare.
// Run as a receiver: WEBHOOK_SECRET=whsec_... node examples/verify-webhook.mjs  (listens on :9000)
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';

export function verifyWebhook(secret, headers, rawBody, toleranceSeconds = 300) {
  const id = headers['webhook-id'];
  const timestamp = headers['webhook-timestamp'];
  const signatures = headers['webhook-signature'];
  if (!id || !timestamp || !signatures) return false;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > toleranceSeconds) return false;
  // whsec_ secrets are base64 keys; a secret you chose yourself is used as its UTF-8 bytes.
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret, 'utf8');
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${rawBody}`).digest();
  return signatures.split(' ').some((entry) => {
    const [version, signature] = entry.split(',');
    if (version !== 'v1' || !signature) return false;
    const given = Buffer.from(signature, 'base64');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const secret = process.env.WEBHOOK_SECRET ?? '';
  createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const ok = verifyWebhook(secret, req.headers, body);
      console.log(ok ? 'verified' : 'REJECTED', req.headers['webhook-id'], body);
      res.writeHead(ok ? 204 : 401).end();
    });
  }).listen(Number(process.env.PORT ?? 9000));
}
