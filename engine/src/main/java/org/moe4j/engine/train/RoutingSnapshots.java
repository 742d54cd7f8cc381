package org.moe4j.engine.train;

import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.moe4j.Moe4jException;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.simd.DType;
import org.moe4j.simd.Tensor;

/**
 * Router snapshots of a run: {@code routing-snapshots/step-XXXXXX.safetensors} in the run folder ({@link RunRecorder}), each layer's
 * router matrix [E, d] (F32) under its parameter name — kilobytes per snapshot, where a full checkpoint would be the
 * whole model. {@code ./moe4j analyze --run} routes with each snapshot's routers (early routing learning).
 */
public final class RoutingSnapshots {
    public static final String DIR = "routing-snapshots";
    private static final Pattern NAME = Pattern.compile("step-(\\d+)\\.safetensors");

    /** One snapshot file and the step it was taken after. */
    public record Snapshot(long step, Path file) {
    }

    private RoutingSnapshots() {
    }

    /** Writes the routers of {@code model} as the snapshot of {@code step} (after that many optimizer steps). */
    public static Path save(Path runDir, long step, MoeModel model) {
        ParamLayout layout = model.layout();
        int L = layout.config().layers();
        Map<String, Tensor> t = new LinkedHashMap<>();
        for (int l = 0; l < L; l++) {
            ParamLayout.Entry e = layout.entry(ParamLayout.router(l));
            MemorySegment seg = model.params().asSlice(e.offset() * Float.BYTES, e.numel() * Float.BYTES);
            t.put(e.name(), Tensor.of(seg, DType.F32, e.shape()));
        }
        Path f = runDir.resolve(DIR).resolve(String.format(java.util.Locale.ROOT, "step-%06d.safetensors", step));
        org.moe4j.io.safetensors.SafetensorsWriter.write(f, t, Map.of("step", Long.toString(step), "format", "moe4j-routing-snapshot"));
        return f;
    }

    /** The snapshots in {@code runDir/routing-snapshots}, by step (empty when there are none). */
    public static List<Snapshot> list(Path runDir) {
        Path d = runDir.resolve(DIR);
        List<Snapshot> out = new ArrayList<>();
        if (!Files.isDirectory(d)) return out;
        try (var s = Files.list(d)) {
            s.forEach(p -> {
                Matcher m = NAME.matcher(p.getFileName().toString());
                if (m.matches()) out.add(new Snapshot(Long.parseLong(m.group(1)), p));
            });
        } catch (java.io.IOException e) {
            throw new Moe4jException(d + ": cannot list the routing snapshots: " + e.getMessage(), e);
        }
        out.sort(java.util.Comparator.comparingLong(Snapshot::step));
        return out;
    }

    /**
     * Deletes the snapshots taken after {@code step} (all of them for a fresh run, step 0): a run that starts again in
     * the same folder must not mix its snapshots with an earlier run's.
     */
    public static void dropAfter(Path runDir, long step) {
        for (Snapshot sn : list(runDir)) {
            if (sn.step() <= step) continue;
            try {
                Files.deleteIfExists(sn.file());
            } catch (java.io.IOException e) {
                throw new Moe4jException(sn.file() + ": cannot delete a stale routing snapshot: " + e.getMessage(), e);
            }
        }
    }
}
