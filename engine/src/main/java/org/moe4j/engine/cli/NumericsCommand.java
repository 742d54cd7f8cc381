package org.moe4j.engine.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.moe4j.engine.numerics.Numerics;
import org.moe4j.engine.numerics.NumericsRequest;
import org.moe4j.simd.WorkerPool;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code ./moe4j numerics}: losses, logits and gradients of a checkpoint on given tokens, every random choice pinned. */
@Command(name = "numerics", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Reports the losses, logits and gradients of a checkpoint on given tokens, with every random "
                + "choice pinned (pool sizes, k' per layer, ERC noise), to compare one implementation with another.",
                "Writes RESULT.json (--out) and, with --grads, d(total)/d(parameter) as F32 safetensors under the HF names."})
public final class NumericsCommand implements Callable<Integer> {
    @Option(names = "--ckpt", required = true, paramLabel = "DIR",
            description = "checkpoint folder in the HF/EMO layout (config.json + safetensors; F32/BF16/F16)")
    Path ckpt;

    @Option(names = "--tokens", required = true, paramLabel = "FILE.json",
            description = "{\"tokens\": [[ids...], ...], \"eos_id\": N}; an EOS opens the next document")
    Path tokens;

    @Option(names = "--mode", defaultValue = "standard", paramLabel = "MODE",
            description = "standard | emo | subset (default: ${DEFAULT-VALUE})")
    String mode;

    @Option(names = "--pools", paramLabel = "FILE.json",
            description = "emo: {\"pool_sizes\": P | [P per layer] | [[[P per document] per sequence] per layer]}")
    Path pools;

    @Option(names = "--subset", paramLabel = "FILE.json",
            description = "subset: {\"experts\": [ids]} or {\"layers\": [[ids] per layer]}, full-model ids, shared included")
    Path subset;

    @Option(names = "--k-per-layer", paramLabel = "K,K,...",
            description = "routed k' per layer, shared experts not counted (default: the checkpoint's k - s)")
    String kPerLayer;

    @Option(names = "--norm-topk-prob", defaultValue = "config", paramLabel = "config|true|false",
            description = "renormalise the picked gates (default: ${DEFAULT-VALUE})")
    String normTopkProb;

    @Option(names = "--lb-scope", paramLabel = "global|local", description = "load-balance scope (default: the checkpoint's)")
    String lbScope;

    @Option(names = "--weights", paramLabel = "lb=..,z=..,erc=..,out_z=..",
            description = "loss weights; omitted keys keep the checkpoint's (EMO: lb 0.1, z 0.001, erc 1, out_z 0)")
    String weights;

    @Option(names = "--capacity-factor", defaultValue = "0", paramLabel = "CF",
            description = "capacity factor, one sequence per routing group (default: 0 = no capacity)")
    double capacityFactor;

    @Option(names = "--doc-mask", description = "attend only within the document")
    boolean docMask;

    @Option(names = "--erc-noise", paramLabel = "FILE.safetensors",
            description = "model.layers.{l}.erc_noise [E-s, d], u in [-1, 1]: delta = 1 + eps*u (without it ERC is off)")
    Path ercNoise;

    @Option(names = "--out", required = true, paramLabel = "RESULT.json", description = "where the result JSON goes")
    Path out;

    @Option(names = "--grads", paramLabel = "OUT.safetensors", description = "write d(total)/d(parameter), F32, HF names")
    Path grads;

    @Option(names = "--dump-routing", description = "add the picked experts and gates of every layer and position")
    boolean dumpRouting;

    @Override
    public Integer call() {
        NumericsRequest q = new NumericsRequest(ckpt, tokens, NumericsRequest.Mode.parse(mode), pools, subset, kPerLayer,
                normTopkProb, lbScope, weights, capacityFactor, docMask, ercNoise, out, grads, dumpRouting);
        Numerics.Outcome o = Numerics.run(q, WorkerPool.common());
        var loss = o.result().get("loss");
        System.out.printf("numerics: total %s (ce %s, out_z %s, lb %s, z %s, erc %s; aux unweighted); wrote %s%s%n",
                loss.get("total"), loss.get("ce"), loss.get("out_z"), loss.get("lb"), loss.get("z"), loss.get("erc"),
                out, grads == null ? "" : " and " + grads);
        return 0;
    }
}
