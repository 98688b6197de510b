/* A librdkafka producer at full speed, to check that weir-bench is never the bottleneck it claims
 * to measure: same broker, same message size, same batch shape.
 * Usage: rdkafka_produce BOOTSTRAP TOPIC MSG_SIZE SECONDS BATCH_MSGS
 * Prints: "<messages> <seconds> <msgs_per_sec>". Built by perf/run.sh against Debian's librdkafka-dev. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long delivered = 0;
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (!m->err) delivered++;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s BOOTSTRAP TOPIC MSG_SIZE SECONDS BATCH_MSGS\n", argv[0]);
        return 2;
    }
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char batch[32];
    snprintf(batch, sizeof batch, "%s", argv[5]);
    const char *settings[][2] = {{"bootstrap.servers", argv[1]}, {"acks", "1"}, {"linger.ms", "5"},
                                 {"batch.num.messages", batch}, {"batch.size", "16000000"},
                                 {"queue.buffering.max.messages", "2000000"}, {"queue.buffering.max.kbytes", "2000000"},
                                 {"compression.codec", "none"}, {"enable.idempotence", "false"}};
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], err, sizeof err) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    size_t size = (size_t)atol(argv[3]);
    char *payload = malloc(size);
    memset(payload, 'x', size);
    double seconds = atof(argv[4]);
    double start = now();
    long sent = 0;
    while (now() - start < seconds) {
        for (int i = 0; i < 1000; i++) {
            if (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(argv[2]), RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_VALUE(payload, size),
                                  RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                rd_kafka_poll(rk, 1);
                break;
            }
            sent++;
        }
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 30000);
    double elapsed = now() - start;
    printf("%ld %.3f %.0f\n", delivered, elapsed, delivered / elapsed);
    rd_kafka_destroy(rk);
    free(payload);
    return delivered == sent ? 0 : 1;
}
