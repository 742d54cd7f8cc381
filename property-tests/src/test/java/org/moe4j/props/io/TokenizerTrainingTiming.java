package org.moe4j.props.io;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Enumeration;
import java.util.List;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import org.moe4j.io.tokenizer.BpeTokenizer;

/**
 * How long BPE training takes on ~20 MB of text: the JDK's own Java sources from {@code lib/src.zip}. A runner,
 * not a test (the name matches no surefire include), so the default suite stays fast and asserts nothing on time.
 *
 * <pre>
 * mvn -B -ntp -o -q -pl property-tests -am test-compile
 * java -cp "property-tests/target/test-classes:model-io/target/classes:simd/target/classes:$(cat cp.txt)" \
 *     org.moe4j.props.io.TokenizerTrainingTiming [megabytes=20] [vocab=32768]
 * </pre>
 *
 * (cp.txt: {@code mvn -o -q -pl property-tests dependency:build-classpath -Dmdep.outputFile=cp.txt}.)
 */
public final class TokenizerTrainingTiming {
    private TokenizerTrainingTiming() {
    }

    public static void main(String[] args) throws IOException {
        long megabytes = args.length > 0 ? Long.parseLong(args[0]) : 20;
        int vocab = args.length > 1 ? Integer.parseInt(args[1]) : 32768;
        Path zip = Path.of(System.getProperty("java.home"), "lib", "src.zip");
        List<String> texts = new ArrayList<>();
        long chars = 0;
        long t0 = System.nanoTime();
        try (ZipFile z = new ZipFile(zip.toFile())) {
            Enumeration<? extends ZipEntry> entries = z.entries();
            while (entries.hasMoreElements() && chars < megabytes << 20) {
                ZipEntry e = entries.nextElement();
                if (e.getName().endsWith(".java")) {
                    try (InputStream in = z.getInputStream(e)) {
                        String s = new String(in.readAllBytes(), StandardCharsets.UTF_8);
                        texts.add(s);
                        chars += s.length();
                    }
                }
            }
        }
        long t1 = System.nanoTime();
        System.out.printf("read %d files, %.1f M chars from %s in %.1f s%n", texts.size(), chars / 1048576.0, zip,
                (t1 - t0) / 1e9);
        BpeTokenizer.train(texts, 257, null, null); // no merges: reading and counting the words alone
        long t1b = System.nanoTime();
        System.out.printf("pre-tokenised and counted words (vocab 257, no merges) in %.1f s%n", (t1b - t1) / 1e9);
        t1 = System.nanoTime();
        BpeTokenizer tok = BpeTokenizer.train(texts, vocab, null, null);
        long t2 = System.nanoTime();
        System.out.printf("trained vocab %d (%d merges) in %.1f s%n", tok.vocabSize(), tok.merges().size(),
                (t2 - t1) / 1e9);
        long tokens = 0;
        for (String s : texts) {
            tokens += tok.encode(s).length;
        }
        long t3 = System.nanoTime();
        System.out.printf("encoded %d tokens (%.2f chars/token) in %.1f s = %.1f M chars/s%n", tokens,
                (double) chars / tokens, (t3 - t2) / 1e9, chars / 1e6 / ((t3 - t2) / 1e9));
    }
}
