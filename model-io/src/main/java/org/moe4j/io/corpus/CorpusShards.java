package org.moe4j.io.corpus;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * Turns sources into a shard folder: {@code train.shard}, {@code val.shard} ({@link ShardDescriptor}) and
 * {@code manifest.json} ({@link ShardManifest}). Documents are read once, in source order; each goes to the split
 * its id hashes to ({@link Split}) and is written as EOS followed by its tokens. Domain ids are given in the order
 * domains first appear. Documents whose text encodes to no token are skipped. Encoding runs in parallel over
 * batches of documents (the encoder must be thread-safe); the output does not depend on the thread count.
 *
 * <p>Each file is replaced atomically, and {@code manifest.json} is removed before the first shard is replaced and
 * written after the last, so a folder with a manifest always holds the shards it describes; a failed run leaves the
 * old shards (or none) and no manifest.
 */
public final class CorpusShards {
    private static final int BATCH = 256;

    private CorpusShards() {
    }

    /** Told of every source as it starts, and of every document as it is written. */
    public interface Progress {
        default void source(DocumentSource source) {
        }

        /** {@code tokens} counts the document's EOS. */
        default void document(Document document, Split split, long tokens) {
        }
    }

    public static final Progress SILENT = new Progress() {
    };

    /** Shard file of a split in {@code dir}. */
    public static Path shardPath(Path dir, Split split) {
        return dir.resolve(split.stem() + ".shard");
    }

    public static ShardManifest prepare(List<DocumentSource> sources, TextEncoder encoder, Path outDir,
                                        double valFraction, Progress progress) {
        return prepare(sources, encoder, outDir, valFraction, 0, progress);
    }

    /**
     * As {@link #prepare(List, TextEncoder, Path, double, Progress)}, with the split stratified by domain: a domain
     * of n >= 2 documents gets at least {@code min(minValPerDomain, max(1, n / 4))} validation documents, so a small
     * domain is scored too (the stratification alone never takes more than a quarter of a domain). They are the
     * documents whose ids hash lowest in that domain — the plain split's rule with a per-domain threshold, so the
     * plain split's validation documents stay in validation and the choice depends on nothing but the domain's ids.
     * Costs one extra read of the sources.
     */
    public static ShardManifest prepare(List<DocumentSource> sources, TextEncoder encoder, Path outDir,
                                        double valFraction, int minValPerDomain, Progress progress) {
        if (!(valFraction >= 0 && valFraction <= 1)) {
            throw new CorpusException("validation fraction " + valFraction + " outside [0, 1]");
        }
        if (minValPerDomain < 0) {
            throw new CorpusException("minimum validation documents per domain " + minValPerDomain + " must be >= 0");
        }
        Map<String, Double> thresholds = minValPerDomain > 0 ? thresholds(sources, minValPerDomain) : Map.of();
        Map<String, Integer> domainIds = new LinkedHashMap<>();
        Map<Split, ShardWriter> writers = new EnumMap<>(Split.class);
        Map<Split, List<long[]>> counts = new EnumMap<>(Split.class); // per split, per domain id: {documents, tokens}
        try {
            for (Split s : Split.values()) {
                writers.put(s, new ShardWriter(shardPath(outDir, s), encoder.vocabSize(), encoder.eosId()));
                counts.put(s, new ArrayList<>());
            }
            for (DocumentSource source : sources) {
                progress.source(source);
                long written = 0, read = 0;
                try (Stream<Document> docs = source.documents()) {
                    Iterator<Document> it = docs.iterator();
                    List<Document> batch = new ArrayList<>(BATCH);
                    while (it.hasNext()) {
                        batch.add(it.next());
                        if (batch.size() == BATCH || !it.hasNext()) {
                            List<int[]> encoded = batch.parallelStream().map(d -> encoder.encode(d.text())).toList();
                            for (int i = 0; i < batch.size(); i++) {
                                read++;
                                if (write(batch.get(i), encoded.get(i), valFraction, thresholds, domainIds, writers, counts, progress)) {
                                    written++;
                                }
                            }
                            batch.clear();
                        }
                    }
                }
                // a source that gives nothing is a wrong path or format, not a dataset: say so instead of writing
                // shards a training run would find empty
                if (written == 0) {
                    throw new CorpusException("source " + source.name() + " (" + source.reference() + ") gave "
                            + (read == 0 ? "no documents (an empty folder or file, or only hidden or binary files)"
                            : read + " documents, all of them empty") + "; nothing to write to " + outDir);
                }
            }
            // a folder with a manifest is complete: the old manifest goes before the first shard is replaced
            ShardManifest.delete(outDir);
            List<String> domains = List.copyOf(domainIds.keySet());
            Map<String, ShardManifest.SplitStats> splits = new LinkedHashMap<>();
            for (Split s : Split.values()) {
                ShardWriter w = writers.get(s);
                w.commit(domains.size());
                Map<String, ShardManifest.Counts> perDomain = new LinkedHashMap<>();
                List<long[]> c = counts.get(s);
                for (int d = 0; d < domains.size(); d++) {
                    long[] dc = d < c.size() ? c.get(d) : new long[2];
                    perDomain.put(domains.get(d), new ShardManifest.Counts(dc[0], dc[1]));
                }
                splits.put(s.stem(), new ShardManifest.SplitStats(w.path().getFileName().toString(),
                        w.documentCount(), w.tokenCount(), perDomain));
            }
            ShardManifest manifest = new ShardManifest(ShardManifest.FORMAT, ShardManifest.VERSION,
                    new ShardManifest.Tokenizer(encoder.reference(), encoder.vocabSize(), encoder.eosId(),
                            ShardManifest.Tokenizer.EOS_OPENS_DOCUMENT),
                    valFraction,
                    sources.stream().map(s -> new ShardManifest.Source(s.name(), s.reference())).toList(),
                    domains, splits);
            manifest.write(outDir);
            return manifest;
        } finally {
            for (ShardWriter w : writers.values()) {
                w.close();
            }
        }
    }

