package org.moe4j.io.corpus;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;
import java.util.stream.Stream;

/** Operations over sources. */
public final class DocumentSources {
    private static final long CAP_SALT = 0xCA9_5A17L;

    private DocumentSources() {
    }

    /**
     * At most {@code max} documents per domain ({@code max <= 0}: no cap): per domain, the {@code max} documents whose
     * id hashes lowest. That is a deterministic sample spread over the whole source, independent of its order and
     * of the train/validation split (which hashes the id with another salt). The documents keep their order. The
     * whole source is read before the first document comes out; the kept documents are held in memory.
     */
    public static DocumentSource capPerDomain(DocumentSource source, int max) {
        if (max <= 0) {
            return source;
        }
        return new DocumentSource() {
            @Override
            public String name() {
                return source.name();
            }

            @Override
            public String reference() {
                return source.reference() + " (at most " + max + " documents per domain)";
            }

            @Override
            public Stream<Document> documents() {
                List<Document> all = new ArrayList<>();
                Map<String, PriorityQueue<long[]>> lowest = new HashMap<>();
                try (Stream<Document> s = source.documents()) {
                    s.forEachOrdered(d -> {
                        // keep a bounded max-heap of (hash, sequence) per domain; documents that fall out are dropped
                        PriorityQueue<long[]> heap = lowest.computeIfAbsent(d.domain(),
                                k -> new PriorityQueue<>((a, b) -> Long.compareUnsigned(b[0], a[0])));
                        long h = Hashing.hash(d.id(), CAP_SALT);
                        if (heap.size() < max) {
                            heap.add(new long[] {h, all.size()});
                            all.add(d);
                        } else if (Long.compareUnsigned(h, heap.peek()[0]) < 0) {
                            all.set((int) heap.poll()[1], null);
                            heap.add(new long[] {h, all.size()});
                            all.add(d);
                        } else {
                            all.add(null);
                        }
                    });
                }
                return all.stream().filter(d -> d != null);
            }
        };
    }

    /** Which of {@code documents} {@link #capPerDomain} keeps; all when {@code max <= 0}. Only ids and domains are read. */
    static boolean[] selectPerDomain(List<Document> documents, int max) {
        boolean[] keep = new boolean[documents.size()];
        if (max <= 0) {
            Arrays.fill(keep, true);
            return keep;
        }
        Map<String, PriorityQueue<long[]>> lowest = new HashMap<>();
        for (int i = 0; i < documents.size(); i++) {
            Document d = documents.get(i);
            PriorityQueue<long[]> heap = lowest.computeIfAbsent(d.domain(),
                    k -> new PriorityQueue<>((a, b) -> Long.compareUnsigned(b[0], a[0])));
            long h = Hashing.hash(d.id(), CAP_SALT);
            if (heap.size() < max) {
                heap.add(new long[] {h, i});
            } else if (Long.compareUnsigned(h, heap.peek()[0]) < 0) {
                heap.poll();
                heap.add(new long[] {h, i});
            }
        }
        for (PriorityQueue<long[]> heap : lowest.values()) {
            for (long[] e : heap) {
                keep[(int) e[1]] = true;
            }
        }
        return keep;
    }
}
