package org.moe4j.io.corpus;

import org.moe4j.io.AtomicFile;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;

/**
 * Writes one token shard ({@link ShardDescriptor}) atomically: tokens stream into a temporary file beside the
 * target, the document tables and the header follow at {@link #commit()}, the file is forced to disk and renamed
 * over the target. Until then the target is untouched; {@link #close()} without a commit deletes the temporary.
 */
public final class ShardWriter implements AutoCloseable {
    private static final int BUFFER_BYTES = 1 << 20;

    private final Path path;
    private final int vocabSize;
    private final int eosId;
    private int maxDomain = -1;
    private Path tmp;
    private FileChannel channel;
    private final ByteBuffer buffer = ByteBuffer.allocateDirect(BUFFER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
    private long tokens;
    private long[] docStarts = new long[1024];
    private int[] docDomains = new int[1024];
    private int documents;

    public ShardWriter(Path path, int vocabSize, int eosId) {
        if (vocabSize <= 0 || eosId < 0 || eosId >= vocabSize) {
            throw new CorpusException(path + ": vocabulary " + vocabSize + ", EOS " + eosId
                    + " (expected a positive vocabulary and EOS in [0, vocabulary))");
        }
        this.path = path;
        this.vocabSize = vocabSize;
        this.eosId = eosId;
        try {
            tmp = AtomicFile.createTemp(path);
            channel = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING);
            channel.position(ShardDescriptor.TOKENS_OFFSET);
        } catch (IOException e) {
            close();
            throw new CorpusException(path + ": cannot create the shard: " + e, e);
        }
    }

    /** Appends a document: EOS, then {@code ids}. */
    public void add(int domainId, int[] ids) {
        if (channel == null) {
            throw new CorpusException(path + ": the shard writer is closed");
        }
        if (domainId < 0) {
            throw new CorpusException(path + ": domain id " + domainId + " must be >= 0");
        }
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] < 0 || ids[i] >= vocabSize) {
                throw new CorpusException(path + ": token id " + ids[i] + " at index " + i + " of document "
                        + documents + " outside the vocabulary [0, " + vocabSize + ")");
            }
        }
        if (documents == docDomains.length) {
            docStarts = Arrays.copyOf(docStarts, documents * 2);
            docDomains = Arrays.copyOf(docDomains, documents * 2);
        }
        docStarts[documents] = tokens;
        docDomains[documents] = domainId;
        maxDomain = Math.max(maxDomain, domainId);
        documents++;
        putInt(eosId);
        for (int id : ids) {
            putInt(id);
        }
        tokens += 1L + ids.length;
    }

    public long tokenCount() {
        return tokens;
    }

    public int documentCount() {
        return documents;
    }

    public Path path() {
        return path;
    }

    /**
     * Writes the tables and the header, forces the file to disk and renames it into place.
     *
     * @param domainCount how many domains the manifest names; every document's domain id must be below it
     */
    public void commit(int domainCount) {
        if (channel == null) {
            throw new CorpusException(path + ": the shard writer is closed");
        }
        if (domainCount <= maxDomain) {
            throw new CorpusException(path + ": a document has domain id " + maxDomain + ", but the shard is "
                    + "committed with " + domainCount + " domains");
        }
        try {
            flush();
            channel.position(ShardDescriptor.docStartsOffset(tokens));
            for (int i = 0; i < documents; i++) {
                putLong(docStarts[i]);
            }
            putLong(tokens);
            for (int i = 0; i < documents; i++) {
                putInt(docDomains[i]);
            }
            flush();
            ByteBuffer h = ByteBuffer.allocate(ShardDescriptor.HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            h.put(ShardDescriptor.MAGIC);
            h.putInt((int) ShardDescriptor.VERSION_OFFSET, ShardDescriptor.VERSION);
            h.putInt((int) ShardDescriptor.HEADER_BYTES_OFFSET, ShardDescriptor.HEADER_BYTES);
            h.putInt((int) ShardDescriptor.VOCAB_SIZE_OFFSET, vocabSize);
            h.putInt((int) ShardDescriptor.EOS_ID_OFFSET, eosId);
            h.putInt((int) ShardDescriptor.DOMAIN_COUNT_OFFSET, domainCount);
            h.putLong((int) ShardDescriptor.TOKEN_COUNT_OFFSET, tokens);
            h.putLong((int) ShardDescriptor.DOCUMENT_COUNT_OFFSET, documents);
            h.clear();
            channel.position(0);
            while (h.hasRemaining()) {
                channel.write(h);
            }
            channel.force(true);
            channel.close();
            channel = null;
            AtomicFile.moveIntoPlace(tmp, path);
            tmp = null;
        } catch (IOException e) {
            close();
            throw new CorpusException(path + ": cannot write the shard: " + e, e);
        }
    }

    /** Abandons an uncommitted shard: the temporary file is deleted and the target left as it was. */
    @Override
    public void close() {
        try {
            if (channel != null) {
                channel.close();
            }
        } catch (IOException ignored) {
            // nothing was committed; the temporary file goes below
        } finally {
            channel = null;
        }
        if (tmp != null) {
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException ignored) {
                // a stray hidden temporary file is harmless; the error being reported, if any, matters more
            }
            tmp = null;
        }
    }

    private void putInt(int v) {
        if (buffer.remaining() < Integer.BYTES) {
            flushUnchecked();
        }
        buffer.putInt(v);
    }

    private void putLong(long v) {
        if (buffer.remaining() < Long.BYTES) {
            flushUnchecked();
        }
        buffer.putLong(v);
    }

    private void flushUnchecked() {
        try {
            flush();
        } catch (IOException e) {
            close();
            throw new CorpusException(path + ": cannot write the shard: " + e, e);
        }
    }

    private void flush() throws IOException {
        buffer.flip();
        while (buffer.hasRemaining()) {
            channel.write(buffer);
        }
        buffer.clear();
    }
}
