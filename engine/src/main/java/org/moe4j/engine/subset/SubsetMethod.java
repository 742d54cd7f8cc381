package org.moe4j.engine.subset;

import java.util.Locale;
import org.moe4j.Moe4jException;

/** How experts are chosen (ALGORITHMS.md section 5). */
public enum SubsetMethod {
    /** EMO's main method: layer by layer, earlier layers already pruned, mean router probability. */
    LAYERWISE,
    /** The same score from one pass of the unpruned model. */
    GLOBAL,
    /** Top-k pick counts per token, one pass (ours). */
    FREQUENCY,
    /** REAP: mean gate · ‖expert output‖₂ over the tokens routed to the expert, layer by layer as layerwise. */
    REAP,
    /** Uniformly random routed experts (a baseline), from the seed. */
    RANDOM;

    /** Whether layer l is scored with the layers before it already pruned. */
    public boolean layerByLayer() {
        return this == LAYERWISE || this == REAP;
    }

    public String cliName() {
        return name().toLowerCase(Locale.ROOT);
    }

    public static SubsetMethod parse(String s, String option) {
        for (SubsetMethod m : values()) if (m.cliName().equals(s)) return m;
        throw new Moe4jException(option + " " + s + ": expected layerwise, global, frequency, reap or random");
    }
}
