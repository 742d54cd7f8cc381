package org.moe4j.io.corpus;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import org.moe4j.io.MappedFiles;

/**
 * A memory-mapped token shard ({@link ShardDescriptor}). Opening validates the whole file: header, sizes, the
 * document table and every token id, so that reads afterwards need only their own index checks; a file that
 * breaks a rule fails with a {@link CorpusException} naming the file and the rule. Reads are thread-safe; closing
 * unmaps the file.
 */
public final class TokenShard implements AutoCloseable {
    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong LONG = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final Path path;
    private final Arena arena;
    private final MemorySegment tokens;
    private final MemorySegment docStarts;
    private final MemorySegment docDomains;
    private final int vocabSize;
    private final int eosId;
    private final int domainCount;
    private final long tokenCount;
    private final long documentCount;

    private TokenShard(Path path, Arena arena, MemorySegment file, int vocabSize, int eosId, int domainCount,
                       long tokenCount, long documentCount) {
        this.path = path;
        this.arena = arena;
        this.vocabSize = vocabSize;
        this.eosId = eosId;
        this.domainCount = domainCount;
        this.tokenCount = tokenCount;
        this.documentCount = documentCount;
        this.tokens = file.asSlice(ShardDescriptor.TOKENS_OFFSET, tokenCount * ShardDescriptor.TOKEN_BYTES);
        this.docStarts = file.asSlice(ShardDescriptor.docStartsOffset(tokenCount),
                (documentCount + 1) * ShardDescriptor.DOC_START_BYTES);
        this.docDomains = file.asSlice(ShardDescriptor.docDomainsOffset(tokenCount, documentCount),
                documentCount * ShardDescriptor.DOC_DOMAIN_BYTES);
    }

