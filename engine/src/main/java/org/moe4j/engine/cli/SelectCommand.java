package org.moe4j.engine.cli;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.subset.BudgetSweep;
import org.moe4j.engine.subset.Calibration;
import org.moe4j.engine.subset.OutputFolders;
import org.moe4j.engine.subset.Pruner;
import org.moe4j.engine.subset.SubsetFile;
import org.moe4j.engine.subset.SubsetMethod;
import org.moe4j.engine.subset.SubsetSelector;
import org.moe4j.nativ.GemmBackends;
import org.moe4j.simd.WorkerPool;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code ./moe4j select}: chooses K experts per layer from a few calibration documents. */
@Command(name = "select", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Chooses an expert subset (K experts per layer, shared ones always kept) from calibration text "
                + "and writes it as subset.json (generate/numerics/prune --subset read it); --prune-out also writes the "
                + "pruned checkpoint."})
public final class SelectCommand implements Callable<Integer> {
    @Option(names = "--ckpt", required = true, paramLabel = "DIR", description = "checkpoint folder")
    Path ckpt;

    @Option(names = "--calib", paramLabel = "SOURCE",
            description = "calibration: a text file, a folder, a .jsonl file, or data:DIR:DOMAIN[:N] (N documents of one "
                    + "domain of a prepare-data folder); one document is enough. Not needed for --method random")
    String calib;

    @Option(names = "--keep", paramLabel = "K|FRACTION",
            description = "experts kept per layer, shared included: an integer, or a fraction of E such as 0.25 or 1/4")
    String keep;

    @Option(names = "--budget", paramLabel = "MEMORY",
            description = "instead of --keep: sweep K and k' on held-out calibration tokens, write the Pareto front "
                    + "(resident weights, decode tokens/s, calibration perplexity) as OUT.budget.csv and OUT.budget.svg, "
                    + "and choose the lowest perplexity that fits MEMORY (e.g. 200MB, 1.5GB)")
    String budget;

    @Option(names = "--method", defaultValue = "layerwise", paramLabel = "layerwise|global|frequency|reap|random",
            description = "layerwise (EMO; default), global, frequency, reap (REAP) or random")
    String method;

    @Option(names = "--seed", defaultValue = "0", paramLabel = "S", description = "seed of --method random (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--out", required = true, paramLabel = "subset.json", description = "where to write the subset")
    Path out;

    @Option(names = "--prune-out", paramLabel = "DIR", description = "also write the pruned checkpoint here")
    Path pruneOut;

