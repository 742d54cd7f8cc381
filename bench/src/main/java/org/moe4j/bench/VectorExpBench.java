package org.moe4j.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.moe4j.simd.Softmax;
import org.moe4j.simd.Tensor;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Question: is moe4j's polynomial vector exp (range reduction + Cephes polynomial, used by Softmax, SwiGlu and
 * CrossEntropy) faster than the Vector API's own {@code lanewise(EXP)} on JDK 25?
 *
 * <p>Hypothesis (before measuring): {@code lanewise(EXP)} costs a stub call per vector, so the inlined
 * ~20-instruction polynomial is faster. {@code lanewiseExpSum} / {@code polyExpSum} isolate the exp, summing
 * exp(x) over 8192 floats; {@code kernelSoftmax} is the Softmax kernel on one 8192-wide row.
 *
 * <p>Result (2-core Zen 5, AVX-512, JDK 25, shared machine, short run): the hypothesis is wrong on x86-64:
 * lanewiseExpSum ~2.0 us vs polyExpSum ~3.9 us per 8192 floats, both 0 B/op; lanewise(EXP) is an SVML
 * stub, accurate to ~6e-8 relative. The kernels nevertheless use the polynomial everywhere (issue "Hardening"):
 * before C2 compiles it, lanewise(EXP) runs {@code Math.exp} per lane, which differs from the SVML stub in the last
 * bit in ~1% of lanes, so results depended on JIT state and a run resumed in a new JVM drifted from a straight run.
 * The polynomial uses only exactly rounded operations and gives the same bits in every mode.
 *
 * <p>Run: {@code ./moe4j bench VectorExpBench -f 1 -wi 2 -i 3 -w 1s -r 1s -prof gc}
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class VectorExpBench {
    private static final VectorSpecies<Float> F = org.moe4j.simd.Simd.FLOAT;
    private static final int N = 8192;
    private Arena arena;
    private MemorySegment x;
    private MemorySegment y;
    private float[] xa;

    @Setup(Level.Trial)
    public void setUp() {
        arena = Arena.ofShared();
        x = arena.allocate(4L * N, 64);
        y = arena.allocate(4L * N, 64);
        xa = new float[N];
        Random rnd = new Random(1);
        for (int i = 0; i < N; i++) {
            xa[i] = (float) (rnd.nextGaussian() * 3 - 10);
            x.setAtIndex(Tensor.FLOAT, i, xa[i]);
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        arena.close();
    }

    @Benchmark
    public void kernelSoftmax() {
        Softmax.forward(x, 0, N, y, 0, N, N, 0, 1);
    }

    @Benchmark
    public float lanewiseExpSum() {
        FloatVector acc = FloatVector.zero(F);
        for (int i = 0; i < N; i += F.length()) {
            acc = acc.add(FloatVector.fromArray(F, xa, i).lanewise(VectorOperators.EXP));
        }
        return acc.reduceLanes(VectorOperators.ADD);
    }

    @Benchmark
    public float polyExpSum() {
        // the same polynomial as org.moe4j.simd.VectorMath.exp (package-private there), copied for this comparison
        FloatVector acc = FloatVector.zero(F);
        for (int i = 0; i < N; i += F.length()) {
            acc = acc.add(exp(FloatVector.fromArray(F, xa, i)));
        }
        return acc.reduceLanes(VectorOperators.ADD);
    }

    private static FloatVector exp(FloatVector x) {
        FloatVector xc = x.max(-110f).min(100f);
        FloatVector t = xc.fma(1.44269504088896341f, 12582912f);
        FloatVector n = t.sub(12582912f);
        FloatVector r = xc.sub(n.mul(0.693359375f));
        r = n.fma(FloatVector.broadcast(F, 2.12194440e-4f), r);
        FloatVector p = r.fma(1.9875691500E-4f, 1.3981999507E-3f);
        p = p.fma(r, FloatVector.broadcast(F, 8.3334519073E-3f));
        p = p.fma(r, FloatVector.broadcast(F, 4.1665795894E-2f));
        p = p.fma(r, FloatVector.broadcast(F, 1.6666665459E-1f));
        p = p.fma(r, FloatVector.broadcast(F, 5.0000001201E-1f));
        p = p.fma(r.mul(r), r).add(1f);
        var ni = t.reinterpretAsInts().sub(0x4B400000);
        var n1 = ni.lanewise(VectorOperators.ASHR, 1);
        var n2 = ni.sub(n1);
        FloatVector s1 = n1.add(127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
        FloatVector s2 = n2.add(127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
        return p.mul(s1).mul(s2);
    }
}
