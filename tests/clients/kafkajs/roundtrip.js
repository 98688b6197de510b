// kafkajs 2.x: admin, a gzip producer with acks=all, and a two-member consumer group with commits.
// Usage: node roundtrip.js HOST:PORT TOPIC. Exits non-zero on any failure.
const { CompressionTypes } = require('kafkajs');
const { kafkaFor, fail } = require('./common');

const [bootstrap, topic] = process.argv.slice(2);
const kafka = kafkaFor(bootstrap, 'weir-test');
const TOTAL = 600;

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  const topics = await admin.listTopics();
  if (!topics.includes(topic)) fail(`topic ${topic} not listed`);

  const producer = kafka.producer();
  await producer.connect();
  for (let b = 0; b < TOTAL / 100; b++) {
    const messages = [];
    for (let i = 0; i < 100; i++) messages.push({ key: `k${(b * 100 + i) % 7}`, value: `${b * 100 + i}`, headers: { n: `${i}` } });
    await producer.send({ topic, acks: -1, compression: b % 2 ? CompressionTypes.GZIP : CompressionTypes.None, messages });
  }
  await producer.disconnect();

  const groupId = `g-${topic}`;
  const seen = new Set();
  const consumers = [];
  for (let c = 0; c < 2; c++) {
    const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        if (message.headers.n === undefined) fail('header lost');
        seen.add(message.value.toString());
      },
    });
    consumers.push(consumer);
  }
  const deadline = Date.now() + 40000;
  while (seen.size < TOTAL && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const c of consumers) await c.disconnect();
  if (seen.size !== TOTAL) fail(`consumed ${seen.size} of ${TOTAL}`);

  const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
  const committed = offsets[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
  if (committed !== TOTAL) fail(`committed ${committed} of ${TOTAL}`);
  const described = await admin.describeGroups([groupId]);
  if (described.groups[0].groupId !== groupId) fail('describeGroups');
  await admin.disconnect();
  console.log(`ok ${seen.size}`);
}

main().catch((e) => fail(e.stack || String(e)));
