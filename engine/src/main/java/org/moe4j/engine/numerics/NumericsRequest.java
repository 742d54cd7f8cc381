package org.moe4j.engine.numerics;

import java.nio.file.Path;
import org.moe4j.Moe4jException;

/**
 * What one {@code ./moe4j numerics} run is asked: the checkpoint, the tokens, the routing mode and its files, the
 * overrides, and where the results go. Option strings stay raw here; {@link Numerics#run} checks them against the
 * checkpoint's shape so that a message can name the layer count or the expert range.
 *
 * @param kPerLayer    "2,2,1" or null (the checkpoint's k - s in every layer)
 * @param normTopkProb "config", "true" or "false"
 * @param lbScope      "global", "local" or null (the checkpoint's)
 * @param weights      "lb=..,z=..,erc=..,out_z=.." or null (the checkpoint's)
 * @param ercNoise     safetensors with the pinned ERC noise, or null (ERC off)
 * @param grads        where to write d(total)/d(parameter), or null
 */
public record NumericsRequest(Path ckpt, Path tokens, Mode mode, Path pools, Path subset, String kPerLayer,
                              String normTopkProb, String lbScope, String weights, double capacityFactor,
                              boolean docMask, Path ercNoise, Path out, Path grads, boolean dumpRouting) {

    /** standard top-k, EMO document pools of given sizes, or a fixed expert subset. */
    public enum Mode {
        STANDARD, EMO, SUBSET;

        public static Mode parse(String s) {
            return switch (s == null ? "" : s) {
                case "standard" -> STANDARD;
                case "emo" -> EMO;
                case "subset" -> SUBSET;
                default -> throw new Moe4jException("--mode " + s + ": expected standard, emo or subset");
            };
        }

        public String label() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    public NumericsRequest {
        if (ckpt == null) throw new Moe4jException("--ckpt is required (a checkpoint folder)");
        if (tokens == null) throw new Moe4jException("--tokens is required (a tokens JSON file)");
        if (out == null) throw new Moe4jException("--out is required (where RESULT.json goes)");
        if (mode == null) throw new Moe4jException("--mode is required (standard, emo or subset)");
        if (mode == Mode.EMO && pools == null) throw new Moe4jException("--mode emo needs --pools FILE.json");
        if (mode != Mode.EMO && pools != null)
            throw new Moe4jException("--pools " + pools + " is given with --mode " + mode.label() + "; pools need --mode emo");
        if (mode == Mode.SUBSET && subset == null) throw new Moe4jException("--mode subset needs --subset FILE.json");
        if (mode != Mode.SUBSET && subset != null)
            throw new Moe4jException("--subset " + subset + " is given with --mode " + mode.label() + "; a subset needs --mode subset");
        if (!(capacityFactor >= 0) || Double.isInfinite(capacityFactor))
            throw new Moe4jException("--capacity-factor " + capacityFactor + ": must be finite and >= 0 (0 = no capacity)");
        if (normTopkProb == null) normTopkProb = "config";
    }
}