    /** Maps and validates {@code path}. */
    public static TokenShard open(Path path) {
        Arena arena = Arena.ofShared();
        try {
            MemorySegment file;
            try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
                file = MappedFiles.mapReadOnly(ch, arena); // a plain native segment: see MappedFiles
            } catch (IOException e) {
                throw new CorpusException(path + ": cannot read the token shard: " + e.getMessage(), e);
            }
            TokenShard shard = validateHeader(path, arena, file);
            shard.validateTables();
            return shard;
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static TokenShard validateHeader(Path path, Arena arena, MemorySegment file) {
        long size = file.byteSize();
        if (size < ShardDescriptor.HEADER_BYTES) {
            throw new CorpusException(path + ": file of " + size + " bytes is too short for a token shard header ("
                    + ShardDescriptor.HEADER_BYTES + " bytes)");
        }
        byte[] magic = file.asSlice(ShardDescriptor.MAGIC_OFFSET, ShardDescriptor.MAGIC.length)
                .toArray(ValueLayout.JAVA_BYTE);
        if (!Arrays.equals(magic, ShardDescriptor.MAGIC)) {
            throw new CorpusException(path + ": not a moe4j token shard (magic bytes " + hex(magic)
                    + ", expected \"MOE4JTOK\")");
        }
        int version = file.get(INT, ShardDescriptor.VERSION_OFFSET);
        if (version != ShardDescriptor.VERSION) {
            throw new CorpusException(path + ": token shard format version " + version + ", this moe4j reads version "
                    + ShardDescriptor.VERSION);
        }
        int headerBytes = file.get(INT, ShardDescriptor.HEADER_BYTES_OFFSET);
        if (headerBytes != ShardDescriptor.HEADER_BYTES) {
            throw new CorpusException(path + ": header size " + headerBytes + ", expected " + ShardDescriptor.HEADER_BYTES);
        }
        int vocab = file.get(INT, ShardDescriptor.VOCAB_SIZE_OFFSET);
        int eos = file.get(INT, ShardDescriptor.EOS_ID_OFFSET);
        int domains = file.get(INT, ShardDescriptor.DOMAIN_COUNT_OFFSET);
        long n = file.get(LONG, ShardDescriptor.TOKEN_COUNT_OFFSET);
        long m = file.get(LONG, ShardDescriptor.DOCUMENT_COUNT_OFFSET);
        if (vocab <= 0) {
            throw new CorpusException(path + ": vocabulary size " + vocab + " (expected > 0)");
        }
        if (eos < 0 || eos >= vocab) {
            throw new CorpusException(path + ": EOS id " + eos + " outside the vocabulary [0, " + vocab + ")");
        }
        if (domains < 0) {
            throw new CorpusException(path + ": domain count " + domains + " (expected >= 0)");
        }
        if (n < 0 || n > ShardDescriptor.MAX_COUNT || m < 0 || m > ShardDescriptor.MAX_COUNT) {
            throw new CorpusException(path + ": token count " + n + " and document count " + m
                    + " must lie in [0, 2^58]");
        }
        if (m > n) {
            throw new CorpusException(path + ": " + m + " documents but only " + n
                    + " tokens (every document holds at least its EOS)");
        }
        long expected = ShardDescriptor.fileBytes(n, m);
        if (size != expected) {
            throw new CorpusException(path + ": file has " + size + " bytes, but a shard of " + n + " tokens and " + m
                    + " documents has " + expected + " bytes" + (size < expected ? " (truncated?)" : ""));
        }
        return new TokenShard(path, arena, file, vocab, eos, domains, n, m);
    }

    /** Document starts begin at 0, never decrease, end at N, and each opens with EOS; ids are in range. */
    private void validateTables() {
        if (docStarts.get(LONG, 0) != 0 || docStarts.get(LONG, documentCount * 8) != tokenCount) {
            throw new CorpusException(path + ": document table must start at 0 and end at the token count "
                    + tokenCount + ", found " + docStarts.get(LONG, 0) + " .. " + docStarts.get(LONG, documentCount * 8));
        }
        long prev = 0;
        for (long d = 0; d < documentCount; d++) {
            long start = docStarts.get(LONG, d * 8);
            long end = docStarts.get(LONG, (d + 1) * 8);
            if (end <= start || start < prev) {
                throw new CorpusException(path + ": document " + d + " spans tokens [" + start + ", " + end
                        + ") (expected a non-empty range after the previous document's start " + prev + ")");
            }
            int first = tokens.get(INT, start * 4);
            if (first != eosId) {
                throw new CorpusException(path + ": document " + d + " starts with token " + first
                        + " at position " + start + ", expected EOS " + eosId);
            }
            int domain = docDomains.get(INT, d * 4);
            if (domain < 0 || domain >= domainCount) {
                throw new CorpusException(path + ": document " + d + " has domain id " + domain + " outside [0, "
                        + domainCount + ")");
            }
            prev = start;
        }
        if (documentCount == 0 && tokenCount != 0) {
            throw new CorpusException(path + ": " + tokenCount + " tokens outside any document");
        }
        for (long i = 0; i < tokenCount; i++) {
            int t = tokens.get(INT, i * 4);
            if (t < 0 || t >= vocabSize) {
                throw new CorpusException(path + ": token id " + t + " at position " + i
                        + " outside the vocabulary [0, " + vocabSize + ")");
            }
        }
    }

    private static String hex(byte[] b) {
        StringBuilder s = new StringBuilder();
        for (byte x : b) {
            s.append(String.format("%02x", x & 0xFF));
        }
        return s.toString();
    }

    public Path path() {
        return path;
    }

    public int vocabSize() {
        return vocabSize;
    }

    public int eosId() {
        return eosId;
    }

    public int domainCount() {
        return domainCount;
    }

    public long tokenCount() {
        return tokenCount;
    }

    public long documentCount() {
        return documentCount;
    }

    /** The token at {@code position}. */
    public int token(long position) {
        checkPosition(position);
        return tokens.get(INT, position * 4);
    }

    /** Copies tokens {@code [position, position + length)} into {@code dst[offset ..]}. */
    public void read(long position, int[] dst, int offset, int length) {
        checkRange(position, length);
        MemorySegment.copy(tokens, INT, position * 4, dst, offset, length);
    }

    /** Copies tokens {@code [position, position + length)} into {@code dst} at byte {@code dstOffset}, native order. */
    public void read(long position, MemorySegment dst, long dstOffset, int length) {
        checkRange(position, length);
        MemorySegment.copy(tokens, INT, position * 4, dst, ValueLayout.JAVA_INT_UNALIGNED, dstOffset, length);
    }

    /** The tokens as a read-only view (little-endian int32), for zero-copy consumers. */
    public MemorySegment tokens() {
        return tokens.asReadOnly();
    }

    /** First token (the EOS) of {@code document}. */
    public long documentStart(long document) {
        checkDocument(document);
        return docStarts.get(LONG, document * 8);
    }

    /** One past the last token of {@code document}. */
    public long documentEnd(long document) {
        checkDocument(document);
        return docStarts.get(LONG, (document + 1) * 8);
    }

    /** Domain id of {@code document} (names are in manifest.json). */
    public int documentDomain(long document) {
        checkDocument(document);
        return docDomains.get(INT, document * 4);
    }

    /** The document that holds the token at {@code position} (binary search over the document starts). */
    public long documentAt(long position) {
        checkPosition(position);
        long lo = 0, hi = documentCount - 1;
        while (lo < hi) {
            long mid = (lo + hi + 1) >>> 1;
            if (docStarts.get(LONG, mid * 8) <= position) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        return lo;
    }

    /** Domain id of the token at {@code position}. */
    public int domainAt(long position) {
        return docDomains.get(INT, documentAt(position) * 4);
    }

    /**
     * Document index and domain id of each token in {@code [position, position + length)}: one binary search,
     * then a walk. Either array may be null.
     */
    public void readDocuments(long position, int length, long[] documents, int[] domains) {
        checkRange(position, length);
        if (length == 0) {
            return;
        }
        long doc = documentAt(position);
        long end = docStarts.get(LONG, (doc + 1) * 8);
        int domain = docDomains.get(INT, doc * 4);
        for (int i = 0; i < length; i++) {
            long p = position + i;
            while (p >= end) {
                doc++;
                end = docStarts.get(LONG, (doc + 1) * 8);
                domain = docDomains.get(INT, doc * 4);
            }
            if (documents != null) {
                documents[i] = doc;
            }
            if (domains != null) {
                domains[i] = domain;
            }
        }
    }

    private void checkPosition(long position) {
        if (position < 0 || position >= tokenCount) {
            throw new IndexOutOfBoundsException(path + ": token position " + position + " outside [0, " + tokenCount + ")");
        }
    }

    private void checkRange(long position, int length) {
        if (length < 0 || position < 0 || position > tokenCount - length) {
            throw new IndexOutOfBoundsException(path + ": tokens [" + position + ", " + position + " + " + length
                    + ") outside [0, " + tokenCount + ")");
        }
    }

    private void checkDocument(long document) {
        if (document < 0 || document >= documentCount) {
            throw new IndexOutOfBoundsException(path + ": document " + document + " outside [0, " + documentCount + ")");
        }
    }

    @Override
    public void close() {
        arena.close();
    }
}
