// BullMQ peer, step 1: put N delivery jobs in BullMQ's queue with its own API
// (Queue.addBulk), the way a Node service's ingest would, then exit.
// bench/delivery.py runs this before worker.js and does not time it.
//
//   node preload.js --redis redis://127.0.0.1:6379/15 -n 5000 --keys 1000
import { parseArgs } from "node:util";

import { Queue } from "bullmq";
import IORedis from "ioredis";

const QUEUE = "deliver"; // as in worker.js

const { values: args } = parseArgs({
  options: {
    redis: { type: "string", default: "redis://127.0.0.1:6379/15" },
    n: { type: "string", short: "n", default: "5000" },
    keys: { type: "string", default: "1000" },
  },
});
const n = Number(args.n);
const keys = Number(args.keys);

// BullMQ's ES module build cannot load ioredis itself: hand it a connection.
const connection = new IORedis(args.redis, { maxRetriesPerRequest: null });
const queue = new Queue(QUEUE, {
  connection,
  // Like the router (and arq's keep_result=0): nothing kept once delivered;
  // one attempt, so a failed POST shows as a missing delivery at the sink.
  defaultJobOptions: { removeOnComplete: true, attempts: 1 },
});

const CHUNK = 1000;
for (let start = 0; start < n; start += CHUNK) {
  const jobs = [];
  for (let i = start; i < Math.min(n, start + CHUNK); i++) {
    jobs.push({ name: "deliver", data: { mensaje: `m${i}`, wa_id: String(i % keys) } });
  }
  await queue.addBulk(jobs);
}
console.log(`bullmq: ${await queue.count()} jobs waiting in queue "${QUEUE}"`);
await queue.close();
await connection.quit();
