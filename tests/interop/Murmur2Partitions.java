// The partitions the Java producer's default partitioner picks for keys, computed by the
// Kafka jars themselves. Reads one UTF-8 key per line on stdin (as StringSerializer encodes
// it) and prints, tab-separated: the key, Utils.murmur2(key), then
// BuiltInPartitioner.partitionForKey(key, n) (= Utils.toPositive(murmur2) % n) for each n
// given as an argument. Regenerate tests/interop/murmur2_vectors.tsv with:
//
//   java -cp '.kafka/dist/4.4.0/libs/*' tests/interop/Murmur2Partitions.java 3 6 7 12 \
//       < tests/interop/keys.txt > tests/interop/murmur2_vectors.tsv
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.utils.internals.AppInfoParser;
import org.apache.kafka.common.utils.Utils;

public class Murmur2Partitions {
    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        int[] counts = new int[args.length];
        StringBuilder header = new StringBuilder("# kafka-clients " + AppInfoParser.getVersion()
                + "\tkey\tmurmur2");
        for (int i = 0; i < args.length; i++) {
            counts[i] = Integer.parseInt(args[i]);
            header.append("\tpartitions=").append(counts[i]);
        }
        out.println(header);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String key; (key = in.readLine()) != null; ) {
            byte[] bytes = key.getBytes(StandardCharsets.UTF_8);
            StringBuilder line = new StringBuilder(key).append('\t').append(Utils.murmur2(bytes));
            for (int n : counts) {
                line.append('\t').append(BuiltInPartitioner.partitionForKey(bytes, n));
            }
            out.println(line);
        }
    }
}
