package org.moe4j.engine.subset;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.io.corpus.Document;
import org.moe4j.io.corpus.FolderSource;
import org.moe4j.io.corpus.JsonlSource;
import org.moe4j.io.corpus.ShardManifest;
import org.moe4j.io.corpus.Split;
import org.moe4j.io.corpus.TokenShard;
import org.moe4j.io.tokenizer.BpeTokenizer;

/**
 * Calibration documents as token sequences: a text file (one document), a folder (one document per file), a JSONL
 * file (one per line's "text"), or {@code data:DIR:DOMAIN[:N]} — the first N documents (default all) of one domain of
 * a {@code prepare-data} folder, from its train split (its validation split when train has none). Text is encoded
 * with the checkpoint's tokenizer and, like the shards, each document opens with EOS. A document longer than the
 * model's maxSeq is cut into windows of maxSeq tokens, each run as its own sequence.
 *
 * @param documents   token windows, each 1..maxSeq long
 * @param description what was read, for subset.json
 * @param tokens      tokens in all windows
 */
public record Calibration(List<int[]> documents, String description, long tokens) {
    /** Loads {@code spec} (see the class comment); {@code tokenizer} may be null when no text needs encoding. */
    public static Calibration load(String spec, BpeTokenizer tokenizer, ModelConfig c, String option) {
        List<int[]> docs = new ArrayList<>();
        String desc;
        if (spec.startsWith("data:")) {
            String[] p = spec.substring(5).split(":");
            if (p.length < 2 || p.length > 3)
                throw new Moe4jException(option + " " + spec + ": expected data:DIR:DOMAIN or data:DIR:DOMAIN:N");
            int n = Integer.MAX_VALUE;
            if (p.length == 3) {
                try {
                    n = Integer.parseInt(p[2]);
                } catch (NumberFormatException e) {
                    n = -1;
                }
                if (n < 1) throw new Moe4jException(option + " " + spec + ": N = '" + p[2] + "' must be an integer >= 1");
            }
            Path dir = Path.of(p[0]);
            ShardManifest m = manifest(dir, option);
            int dom = domainId(m, p[1], dir, option);
            Split split = m.splits().containsKey(Split.TRAIN.stem()) && count(m, Split.TRAIN, p[1]) > 0 ? Split.TRAIN : Split.VAL;
            try (TokenShard shard = m.open(dir, split)) {
                for (int[] d : domainDocuments(shard, dom, n)) docs.add(d);
            }
            desc = "data:" + dir.toAbsolutePath().normalize() + ":" + p[1] + " (" + split.stem() + " split, " + docs.size()
                    + " document" + (docs.size() == 1 ? "" : "s") + ")";
        } else {
            Path path = Path.of(spec);
            if (!Files.exists(path))
                throw new Moe4jException(option + " " + spec + ": no such file or folder (a text file, a folder, a .jsonl "
                        + "file or data:DIR:DOMAIN[:N])");
            List<String> texts = new ArrayList<>();
            if (Files.isDirectory(path)) {
                try (Stream<Document> s = new FolderSource(path).documents()) {
                    s.forEach(d -> texts.add(d.text()));
                }
                desc = "folder:" + path.toAbsolutePath().normalize();
            } else if (path.getFileName().toString().endsWith(".jsonl")) {
                try (Stream<Document> s = new JsonlSource(path).documents()) {
                    s.forEach(d -> texts.add(d.text()));
                }
                desc = "jsonl:" + path.toAbsolutePath().normalize();
            } else {
                try {
                    texts.add(Files.readString(path, StandardCharsets.UTF_8));
                } catch (IOException e) {
                    throw new Moe4jException(option + " " + spec + ": cannot read as UTF-8 text: " + e.getMessage(), e);
                }
                desc = "file:" + path.toAbsolutePath().normalize();
            }
            if (tokenizer == null)
                throw new Moe4jException(option + " " + spec + ": text needs the checkpoint's tokenizer.json, and it has none "
                        + "(give data:DIR:DOMAIN of a prepare-data folder instead)");
            for (String t : texts) {
                int[] ids = tokenizer.encode(t);
                if (ids.length == 0) continue;
                int[] doc = new int[ids.length + 1];
                doc[0] = c.eosId();
                System.arraycopy(ids, 0, doc, 1, ids.length);
                docs.add(doc);
            }
            desc += " (" + docs.size() + " document" + (docs.size() == 1 ? "" : "s") + ")";
        }
        if (docs.isEmpty())
            throw new Moe4jException(option + " " + spec + ": the calibration source is empty (no document with a token of "
                    + "the vocabulary)");
        for (int[] d : docs)
            for (int i = 0; i < d.length; i++)
                if (d[i] < 0 || d[i] >= c.vocab())
                    throw new Moe4jException(option + " " + spec + ": token " + d[i] + " is outside the model's vocabulary [0, "
                            + c.vocab() + ") (data prepared with another tokenizer?)");
        List<int[]> windows = windows(docs, c.maxSeq());
        long tokens = 0;
        for (int[] w : windows) tokens += w.length;
        return new Calibration(windows, desc, tokens);
    }

    /** Documents cut into windows of at most {@code maxLen} tokens. */
    public static List<int[]> windows(List<int[]> docs, int maxLen) {
        List<int[]> out = new ArrayList<>();
        for (int[] d : docs)
            for (int at = 0; at < d.length; at += maxLen)
                out.add(java.util.Arrays.copyOfRange(d, at, Math.min(d.length, at + maxLen)));
        return out;
    }

    /** The manifest of a prepare-data folder, with an error that says what was expected. */
    public static ShardManifest manifest(Path dir, String option) {
        if (!Files.isRegularFile(dir.resolve(ShardManifest.FILE_NAME)))
            throw new Moe4jException(option + " " + dir + ": no " + ShardManifest.FILE_NAME + " (expected a folder written by "
                    + "./moe4j prepare-data)");
        return ShardManifest.read(dir);
    }

    /** The id of domain {@code name}; an unknown domain names the ones there are. */
    public static int domainId(ShardManifest m, String name, Path dir, String option) {
        int i = m.domains().indexOf(name);
        if (i < 0)
            throw new Moe4jException(option + ": domain '" + name + "' does not exist in " + dir.resolve(ShardManifest.FILE_NAME)
                    + " (domains: " + String.join(", ", m.domains()) + ")");
        return i;
    }

    /** Documents of {@code domain} in the manifest's counts of {@code split}. */
    public static long count(ShardManifest m, Split split, String domain) {
        ShardManifest.SplitStats st = m.splits().get(split.stem());
        if (st == null || st.domains() == null) return 0;
        ShardManifest.Counts n = st.domains().get(domain);
        return n == null ? 0 : n.documents();
    }

    /** The first {@code max} documents of domain id {@code domain} in the shard, in shard order, EOS first. */
    public static List<int[]> domainDocuments(TokenShard shard, int domain, int max) {
        List<int[]> out = new ArrayList<>();
        for (long d = 0; d < shard.documentCount() && out.size() < max; d++) {
            if (shard.documentDomain(d) != domain) continue;
            long a = shard.documentStart(d), b = shard.documentEnd(d);
            int[] t = new int[(int) (b - a)];
            shard.read(a, t, 0, t.length);
            out.add(t);
        }
        return out;
    }
}
