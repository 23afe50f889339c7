import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.producer.Callback;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Sends the records of a record file (written by bench/replay.py from the replay's own plan) with
 * Kafka's Java producer: the reference of the replay benchmark.
 *
 * <p>Kafka's ProducerPerformance sends values only (no key, no header), so it cannot send what the
 * replay sends; this is the smallest producer that can. Each record gets the replay's key, value,
 * event-time timestamp and its three headers ({@code source}, {@code line} as ASCII digits and
 * {@code produced_at}, the wall-clock ms of the send), on the same two topics, partitioned by the
 * same default partitioner (murmur2 of the key).
 *
 * <p>Record file: per record {@code topic:u8 timestamp_ms:i64 line:i32 source_len:u8 source
 * key_len:i32 key value_len:i32 value}, big-endian; topic 0 is the first topic argument.
 *
 * <p>Usage: {@code RecordFileProducer FILE SAMPLES_TOPIC COMMON_FEATURES_TOPIC name=value...} (the
 * producer properties). Prints {@code {"records": n, "seconds": s}}: the clock runs from before the
 * producer is made and the file opened until {@code close()} returned, i.e. every record
 * acknowledged; JVM start-up is outside it.
 */
public final class RecordFileProducer {
    private RecordFileProducer() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            throw new IllegalArgumentException(
                "usage: RecordFileProducer FILE SAMPLES_TOPIC COMMON_FEATURES_TOPIC (name=value | @properties-file)...");
        }
        long start = System.nanoTime();
        String[] topics = {args[1], args[2]};
        Properties props = new Properties();
        for (int i = 3; i < args.length; i++) {
            if (args[i].startsWith("@")) {
                // A properties file: how the sign-in's password arrives, never on the command line.
                try (FileInputStream file = new FileInputStream(args[i].substring(1))) {
                    props.load(file);
                }
                continue;
            }
            String[] pair = args[i].split("=", 2);
            props.put(pair[0], pair[1]);
        }
        AtomicReference<Exception> failure = new AtomicReference<>();
        Callback onAck = (metadata, error) -> {
            if (error != null) {
                failure.compareAndSet(null, error);
            }
        };
        long records = 0;
        try (KafkaProducer<byte[], byte[]> producer =
                 new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer());
             DataInputStream in = new DataInputStream(
                 new BufferedInputStream(new FileInputStream(args[0]), 1 << 20))) {
            int topic;
            while ((topic = in.read()) >= 0) {
                long timestampMs = in.readLong();
                int line = in.readInt();
                byte[] source = read(in, in.readUnsignedByte());
                byte[] key = read(in, in.readInt());
                byte[] value = read(in, in.readInt());
                ProducerRecord<byte[], byte[]> record =
                    new ProducerRecord<>(topics[topic], null, timestampMs, key, value);
                record.headers()
                    .add("source", source)
                    .add("line", Integer.toString(line).getBytes(StandardCharsets.US_ASCII))
                    .add("produced_at",
                         Long.toString(System.currentTimeMillis()).getBytes(StandardCharsets.US_ASCII));
                producer.send(record, onAck);
                records++;
            }
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        if (failure.get() != null) {
            throw failure.get();
        }
        System.out.printf(Locale.ROOT, "{\"records\": %d, \"seconds\": %.6f}%n", records, seconds);
    }

    private static byte[] read(DataInputStream in, int length) throws IOException {
        byte[] bytes = new byte[length];
        in.readFully(bytes);
        return bytes;
    }
}