    @Override
    public Integer call() {
        SubsetMethod m = SubsetMethod.parse(method, "--method");
        String stem = out.toString().replaceFirst("\\.json$", "");
        Path sweepCsv = Path.of(stem + ".budget.csv"), sweepSvg = Path.of(stem + ".budget.svg");
        OutputFolders.requireOwnFile(out, "--out", "select", f -> OutputFolders.jsonObjectWith(f, false, "layers", "method", "keep"));
        if (budget != null) {
            OutputFolders.requireOwnFile(sweepCsv, "--out", "select", f -> OutputFolders.firstLineIs(f, BudgetSweep.CSV_HEADER));
            OutputFolders.requireOwnFile(sweepSvg, "--out", "select", f -> OutputFolders.startContains(f, BudgetSweep.SVG_MARKER));
        }
        if (pruneOut != null) OutputFolders.checkReplaceable(pruneOut, "--prune-out");
        if ((keep == null) == (budget == null)) throw new Moe4jException("give one of --keep K and --budget MEMORY");
        long budgetBytes = budget == null ? 0 : BudgetSweep.parseBytes(budget, "--budget");
        if (calib == null && (m != SubsetMethod.RANDOM || budget != null))
            throw new Moe4jException("--calib is required for " + (budget != null ? "--budget" : "--method " + m.cliName()));
        WorkerPool pool = WorkerPool.common();
        SubsetSelector.Selection sel;
        Calibration cal = null;
        int[] routedK = null;
        try (InferenceModel model = InferenceModel.load(ckpt, false)) {
            ModelConfig c = model.config();
            int k = keep == null ? 0 : SubsetSelector.parseKeep(keep, c, "--keep");
            if (calib != null) cal = Calibration.load(calib, model.tokenizer(), c, "--calib");
            GemmBackends.Choice backend = GemmBackends.fromEnvironment(pool);
            System.err.printf("moe4j select: %s, %s of %d, method %s%s%n", model, keep != null ? "K = " + k : "budget " + budget,
                    c.experts(), m.cliName(), cal == null ? "" : ", calibration " + cal.description() + ", " + cal.tokens() + " tokens");
            if (budget == null) {
                sel = SubsetSelector.select(model.weights(), cal == null ? List.of() : cal.documents(), k, m, seed, null,
                        backend.gemm(), pool);
            } else {
                List<BudgetSweep.Point> points = BudgetSweep.sweep(model.weights(), cal.documents(), m, seed, backend.gemm(), pool);
                BudgetSweep.Point best = BudgetSweep.choose(points, budgetBytes, "--budget " + budget);
                System.out.print(BudgetSweep.table(points, best));
                OutputFolders.writeAtomically(sweepCsv,
                        BudgetSweep.csv(points).getBytes(java.nio.charset.StandardCharsets.UTF_8), "--out");
                OutputFolders.writeAtomically(sweepSvg,
                        BudgetSweep.svg(points, budgetBytes, best).getBytes(java.nio.charset.StandardCharsets.UTF_8), "--out");
                System.out.println("wrote " + stem + ".budget.csv and " + stem + ".budget.svg; chose K = " + best.keep()
                        + ", k' = " + best.kLabel() + (best.uniformK() ? "" : " (per layer)"));
                routedK = best.kPerLayer();
                sel = best.selection() != null ? best.selection() : everyExpert(c, m);
            }
        }
        String hash = OutputFolders.sourceHash(ckpt);
        ObjectNode json = SubsetFile.toJson(sel, cal, ckpt, hash, seed);
        if (budget != null) {
            json.put("budget_bytes", budgetBytes);
            com.fasterxml.jackson.databind.node.ArrayNode kpl = json.putArray("k_per_layer");
            for (int v : routedK) kpl.add(v);
        }
        MoeModel pruned = null;
        if (pruneOut != null) {
            try (MoeModel full = ModelCheckpoint.importCheckpoint(ckpt, null, false).model()) {
                pruned = Pruner.prune(full, sel.kept(), false, routedK); // null: each layer's own k'
            }
        }
        try {
            SubsetFile.write(out, json, "--out");
            for (int l = 0; l < sel.kept().length; l++)
                System.out.println("layer " + l + ": " + java.util.Arrays.toString(sel.kept()[l]));
            System.out.println("wrote " + out);
            if (pruned != null) {
                Pruner.write(pruneOut, pruned, ckpt, Pruner.metadata(hash, ckpt, m.cliName(),
                        cal == null ? null : cal.description(), sel.kept()));
                ModelConfig pc = pruned.config();
                System.out.println("wrote the pruned checkpoint " + pruneOut + " (num_experts " + pc.experts()
                        + ", num_experts_per_tok " + pc.k()
                        + (pc.layerExperts() == null ? "" : ", experts per layer " + pc.layerExperts())
                        + (pc.layerK() == null ? "" : ", experts per token per layer " + pc.layerK()) + ")");
            }
        } finally {
            if (pruned != null) pruned.close();
        }
        return 0;
    }

    /** K = E: every expert, no score. */
    private static SubsetSelector.Selection everyExpert(ModelConfig c, SubsetMethod m) {
        int[][] kept = new int[c.layers()][];
        double[][] scores = new double[c.layers()][];
        for (int l = 0; l < c.layers(); l++) {
            kept[l] = java.util.stream.IntStream.range(0, c.experts(l)).toArray();
            scores[l] = new double[c.routedExperts(l)];
            java.util.Arrays.fill(scores[l], Double.NaN);
        }
        return new SubsetSelector.Selection(m, c.experts(), kept, scores);
    }
}
