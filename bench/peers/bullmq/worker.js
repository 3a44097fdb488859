// BullMQ peer, step 2: a BullMQ worker doing the router's delivery job. Each
// job POSTs its body ({mensaje, wa_id}) as JSON to the sink and fails on a
// non-2xx answer. Exits once N jobs have finished; bench/delivery.py takes
// the rate at the sink, as for the others.
//
// The POST goes through node:http with a keep-alive agent, not fetch: Node
// 20's fetch made about half as many POSTs a second here, and it is BullMQ,
// not the HTTP client, that this peer is for.
//
// --concurrency C: jobs this one worker runs at once. BullMQ keeps no order
// per wa_id above 1 (per-key order needs groups, a BullMQ Pro feature); at 1
// it runs jobs one at a time in the order they were added.
//
//   node worker.js --redis redis://127.0.0.1:6379/15 \
//       --sink http://127.0.0.1:8103/bot -n 5000 --concurrency 16
import http from "node:http";
import { parseArgs } from "node:util";

import { Worker } from "bullmq";
import IORedis from "ioredis";

const QUEUE = "deliver"; // as in preload.js

const { values: args } = parseArgs({
  options: {
    redis: { type: "string", default: "redis://127.0.0.1:6379/15" },
    sink: { type: "string", default: "http://127.0.0.1:8103/bot" },
    n: { type: "string", short: "n", default: "5000" },
    concurrency: { type: "string", default: "1" },
  },
});
const n = Number(args.n);
const concurrency = Number(args.concurrency);

const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const headers = { "content-type": "application/json" };

function deliver(job) {
  return new Promise((resolve, reject) => {
    const request = http.request(args.sink, { method: "POST", agent, headers }, (response) => {
      response.resume(); // read the answer to its end, so the socket is reused
      response.on("end", () => {
        if (response.statusCode >= 200 && response.statusCode < 300) resolve();
        else reject(new Error(`sink answered ${response.statusCode}`));
      });
      response.on("error", reject);
    });
    request.on("error", reject);
    request.end(JSON.stringify(job.data));
  });
}

// A Worker's connection must retry forever (BullMQ insists on null).
const connection = new IORedis(args.redis, { maxRetriesPerRequest: null });
const began = performance.now();
let completed = 0;
let failed = 0;
const worker = new Worker(QUEUE, deliver, { connection, concurrency });

const finished = new Promise((resolve) => {
  const count = () => completed + failed >= n && resolve();
  worker.on("completed", () => {
    completed++;
    count();
  });
  worker.on("failed", (_job, err) => {
    failed++;
    console.error(`bullmq: job failed: ${err.message}`);
    count();
  });
});
worker.on("error", (err) => console.error(`bullmq: worker error: ${err.message}`));

await finished;
const took = (performance.now() - began) / 1000;
await worker.close();
await connection.quit();
agent.destroy();
process.exitCode = failed ? 1 : 0;
console.log(
  `bullmq concurrency=${concurrency}: ${n} messages in ${took.toFixed(2)} s = ` +
    `${(n / took).toFixed(0)} msg/s (completed=${completed} failed=${failed})`,
);
