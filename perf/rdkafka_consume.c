/* A librdkafka consumer reading one partition from its start to its end as fast as it can: the
 * consume half of a comparison between brokers that speak Kafka, made with one and the same client.
 * Usage: rdkafka_consume BOOTSTRAP TOPIC
 * Prints: "<messages> <seconds> <msgs_per_sec> <bytes>", timed from the first record to the end of the
 * partition. Built by perf/side_by_side.sh against Debian's librdkafka-dev. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s BOOTSTRAP TOPIC\n", argv[0]);
        return 2;
    }
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* Large fetches and a deep prefetch queue: the client should not be what limits the read. Above
     * queued.min.messages (default 100000, a tenth of a second of 100 B records) librdkafka 2.0
     * stops fetching and looks again up to a second later: the consumer then idles, and its rate
     * measured the timing of that backoff (0.27-0.97M msgs/s from one broker), not the broker. */
    const char *settings[][2] = {{"bootstrap.servers", argv[1]}, {"group.id", "side-by-side"},
                                 {"enable.auto.commit", "false"}, {"enable.partition.eof", "true"},
                                 {"fetch.max.bytes", "52428800"}, {"max.partition.fetch.bytes", "8388608"},
                                 {"queued.max.messages.kbytes", "1048576"}, {"fetch.wait.max.ms", "100"},
                                 {"queued.min.messages", "10000000"}};
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], err, sizeof err) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, argv[2], 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    if (rd_kafka_assign(rk, parts)) {
        fprintf(stderr, "assign failed\n");
        return 1;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    long messages = 0, bytes = 0;
    double start = 0, deadline = now() + 600;
    int status = 0;
    for (;;) {
        if (now() > deadline) {
            fprintf(stderr, "did not reach the end of the partition in 600 s\n");
            status = 1;
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
        if (!m) continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            if (messages > 0) break;
            continue;
        }
        if (m->err) {
            fprintf(stderr, "%s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            status = 1;
            break;
        }
        if (messages++ == 0) start = now();
        bytes += (long)m->len;
        rd_kafka_message_destroy(m);
    }
    double elapsed = now() - start;
    printf("%ld %.3f %.0f %ld\n", messages, elapsed, messages / elapsed, bytes);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return status;
}
