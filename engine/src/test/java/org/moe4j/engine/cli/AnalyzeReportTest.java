package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.engine.analysis.Analyzer;
import org.moe4j.engine.train.MetricsLog;
import org.moe4j.engine.train.RoutingSnapshots;
import org.moe4j.engine.train.RunRecorder;
import org.moe4j.io.corpus.Split;

/**
 * train --out with routing snapshots, then analyze: every CSV is written, the metrics log holds every step, and the
 * page, opened in headless Chromium, shows every chart drawn at its size (DOM) and is not blank (screenshot).
 */
class AnalyzeReportTest {
    static final List<String> CSV = List.of("token_specialisation.csv", "position_specialisation.csv",
            "specialisation_summary.csv", "top_tokens.csv", "early_routing.csv", "drops_by_position.csv",
            "cluster_purity.csv", "cluster_summary.csv", "token_clusters.csv", "domain_expert.csv", "training_curves.csv");

    @Test
    void trainsAnalyzesAndTheBrowserDrawsEveryChart(@TempDir Path dir) throws Exception {
        Path data = TrainCommandDataTest.prepare(dir);
        Path ck = dir.resolve("ck");
        TrainCommandDataTest.train("--config", "tiny", "--data", data.toString(), "--steps", "12", "--batch", "2",
                "--seq", "32", "--warmup", "2", "--log-every", "100", "--val-batches", "2", "--gemm", "java",
                "--keep-checkpoints", "3", "--out", ck.toString());
        Path run = RunRecorder.runDir(ck);
        List<String> lines = Files.readAllLines(run.resolve(MetricsLog.FILE_NAME));
        assertEquals(13, lines.size(), "12 steps and one validation: " + lines);
        assertEquals(List.of(4L, 8L, 12L), RoutingSnapshots.list(run).stream().map(RoutingSnapshots.Snapshot::step).toList());

        Path out = dir.resolve("report");
        Analyzer.Options o = new Analyzer.Options(4096, 32, 8, 1.0, 1024, 8, 1024, 2, 1);
        Analyzer.Report r = AnalyzeCommand.analyze(ck, data, null, out, Split.TRAIN, o, "java", false);
        for (String f : CSV) {
            assertTrue(Files.exists(out.resolve(f)), f + " was not written");
            assertTrue(Files.readAllLines(out.resolve(f)).size() > 1, f + " holds no row");
        }
        int layers = 2; // the tiny config
        int want = 2 + 2 + 1 + 2 + 2 * layers + 2; // specialisation, early routing, drops, clusters, heatmaps, curves (+ ERC ε when on)
        assertTrue(r.charts() >= want, r.charts() + " charts, expected at least " + want);

        String chromium = findChromium();
        Assumptions.assumeTrue(chromium != null,
                "chromium is not installed (apt-get install chromium): the report page is not checked in a browser");
        String url = out.resolve("index.html").toUri().toString();
        String dom = run(chromium, dir, "--dump-dom", url);
        Assumptions.assumeTrue(dom != null && dom.contains("<body"), "chromium could not start here: " + dom);
        assertTrue(dom.contains("data-loaded=\"yes\""), "the page's load event did not run");
        Matcher m = Pattern.compile("<img class=\"chart\" alt=\"([^\"]*)\" width=\"(\\d+)\" height=\"(\\d+)\"[^>]*data-drawn=\"(\\d+)x(\\d+)\"").matcher(dom);
        int drawn = 0;
        while (m.find()) {
            drawn++;
            assertEquals(m.group(2) + "x" + m.group(3), m.group(4) + "x" + m.group(5), "chart '" + m.group(1) + "' decoded at another size");
            assertTrue(Integer.parseInt(m.group(4)) > 0 && Integer.parseInt(m.group(5)) > 0, "chart '" + m.group(1) + "' is empty");
        }
        int imgs = dom.split("<img class=\"chart\"", -1).length - 1;
        assertEquals(r.charts(), imgs, "every chart has an <img>");
        assertEquals(imgs, drawn, "every chart was decoded by the browser");

        Path shot = dir.resolve("shot.png");
        run(chromium, dir, "--screenshot=" + shot, "--window-size=1280,2400", "--hide-scrollbars", url);
        assertTrue(Files.exists(shot), "no screenshot");
        BufferedImage img = ImageIO.read(shot.toFile());
        Set<Integer> colours = new HashSet<>();
        for (int y = 0; y < img.getHeight(); y += 3) for (int x = 0; x < img.getWidth(); x += 3) colours.add(img.getRGB(x, y));
        assertTrue(colours.size() > 50, "the screenshot is blank or nearly (" + colours.size() + " colours)");
    }

    static String findChromium() {
        for (String name : new String[] {"chromium", "chromium-browser", "google-chrome"})
            for (String d : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator))
                if (Files.isExecutable(Path.of(d, name))) return Path.of(d, name).toString();
        return null;
    }

    /** Runs headless chromium with its own profile folder; returns stdout, or null when it did not finish. */
    static String run(String chromium, Path dir, String... args) throws IOException, InterruptedException {
        List<String> cmd = new java.util.ArrayList<>(List.of(chromium, "--headless", "--disable-gpu", "--no-sandbox",
                "--disable-dev-shm-usage", "--no-first-run", "--user-data-dir=" + dir.resolve("chromium-profile")));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectError(dir.resolve("chromium.err").toFile()).start();
        byte[] outBytes = p.getInputStream().readAllBytes();
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            return null;
        }
        return new String(outBytes, StandardCharsets.UTF_8);
    }
}
