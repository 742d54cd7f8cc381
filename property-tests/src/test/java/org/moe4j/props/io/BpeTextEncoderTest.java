package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.io.corpus.BpeTextEncoder;
import org.moe4j.io.corpus.CorpusShards;
import org.moe4j.io.corpus.Document;
import org.moe4j.io.corpus.DocumentSource;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.io.corpus.Split;
import org.moe4j.io.corpus.TokenShard;
import org.moe4j.io.tokenizer.BpeTokenizer;

/** The BPE tokenizer as the shard writer's encoder: thread-safe, and EOS only where a document opens. */
class BpeTextEncoderTest {
    static List<String> texts(int n, long seed) {
        Random r = new Random(seed);
        String[] words = {"alpha", "beta", "gamma", "delta", " ", "\n", "{", "}", "(x)", "ünï", "코드", "😀", "42"};
        List<String> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            StringBuilder b = new StringBuilder();
            for (int j = 0; j < 50 + r.nextInt(200); j++) b.append(words[r.nextInt(words.length)]);
            out.add(b.toString());
        }
        return out;
    }

    @Test
    void parallelEncodingEqualsSequential() {
        BpeTokenizer tok = BpeTokenizer.train(texts(200, 1), 400, null, null);
        List<String> texts = texts(2000, 2); // many distinct pieces: the cache fills while threads race
        List<int[]> sequential = new ArrayList<>();
        BpeTextEncoder fresh = new BpeTextEncoder(BpeTokenizer.train(texts(200, 1), 400, null, null), "t");
        for (String t : texts) sequential.add(fresh.encode(t));
        BpeTextEncoder shared = new BpeTextEncoder(tok, "t");
        for (int round = 0; round < 3; round++) {
            List<int[]> parallel = texts.parallelStream().map(shared::encode).toList();
            for (int i = 0; i < texts.size(); i++) assertArrayEquals(sequential.get(i), parallel.get(i), "text " + i);
        }
    }

    @Test
    void endOfTextInsideADocumentStaysText(@TempDir Path dir) {
        BpeTokenizer tok = BpeTokenizer.train(texts(50, 3), 300, null, null);
        BpeTextEncoder enc = new BpeTextEncoder(tok, "t");
        String text = "before " + BpeTokenizer.END_OF_TEXT + " after<|endoftext|>";
        int[] ids = enc.encode(text);
        for (int id : ids) assertTrue(id != tok.eosId(), "EOS id inside the document");
        assertEquals(text, tok.decode(ids));

        DocumentSource src = new DocumentSource() {
            @Override
            public String name() {
                return "list";
            }

            @Override
            public String reference() {
                return "list";
            }

            @Override
            public java.util.stream.Stream<Document> documents() {
                return java.util.stream.Stream.of(new Document("a", "d", text), new Document("b", "d", "plain"));
            }
        };
        ShardManifest m = CorpusShards.prepare(List.of(src), enc, dir, 0, CorpusShards.SILENT);
        try (TokenShard shard = m.open(dir, Split.TRAIN)) {
            assertEquals(2, shard.documentCount());
            long eos = 0;
            for (long i = 0; i < shard.tokenCount(); i++) eos += shard.token(i) == tok.eosId() ? 1 : 0;
            assertEquals(2, eos, "one EOS per document, in front");
        }
    }
}
