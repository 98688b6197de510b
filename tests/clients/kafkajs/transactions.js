// kafkajs 2.x transactions: a committed and an aborted transaction, offsets sent with a committed
// one, and a read_committed consumer (kafkajs's default) that must see the committed records only.
// Usage: node transactions.js HOST:PORT TOPIC. Prints "ok <records seen>"; exits non-zero on failure.
const { kafkaFor, fail } = require('./common');

const [bootstrap, topic] = process.argv.slice(2);
const kafka = kafkaFor(bootstrap, 'weir-txn-test');

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });

  const producer = kafka.producer({ transactionalId: `tid-${topic}`, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const groupId = `g-${topic}`;
  let txn = await producer.transaction();
  await txn.send({ topic, messages: [{ value: 'c0' }, { value: 'c1' }] });
  await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic, partitions: [{ partition: 0, offset: '2' }] }] });
  await txn.commit();
  txn = await producer.transaction();
  await txn.send({ topic, messages: [{ value: 'a0' }, { value: 'a1' }, { value: 'a2' }] });
  await txn.abort();
  txn = await producer.transaction();
  await txn.send({ topic, messages: [{ value: 'c2' }] });
  await txn.commit();
  await producer.disconnect();

  const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
  if (offsets[0].partitions[0].offset !== '2') fail(`offsets sent with the transaction: ${JSON.stringify(offsets)}`);

  const seen = [];
  const consumer = kafka.consumer({ groupId: `reader-${topic}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => { seen.push(message.value.toString()); } });
  const deadline = Date.now() + 40000;
  // In offset order: an aborted record, if one were delivered, comes before c2.
  while (!seen.includes('c2') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  await consumer.disconnect();
  await admin.disconnect();
  if (seen.join(',') !== 'c0,c1,c2') fail(`read_committed saw ${seen.join(',')}`);
  console.log(`ok ${seen.length}`);
}

main().catch((e) => fail(e.stack || String(e)));
