package org.moe4j.engine.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.io.corpus.ByteEncoder;
import org.moe4j.io.corpus.CorpusShards;
import org.moe4j.io.corpus.FolderSource;
import org.moe4j.io.corpus.Split;
import org.moe4j.io.corpus.WindowSampler;

/** Shard batches: a pure function of (shard, T, seed, position); resume continues exactly; domains follow tokens. */
class ShardBatchSourceTest {
    static final int B = 3, T = 16;

    /** Two domains of distinguishable text: 'a' documents hold only lower-case letters, 'n' documents only digits. */
    static Path prepare(Path dir) throws IOException {
        Path texts = dir.resolve("texts");
        for (int i = 0; i < 12; i++) {
            Path a = texts.resolve("alpha/doc" + i + ".txt"), n = texts.resolve("num/doc" + i + ".txt");
            Files.createDirectories(a.getParent());
            Files.createDirectories(n.getParent());
            StringBuilder sa = new StringBuilder(), sn = new StringBuilder();
            for (int j = 0; j < 40 + 7 * i; j++) {
                sa.append((char) ('a' + (i + j) % 26));
                sn.append((char) ('0' + (i * j) % 10));
            }
            Files.writeString(a, sa);
            Files.writeString(n, sn);
        }
        Path out = dir.resolve("shards");
        CorpusShards.prepare(List.of(new FolderSource(texts)), new ByteEncoder(), out, 0.2, CorpusShards.SILENT);
        return out;
    }

    static int[][] batches(ShardBatchSource s, int n) {
        int[][] out = new int[n][B * T];
        for (int i = 0; i < n; i++) s.next(out[i], B, T);
        return out;
    }

    @Test
    void sameSeedSameBatchesAndResumeContinuesExactly(@TempDir Path dir) throws IOException {
        Path shards = prepare(dir);
        int[][] straight;
        try (ShardBatchSource s = ShardBatchSource.open(shards, Split.TRAIN, T, 7)) {
            straight = batches(s, 6);
            assertEquals(6L * B, s.position(), "the position counts windows");
        }
        try (ShardBatchSource s = ShardBatchSource.open(shards, Split.TRAIN, T, 7)) {
            assertArrayEquals(straight, batches(s, 6));
        }
        try (ShardBatchSource s = ShardBatchSource.open(shards, Split.TRAIN, T, 7)) {
            s.position(3L * B);
            int[][] resumed = batches(s, 3);
            for (int i = 0; i < 3; i++) assertArrayEquals(straight[3 + i], resumed[i], "batch " + (3 + i));
        }
        try (ShardBatchSource s = ShardBatchSource.open(shards, Split.TRAIN, T, 8)) {
            assertFalse(Arrays.deepEquals(straight, batches(s, 6)), "another seed, other windows");
        }
    }

    @Test
    void windowsPackDocumentsAndDomainsFollowTheTokens(@TempDir Path dir) throws IOException {
        Path shards = prepare(dir);
        try (ShardBatchSource s = ShardBatchSource.open(shards, Split.TRAIN, T, 3)) {
            assertEquals(List.of("alpha", "num"), s.domainNames());
            boolean crossed = false;
            int[] tokens = new int[B * T];
            for (int i = 0; i < 40; i++) {
                s.next(tokens, B, T);
                int[] domains = s.lastDomains();
                assertEquals(B * T, domains.length);
                for (int t = 0; t < B * T; t++) {
                    int tok = tokens[t];
                    if (tok == ByteEncoder.EOS) {
                        crossed |= t % T != 0;
                        continue;
                    }
                    assertEquals(Character.isDigit(tok) ? 1 : 0, domains[t], "token '" + (char) tok + "' at " + t);
                }
            }
            assertTrue(crossed, "some window runs across a document boundary");
        }
    }

    /** Sequences of T tokens are the sampler's windows of T - 1 labels: an epoch labels every transition once. */
    @Test
    void anEpochLabelsEveryTransitionOnce(@TempDir Path dir) throws IOException {
        Path shards = prepare(dir);
        try (ShardBatchSource s = ShardBatchSource.open(shards, Split.TRAIN, T, 5)) {
            long n = s.shard().tokenCount(), w = s.windowsPerEpoch();
            assertEquals((n - 1) / (T - 1), w);
            WindowSampler twin = new WindowSampler(s.shard(), T - 1, 5);
            int[] one = new int[T], expected = new int[T];
            boolean[] labelled = new boolean[(int) n];
            for (long i = 0; i < w; i++) {
                s.next(one, 1, T);
                long start = twin.windowStart(i);
                s.shard().read(start, expected, 0, T);
                assertArrayEquals(expected, one, "window " + i);
                for (int t = 1; t < T; t++) {
                    assertFalse(labelled[(int) (start + t)], "token " + (start + t) + " labelled twice in an epoch");
                    labelled[(int) (start + t)] = true;
                }
            }
            long count = 0;
            for (boolean l : labelled) count += l ? 1 : 0;
            assertEquals(w * (T - 1), count);
            assertTrue(n - 1 - count < T - 1, "at most T - 2 transitions are left out by the epoch's shift");
        }
    }

    @Test
    void refusesAModelWithAnotherVocabularyOrEosAndAnotherT(@TempDir Path dir) throws IOException {
        Path shards = prepare(dir);
        try (ShardBatchSource s = ShardBatchSource.open(shards, Split.TRAIN, T, 1)) {
            ModelConfig tiny = ModelConfig.tiny(); // vocabulary 64, EOS 1
            Moe4jException e = assertThrows(Moe4jException.class, () -> s.checkFits(tiny));
            assertTrue(e.getMessage().contains("vocabulary 257 and EOS id 256") && e.getMessage().contains("vocabulary 64"),
                    e.getMessage());
            Moe4jException e2 = assertThrows(Moe4jException.class, () -> s.next(new int[B * 8], B, 8));
            assertTrue(e2.getMessage().contains("opened for " + T), e2.getMessage());
        }
    }
}
