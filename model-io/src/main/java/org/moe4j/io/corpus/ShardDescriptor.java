package org.moe4j.io.corpus;

import java.nio.charset.StandardCharsets;

/**
 * Where every byte of a token shard ({@code *.shard}) is. All numbers are little-endian.
 *
 * <pre>
 * offset  0   8 bytes  magic "MOE4JTOK"
 * offset  8   int32    format version (1)
 * offset 12   int32    header bytes (64)
 * offset 16   int32    vocabulary size V: every token id is in [0, V)
 * offset 20   int32    EOS id, in [0, V)
 * offset 24   int32    domain count D: every document domain id is in [0, D)
 * offset 28   int32    reserved, 0
 * offset 32   int64    token count N
 * offset 40   int64    document count M
 * offset 48   16 bytes reserved, 0
 * offset 64                         int32[N]    token ids
 * docStartsOffset(N)  (8-aligned)   int64[M+1]  document starts: doc i is tokens [start[i], start[i+1]);
 *                                               start[0] = 0, non-decreasing, start[M] = N
 * docDomainsOffset(N, M)            int32[M]    domain id of each document
 * fileBytes(N, M)                   end of file; nothing follows
 * </pre>
 *
 * Every document's tokens begin with EOS: the EOS token <em>opens</em> a document (ALGORITHMS.md: "an EOS token
 * opens the next segment"), so a window cut anywhere finds each document boundary as an EOS, and a document is
 * never empty. Domain names live in {@code manifest.json}; the shard holds their ids.
 */
public final class ShardDescriptor {
    private ShardDescriptor() {
    }

    public static final byte[] MAGIC = "MOE4JTOK".getBytes(StandardCharsets.US_ASCII);
    public static final int VERSION = 1;

    public static final long MAGIC_OFFSET = 0;
    public static final long VERSION_OFFSET = 8;
    public static final long HEADER_BYTES_OFFSET = 12;
    public static final long VOCAB_SIZE_OFFSET = 16;
    public static final long EOS_ID_OFFSET = 20;
    public static final long DOMAIN_COUNT_OFFSET = 24;
    public static final long TOKEN_COUNT_OFFSET = 32;
    public static final long DOCUMENT_COUNT_OFFSET = 40;
    /** Size of the header, and offset of the token ids. */
    public static final int HEADER_BYTES = 64;
    public static final long TOKENS_OFFSET = HEADER_BYTES;

    public static final int TOKEN_BYTES = Integer.BYTES;
    public static final int DOC_START_BYTES = Long.BYTES;
    public static final int DOC_DOMAIN_BYTES = Integer.BYTES;

    /** Largest token or document count a shard may declare: keeps every offset below 2^62, overflow-free. */
    public static final long MAX_COUNT = 1L << 58;

    /** Offset of the document starts for a shard of {@code tokens} tokens: after the tokens, aligned to 8. */
    public static long docStartsOffset(long tokens) {
        checkCount(tokens);
        long end = TOKENS_OFFSET + tokens * TOKEN_BYTES;
        return (end + 7) & ~7L;
    }

    /** Offset of the document domain ids. */
    public static long docDomainsOffset(long tokens, long documents) {
        checkCount(documents);
        return docStartsOffset(tokens) + (documents + 1) * DOC_START_BYTES;
    }

    /** Exact size of a shard file. */
    public static long fileBytes(long tokens, long documents) {
        return docDomainsOffset(tokens, documents) + documents * DOC_DOMAIN_BYTES;
    }

    private static void checkCount(long n) {
        if (n < 0 || n > MAX_COUNT) {
            throw new CorpusException("shard token or document count " + n + " outside [0, 2^58]");
        }
    }
}
