// Verifies webhooks with the `standardwebhooks` npm package, as a shop's Node backend
// would. Reads {"secret": "whsec_...", "cases": [{"name", "body" (base64), "headers"}]}
// on stdin and prints {"<name>": "ok" or the library's error} on stdout.
import { Webhook } from 'standardwebhooks';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const { secret, cases } = JSON.parse(input);
const wh = new Webhook(secret);
const results = {};
for (const { name, body, headers } of cases) {
  try {
    wh.verify(Buffer.from(body, 'base64'), headers);
    results[name] = 'ok';
  } catch (err) {
    results[name] = `${err.name}: ${err.message}`;
  }
}
process.stdout.write(JSON.stringify(results));
