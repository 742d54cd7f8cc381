package org.moe4j.engine.cli;

import java.nio.file.Path;
import java.util.List;
import org.moe4j.engine.inference.GenerationRequest;
import org.moe4j.engine.inference.GenerationSession;
import org.moe4j.engine.inference.Generator;
import org.moe4j.engine.inference.InferenceModel;
import org.moe4j.engine.inference.Sampling;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.WorkerPool;

/** The README's "Generation as a library" example, verbatim between the markers; GenerateCommandTest runs it. */
final class ReadmeExample {
    private ReadmeExample() {
    }

    static String run(Path checkpoint) {
        StringBuilder out = new StringBuilder();
        // README-BEGIN
        WorkerPool pool = WorkerPool.common();
        try (InferenceModel model = InferenceModel.load(checkpoint, /* bf16 weights */ false);
             Generator gen = model.generator(Generator.Options.defaults(new JavaGemm(pool), pool).withSlots(4))) {
            int[] prompt = model.tokenizer().encode("hello world");
            GenerationRequest greedy = new GenerationRequest(prompt, 32, Sampling.ofGreedy(), false, List.of("\n\n"));
            GenerationRequest sampled = new GenerationRequest(prompt, 32, Sampling.of(0.8, 40, 0.95, 42), false, List.of());
            // sessions submitted together decode together; the listener streams text as it is produced
            GenerationSession a = gen.submit(greedy, (s, id, text) -> out.append(text));
            GenerationSession b = gen.submit(sampled, null);
            gen.runUntilIdle();
            System.out.println(a.text() + " | " + b.text() + " (" + b.finishReason() + ")");
        }
        // README-END
        return out.toString();
    }
}
