package org.moe4j.io.corpus;

import org.moe4j.io.AtomicFile;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * {@code manifest.json} of a shard folder: what was read, how it was tokenized, the domain names behind the
 * shards' domain ids, and per split and per domain how many documents and tokens there are. It is written last,
 * so a folder with a manifest is complete.
 *
 * @param format      always {@link #FORMAT}
 * @param version     manifest version, {@link #VERSION}
 * @param tokenizer   what produced the token ids
 * @param valFraction the share of documents in the validation split ({@link Split})
 * @param sources     the sources, in the order they were read
 * @param domains     domain names; a shard's domain id {@code i} is {@code domains[i]}
 * @param splits      {@code train} and {@code val}
 */
public record ShardManifest(String format, int version, Tokenizer tokenizer, double valFraction,
                            List<Source> sources, List<String> domains, Map<String, SplitStats> splits) {
    public static final String FORMAT = "moe4j-token-shards";
    public static final int VERSION = 1;
    public static final String FILE_NAME = "manifest.json";

    /** @param reference what the tokenizer is (a tokenizer.json and its checksum, or a name) */
    public record Tokenizer(String reference, int vocabSize, int eosId, String eosPlacement) {
        /** Shards put EOS in front of each document. */
        public static final String EOS_OPENS_DOCUMENT = "opens-document";
    }

    public record Source(String name, String reference) {
    }

    /** @param file the shard, relative to the manifest's folder */
    public record SplitStats(String file, long documents, long tokens, Map<String, Counts> domains) {
    }

    public record Counts(long documents, long tokens) {
    }

    private static final ObjectMapper JSON = JsonMapper.builder().enable(SerializationFeature.INDENT_OUTPUT).build();

    /** Reads {@code dir/manifest.json}. */
    public static ShardManifest read(Path dir) {
        Path file = dir.resolve(FILE_NAME);
        ShardManifest m;
        try {
            m = JSON.readValue(file.toFile(), ShardManifest.class);
        } catch (IOException e) {
            throw new CorpusException(file + ": cannot read the shard manifest: " + e.getMessage(), e);
        }
        if (!FORMAT.equals(m.format()) || m.version() != VERSION) {
            throw new CorpusException(file + ": format '" + m.format() + "' version " + m.version() + ", expected '"
                    + FORMAT + "' version " + VERSION);
        }
        return m;
    }

    /**
     * Opens the shard of {@code split} in {@code dir} and checks it against this manifest (counts, vocabulary, EOS,
     * domains), so that a shard from another run is not read with this run's domain names.
     */
    public TokenShard open(Path dir, Split split) {
        SplitStats st = splits.get(split.stem());
        if (st == null) {
            throw new CorpusException(dir.resolve(FILE_NAME) + ": no split '" + split.stem() + "'");
        }
        TokenShard shard = TokenShard.open(dir.resolve(st.file()));
        if (shard.tokenCount() != st.tokens() || shard.documentCount() != st.documents()
                || shard.vocabSize() != tokenizer.vocabSize() || shard.eosId() != tokenizer.eosId()
                || shard.domainCount() != domains.size()) {
            shard.close();
            throw new CorpusException(shard.path() + ": holds " + shard.tokenCount() + " tokens, "
                    + shard.documentCount() + " documents, vocabulary " + shard.vocabSize() + ", EOS " + shard.eosId()
                    + ", " + shard.domainCount() + " domains, but " + dir.resolve(FILE_NAME) + " says " + st.tokens()
                    + ", " + st.documents() + ", " + tokenizer.vocabSize() + ", " + tokenizer.eosId() + ", "
                    + domains.size() + ": the shard and the manifest come from different runs");
        }
        return shard;
    }

    /** Removes {@code dir/manifest.json} if it is there. */
    static void delete(Path dir) {
        try {
            Files.deleteIfExists(dir.resolve(FILE_NAME));
        } catch (IOException e) {
            throw new CorpusException(dir.resolve(FILE_NAME) + ": cannot remove the old manifest: " + e, e);
        }
    }

    /** Writes {@code dir/manifest.json} atomically (temporary file, fsync, rename). */
    public void write(Path dir) {
        Path file = dir.resolve(FILE_NAME);
        try {
            AtomicFile.write(file, JSON.writeValueAsBytes(this));
        } catch (IOException e) {
            throw new CorpusException(file + ": cannot write the shard manifest: " + e, e);
        }
    }
}
