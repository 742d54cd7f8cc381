package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.DoubleRange;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterContainer;
import org.moe4j.io.corpus.ByteEncoder;
import org.moe4j.io.corpus.CorpusException;
import org.moe4j.io.corpus.CorpusShards;
import org.moe4j.io.corpus.Document;
import org.moe4j.io.corpus.ShardDescriptor;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.io.corpus.ShardWriter;
import org.moe4j.io.corpus.Split;
import org.moe4j.io.corpus.TokenShard;
import org.moe4j.io.corpus.WindowSampler;

/**
 * Token shards: random documents survive the round trip with their domains; the split is deterministic, disjoint
 * and monotone in the fraction; window sampling is a pure function of the data position; and hostile files
 * (truncated, wrong magic, counts or tables out of range, random bytes) fail with a CorpusException that names
 * the file, never with another exception or a crash.
 */
class ShardProperties {
    private static final Path DIR;

    static {
        try {
            DIR = Files.createTempDirectory("moe4j-shard-props");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @AfterContainer
    static void cleanUp() throws IOException {
        try (var s = Files.walk(DIR)) {
            s.sorted((a, b) -> b.compareTo(a)).forEach(p -> p.toFile().delete());
        }
    }

    private record Doc(int domain, int[] tokens) {
    }

    private static List<Doc> randomDocs(Random rnd, int vocab, int domains) {
        List<Doc> docs = new ArrayList<>();
        int n = rnd.nextInt(12);
        for (int i = 0; i < n; i++) {
            int[] t = new int[rnd.nextInt(3) == 0 ? 0 : rnd.nextInt(40)];
            for (int j = 0; j < t.length; j++) {
                t[j] = rnd.nextInt(vocab);
            }
            docs.add(new Doc(rnd.nextInt(domains), t));
        }
        return docs;
    }

    private static Path write(String name, List<Doc> docs, int vocab, int eos, int domains) {
        Path p = DIR.resolve(name);
        try (ShardWriter w = new ShardWriter(p, vocab, eos)) {
            for (Doc d : docs) {
                w.add(d.domain(), d.tokens());
            }
            w.commit(domains);
        }
        return p;
    }

    @Property(tries = 200)
    void roundTrip(@ForAll long seed, @ForAll @IntRange(min = 1, max = 1000) int vocab,
                   @ForAll @IntRange(min = 1, max = 6) int domains) {
        Random rnd = new Random(seed);
        int eos = rnd.nextInt(vocab);
        List<Doc> docs = randomDocs(rnd, vocab, domains);
        Path p = write("rt.shard", docs, vocab, eos, domains);
        try (TokenShard s = TokenShard.open(p)) {
            assertEquals(vocab, s.vocabSize());
            assertEquals(eos, s.eosId());
            assertEquals(domains, s.domainCount());
            assertEquals(docs.size(), s.documentCount());
            long expectedTokens = docs.stream().mapToLong(d -> d.tokens().length + 1L).sum();
            assertEquals(expectedTokens, s.tokenCount());
            assertEquals(ShardDescriptor.fileBytes(s.tokenCount(), s.documentCount()), Files.size(p));
            long pos = 0;
            for (int d = 0; d < docs.size(); d++) {
                Doc doc = docs.get(d);
                assertEquals(pos, s.documentStart(d));
                assertEquals(pos + 1 + doc.tokens().length, s.documentEnd(d));
                assertEquals(doc.domain(), s.documentDomain(d));
                assertEquals(eos, s.token(pos));
                int[] got = new int[doc.tokens().length];
                s.read(pos + 1, got, 0, got.length);
                assertArrayEquals(doc.tokens(), got);
                for (long q = pos; q < s.documentEnd(d); q++) {
                    assertEquals(d, s.documentAt(q));
                    assertEquals(doc.domain(), s.domainAt(q));
                }
                pos = s.documentEnd(d);
            }
            if (s.tokenCount() > 0) {
                int len = (int) s.tokenCount();
                long[] docIds = new long[len];
                int[] domainIds = new int[len];
                s.readDocuments(0, len, docIds, domainIds);
                for (int i = 0; i < len; i++) {
                    assertEquals(s.documentAt(i), docIds[i]);
                    assertEquals(s.domainAt(i), domainIds[i]);
                }
            }
            assertThrows(IndexOutOfBoundsException.class, () -> s.token(s.tokenCount()));
            assertThrows(IndexOutOfBoundsException.class, () -> s.token(-1));
            assertThrows(IndexOutOfBoundsException.class, () -> s.read(s.tokenCount(), new int[1], 0, 1));
            assertThrows(IndexOutOfBoundsException.class, () -> s.documentDomain(s.documentCount()));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Example
    void writerRejectsBadInput() {
        Path p = DIR.resolve("bad-input.shard");
        try (ShardWriter w = new ShardWriter(p, 10, 9)) {
            CorpusException e = assertThrows(CorpusException.class, () -> w.add(0, new int[] {3, 10}));
            assertTrue(e.getMessage().contains("token id 10"), e.getMessage());
            w.add(2, new int[] {1});
            e = assertThrows(CorpusException.class, () -> w.commit(2));
            assertTrue(e.getMessage().contains("domain id 2"), e.getMessage());
        }
        assertTrue(Files.notExists(p), "an uncommitted shard leaves nothing behind");
        try (var files = Files.list(DIR)) {
            assertTrue(files.noneMatch(f -> f.getFileName().toString().startsWith(".bad-input")), "no temporary left");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Property(tries = 500)
    void splitIsDeterministicAndMonotone(@ForAll String id, @ForAll @DoubleRange(min = 0, max = 1) double a,
                                         @ForAll @DoubleRange(min = 0, max = 1) double b) {
        assertEquals(Split.of(id, a), Split.of(new String(id.toCharArray()), a));
        double lo = Math.min(a, b), hi = Math.max(a, b);
        if (Split.of(id, lo) == Split.VAL) {
            assertEquals(Split.VAL, Split.of(id, hi), "raising the fraction only moves documents into validation");
        }
        assertEquals(Split.TRAIN, Split.of(id, 0.0));
        assertEquals(Split.VAL, Split.of(id, 1.0));
    }

    @Property(tries = 20)
    void preparedSplitsAreDisjointAndComplete(@ForAll long seed, @ForAll @DoubleRange(min = 0, max = 1) double fraction)
            throws IOException {
        Random rnd = new Random(seed);
        List<Document> docs = new ArrayList<>();
        int n = rnd.nextInt(60);
        for (int i = 0; i < n; i++) {
            byte[] text = new byte[1 + rnd.nextInt(30)];
            for (int j = 0; j < text.length; j++) {
                text[j] = (byte) (' ' + rnd.nextInt(90));
            }
            docs.add(new Document("id-" + seed + "-" + i, "d" + rnd.nextInt(4), new String(text, 0, text.length,
                    java.nio.charset.StandardCharsets.US_ASCII)));
        }
        Path out = DIR.resolve("prep");
        if (docs.isEmpty()) { // a source with nothing in it is refused, naming it
            CorpusException e = assertThrows(CorpusException.class, () -> CorpusShards.prepare(
                    List.of(CorpusTest.listSource(docs)), new ByteEncoder(), out, fraction, CorpusShards.SILENT));
            assertTrue(e.getMessage().contains("gave no documents"), e.getMessage());
            return;
        }
        ShardManifest m = CorpusShards.prepare(List.of(CorpusTest.listSource(docs)), new ByteEncoder(), out, fraction,
                CorpusShards.SILENT);
        Set<String> seen = new HashSet<>();
        for (Split s : Split.values()) {
            try (TokenShard shard = TokenShard.open(CorpusShards.shardPath(out, s))) {
                for (long d = 0; d < shard.documentCount(); d++) {
                    int[] t = new int[(int) (shard.documentEnd(d) - shard.documentStart(d) - 1)];
                    shard.read(shard.documentStart(d) + 1, t, 0, t.length);
                    byte[] b = new byte[t.length];
                    for (int i = 0; i < t.length; i++) {
                        b[i] = (byte) t[i];
                    }
                    String text = new String(b, java.nio.charset.StandardCharsets.US_ASCII);
                    String domain = m.domains().get(shard.documentDomain(d));
                    Document match = docs.stream().filter(x -> x.text().equals(text) && x.domain().equals(domain)
                            && Split.of(x.id(), fraction) == s && !seen.contains(x.id())).findFirst().orElseThrow();
                    seen.add(match.id());
                }
            }
        }
        assertEquals(docs.size(), seen.size(), "every document in exactly one split");
        byte[] train = Files.readAllBytes(CorpusShards.shardPath(out, Split.TRAIN));
        CorpusShards.prepare(List.of(CorpusTest.listSource(docs)), new ByteEncoder(), out, fraction, CorpusShards.SILENT);
        assertArrayEquals(train, Files.readAllBytes(CorpusShards.shardPath(out, Split.TRAIN)), "deterministic");
    }

    @Property(tries = 60)
    void windowsArePureFunctionsOfPositionAndCoverEachEpoch(@ForAll long seed,
                                                            @ForAll @IntRange(min = 1, max = 40) int seqLen) {
        Random rnd = new Random(seed);
        List<Doc> docs = new ArrayList<>();
        int n = 1 + rnd.nextInt(20);
        for (int i = 0; i < n; i++) {
            int[] t = new int[rnd.nextInt(50)];
            for (int j = 0; j < t.length; j++) {
                t[j] = rnd.nextInt(256);
            }
            docs.add(new Doc(rnd.nextInt(3), t));
        }
        Path p = write("win.shard", docs, 257, 256, 3);
        try (TokenShard shard = TokenShard.open(p)) {
            if (shard.tokenCount() < seqLen + 1L) {
                assertThrows(CorpusException.class, () -> new WindowSampler(shard, seqLen, seed));
                return;
            }
            WindowSampler a = new WindowSampler(shard, seqLen, seed);
            long w = a.windowsPerEpoch();
            assertEquals((shard.tokenCount() - 1) / seqLen, w);
            for (long epoch = 0; epoch < 3; epoch++) {
                Set<Long> starts = new HashSet<>();
                long shift = -1;
                for (long i = 0; i < w; i++) {
                    long start = a.windowStart(epoch * w + i);
                    assertTrue(start >= 0 && start + seqLen + 1 <= shard.tokenCount(), "window in bounds");
                    long s = start % seqLen;
                    assertTrue(shift < 0 || shift == s, "one grid per epoch");
                    shift = s;
                    starts.add(start);
                }
                assertEquals(w, starts.size(), "an epoch visits every window once");
            }
            int[] tokens = new int[seqLen + 1];
            int[] domains = new int[seqLen + 1];
            List<int[]> firstRun = new ArrayList<>();
            for (int i = 0; i < 5; i++) {
                long start = a.next(tokens, domains);
                for (int j = 0; j <= seqLen; j++) {
                    assertEquals(shard.token(start + j), tokens[j]);
                    assertEquals(shard.domainAt(start + j), domains[j]);
                }
                firstRun.add(tokens.clone());
            }
            WindowSampler b = new WindowSampler(shard, seqLen, seed);
            b.position(2);
            for (int i = 2; i < 5; i++) {
                b.next(tokens, null);
                assertArrayEquals(firstRun.get(i), tokens, "restoring the data position replays the stream");
            }
            assertEquals(5, b.position());
        }
    }

    // ---- hostile files ----

    /** A few valid shards to corrupt, written once (each write is fsynced). */
    private static final List<byte[]> VALID = new ArrayList<>();

    private static synchronized byte[] validShardBytes(Random rnd) throws IOException {
        if (VALID.isEmpty()) {
            Random r = new Random(42);
            for (int i = 0; i < 16; i++) {
                List<Doc> docs = randomDocs(r, 300, 4);
                docs.add(new Doc(1, new int[] {5, 6, 7}));
                VALID.add(Files.readAllBytes(write("valid.shard", docs, 300, 299, 4)));
            }
        }
        return VALID.get(rnd.nextInt(VALID.size())).clone();
    }

    /** Opening either works and every read stays in bounds, or fails with a CorpusException naming the file. */
    private static void assertOpensOrFailsCleanly(Path p) {
        try (TokenShard s = TokenShard.open(p)) {
            for (long i = 0; i < s.tokenCount(); i++) {
                int t = s.token(i);
                assertTrue(t >= 0 && t < s.vocabSize());
                assertTrue(s.domainAt(i) >= 0 && s.domainAt(i) < s.domainCount());
            }
        } catch (CorpusException e) {
            assertTrue(e.getMessage().startsWith(p.toString()), e.getMessage());
        }
    }

    @Property(tries = 300)
    void truncatedFilesFailCleanly(@ForAll long seed) throws IOException {
        Random rnd = new Random(seed);
        byte[] bytes = validShardBytes(rnd);
        Path p = DIR.resolve("truncated.shard");
        Files.write(p, Arrays.copyOf(bytes, rnd.nextInt(bytes.length)));
        CorpusException e = assertThrows(CorpusException.class, () -> TokenShard.open(p).close());
        assertTrue(e.getMessage().startsWith(p.toString()), e.getMessage());
    }

    @Property(tries = 500)
    void corruptedFilesFailCleanly(@ForAll long seed) throws IOException {
        Random rnd = new Random(seed);
        byte[] bytes = validShardBytes(rnd);
        ByteBuffer b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        switch (rnd.nextInt(6)) {
            case 0 -> b.putLong((int) ShardDescriptor.TOKEN_COUNT_OFFSET, rnd.nextLong() >> rnd.nextInt(64));
            case 1 -> b.putLong((int) ShardDescriptor.DOCUMENT_COUNT_OFFSET, rnd.nextLong() >> rnd.nextInt(64));
            case 2 -> b.putInt((int) ShardDescriptor.VOCAB_SIZE_OFFSET + 4 * rnd.nextInt(3), rnd.nextInt() >> rnd.nextInt(32));
            case 3 -> {
                // a word of the token or table area: token ids, document starts, domain ids
                int at = ShardDescriptor.HEADER_BYTES + rnd.nextInt(bytes.length - ShardDescriptor.HEADER_BYTES - 3);
                b.putInt(at, rnd.nextBoolean() ? rnd.nextInt() : rnd.nextInt(400) - 50);
            }
            case 4 -> bytes[rnd.nextInt(bytes.length)] ^= (byte) (1 << rnd.nextInt(8));
            default -> {
                byte[] noise = new byte[rnd.nextInt(200)];
                rnd.nextBytes(noise);
                bytes = noise;
            }
        }
        Path p = DIR.resolve("corrupt.shard");
        Files.write(p, bytes);
        assertOpensOrFailsCleanly(p);
    }

    @Example
    void wrongMagicAndVersionAreNamed() throws IOException {
        byte[] bytes = validShardBytes(new Random(1));
        Path p = DIR.resolve("magic.shard");
        byte[] m = bytes.clone();
        m[0] = 'X';
        Files.write(p, m);
        CorpusException e = assertThrows(CorpusException.class, () -> TokenShard.open(p).close());
        assertTrue(e.getMessage().contains("not a moe4j token shard"), e.getMessage());
        byte[] v = bytes.clone();
        ByteBuffer.wrap(v).order(ByteOrder.LITTLE_ENDIAN).putInt((int) ShardDescriptor.VERSION_OFFSET, 9);
        Files.write(p, v);
        e = assertThrows(CorpusException.class, () -> TokenShard.open(p).close());
        assertTrue(e.getMessage().contains("version 9"), e.getMessage());
        byte[] c = bytes.clone();
        ByteBuffer.wrap(c).order(ByteOrder.LITTLE_ENDIAN).putLong((int) ShardDescriptor.TOKEN_COUNT_OFFSET, 1L << 62);
        Files.write(p, c);
        e = assertThrows(CorpusException.class, () -> TokenShard.open(p).close());
        assertTrue(e.getMessage().contains("token count"), e.getMessage());
        e = assertThrows(CorpusException.class, () -> TokenShard.open(DIR.resolve("missing.shard")).close());
        assertTrue(e.getMessage().contains("missing.shard"), e.getMessage());
    }
}
