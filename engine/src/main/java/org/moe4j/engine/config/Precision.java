package org.moe4j.engine.config;

import java.util.Locale;
import org.moe4j.Moe4jException;

/**
 * The precision of a training run's weight products ({@code --precision}).
 *
 * <ul>
 *   <li>{@code FP32}: everything in float32.</li>
 *   <li>{@code BF16}: mixed precision. Master weights, gradients and AdamW state stay float32; a bf16 copy of every
 *   weight matrix (projections, experts, LM head; rounded to nearest even after each optimizer step) and the
 *   activations rounded to bf16 feed the GEMMs, which accumulate in float32. Norms, softmax, attention, the router
 *   (routing decisions are taken on float32 logits), ERC, the losses and all gradient accumulation stay float32.</li>
 * </ul>
 */
public enum Precision {
    FP32, BF16;

    /** "fp32" or "bf16" (any case); {@code origin} names the option or field for the error message. */
    public static Precision parse(String s, String origin) {
        if (s != null) {
            switch (s.trim().toLowerCase(Locale.ROOT)) {
                case "fp32", "f32", "float32" -> {
                    return FP32;
                }
                case "bf16", "bfloat16" -> {
                    return BF16;
                }
                default -> {
                }
            }
        }
        throw new Moe4jException(origin + " '" + s + "': expected fp32 or bf16");
    }

    /** The lower-case name used on the command line and in logs. */
    public String label() {
        return name().toLowerCase(Locale.ROOT);
    }
}