    /**
     * Per domain, the hash position at or below which a document goes to validation so that the domain has
     * min(minVal, max(1, n / 4)) of them (none when n < 2): the position of that many-th lowest id hash (-1 for
     * none).
     * Empty documents are not counted (they are never written).
     */
    static Map<String, Double> thresholds(List<DocumentSource> sources, int minVal) {
        Map<String, List<Double>> positions = new LinkedHashMap<>();
        for (DocumentSource source : sources) {
            try (Stream<Document> docs = source.documents()) {
                docs.forEach(d -> {
                    if (!d.text().isEmpty()) {
                        positions.computeIfAbsent(d.domain(), k -> new ArrayList<>()).add(Split.position(d.id()));
                    }
                });
            }
        }
        Map<String, Double> out = new LinkedHashMap<>();
        positions.forEach((domain, p) -> {
            int need = p.size() < 2 ? 0 : Math.min(minVal, Math.max(1, p.size() / 4));
            if (need <= 0) {
                out.put(domain, -1.0);
                return;
            }
            p.sort(null);
            out.put(domain, p.get(need - 1));
        });
        return out;
    }

    /** Writes one document; false when it has no tokens (skipped). */
    private static boolean write(Document doc, int[] ids, double valFraction, Map<String, Double> thresholds,
                                 Map<String, Integer> domainIds,
                              Map<Split, ShardWriter> writers, Map<Split, List<long[]>> counts, Progress progress) {
        if (ids.length == 0) {
            return false;
        }
        int domain = domainIds.computeIfAbsent(doc.domain(), k -> domainIds.size());
        Split split = Split.of(doc.id(), valFraction);
        Double t = thresholds.get(doc.domain());
        if (split == Split.TRAIN && t != null && Split.position(doc.id()) <= t) {
            split = Split.VAL;
        }
        try {
            writers.get(split).add(domain, ids);
        } catch (CorpusException e) {
            throw new CorpusException("document '" + doc.id() + "': " + e.getMessage(), e);
        }
        List<long[]> c = counts.get(split);
        while (c.size() <= domain) {
            c.add(new long[2]);
        }
        c.get(domain)[0]++;
        c.get(domain)[1] += ids.length + 1L;
        progress.document(doc, split, ids.length + 1L);
        return true;
    }
}
