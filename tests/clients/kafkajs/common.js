// What the kafkajs scripts share: a client for the broker under test, and failing loudly.
const { Kafka, logLevel } = require('kafkajs');

function kafkaFor(bootstrap, clientId) {
  return new Kafka({ clientId, brokers: [bootstrap], logLevel: logLevel.ERROR });
}

function fail(msg) {
  console.error(msg);
  process.exit(1);
}

module.exports = { kafkaFor, fail };
