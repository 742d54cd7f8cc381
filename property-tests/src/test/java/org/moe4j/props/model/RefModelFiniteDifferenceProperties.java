package org.moe4j.props.model;

import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.ToDoubleFunction;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.statistics.Statistics;
import org.moe4j.props.model.RefModelCases.Case;
import org.moe4j.props.model.RefModelCases.Check;
import org.moe4j.props.model.RefModelCases.Mode;
import org.moe4j.reference.model.RefModel;
import org.moe4j.reference.model.RefResult;
import org.moe4j.reference.model.RefSpec;

/**
 * The reference model's analytic gradients against central finite differences, on random tiny models in every
 * routing and loss mode. Discrete choices (pools, top-k, drops, ERC hinges) carry no gradient, so an entry whose
 * ±h nudge changes one of them is skipped; ERC's ε is held at its unperturbed value, as the gradient treats it.
 */
class RefModelFiniteDifferenceProperties {
    static final double H = 1e-6, RTOL = 1e-5, ATOL = 1e-8;

    /** Loss weights far above the training ones, so every component moves the total visibly. */
    static final double W_LB = 0.5, W_Z = 0.3, W_ERC = 0.7, W_OUT_Z = 0.2;

    @Property(tries = 12)
    void totalGradientMatchesFiniteDifferencesInEveryMode(@ForAll long seed) {
        for (Mode mode : Mode.values()) {
            Case c = RefModelCases.random(mode, seed, W_LB, W_Z, W_ERC, W_OUT_Z);
            RefResult r = c.run();
            Check check = RefModelCases.finiteDifferences(c, r.grads(), RefResult::total, 2, seed, H, RTOL, ATOL);
            assertNull(check.firstFailure(), check.firstFailure());
            Statistics.label("entries skipped at a kink").collect(check.skipped() > 0);
            Statistics.label("capacity drops").collect(Arrays.stream(r.dropsAtPosition()).flatMapToInt(Arrays::stream).sum() > 0);
        }
    }

    /**
     * Each loss component on its own: its analytic gradient is grads(weight 1) - grads(weight 0) (ce: all weights 0),
     * checked against differences of the component's own value. A component whose value and weight were both
     * wrong in the same way could hide in the total; here it cannot.
     */
    @Property(tries = 15)
    void everyLossComponentHasItsOwnGradient(@ForAll long seed) {
        Case none = RefModelCases.random(Mode.ALL, seed, 0, 0, 0, 0);
        Map<String, double[]> gNone = none.run().grads();
        check(none, gNone, RefResult::ce, seed);
        check(withWeights(none, 1, 0, 0, 0), minus(withWeights(none, 1, 0, 0, 0).run().grads(), gNone), RefResult::lb, seed);
        check(withWeights(none, 0, 1, 0, 0), minus(withWeights(none, 0, 1, 0, 0).run().grads(), gNone), RefResult::z, seed);
        check(withWeights(none, 0, 0, 1, 0), minus(withWeights(none, 0, 0, 1, 0).run().grads(), gNone), RefResult::erc, seed);
        check(withWeights(none, 0, 0, 0, 1), minus(withWeights(none, 0, 0, 0, 1).run().grads(), gNone), RefResult::outZ, seed);
    }

    private static void check(Case c, Map<String, double[]> analytic, ToDoubleFunction<RefResult> f, long seed) {
        Check check = RefModelCases.finiteDifferences(c, analytic, f, 2, seed, H, RTOL, ATOL);
        assertNull(check.firstFailure(), check.firstFailure());
        assertTrue(check.compared() > 0, "every entry skipped: " + c);
    }

    static Case withWeights(Case c, double wLb, double wZ, double wErc, double wOutZ) {
        RefSpec s = c.spec();
        RefSpec w = new RefSpec(s.vocab(), s.d(), s.layers(), s.heads(), s.kvHeads(), s.experts(), s.shared(), s.k(),
                s.hidden(), s.ropeTheta(), s.qkNorm(), s.normEps(), s.eosId(), s.normalizeTopK(), s.softmaxOverAll(),
                s.lbLocal(), s.capacityFactor(), s.docMask(), wLb, wZ, wErc, wOutZ);
        return new Case(c.mode(), w, c.params(), c.tokens(), c.draws());
    }

    static Map<String, double[]> minus(Map<String, double[]> a, Map<String, double[]> b) {
        Map<String, double[]> out = new LinkedHashMap<>();
        for (String name : a.keySet()) {
            double[] x = a.get(name).clone(), y = b.get(name);
            for (int i = 0; i < x.length; i++) x[i] -= y[i];
            out.put(name, x);
        }
        return out;
    }

    /** The order of shapes() is the order of randomParams() and of grads. */
    @Property(tries = 5)
    void gradsCoverEveryParameter(@ForAll long seed) {
        Case c = RefModelCases.random(Mode.ALL, seed, W_LB, W_Z, W_ERC, W_OUT_Z);
        assertTrue(RefModel.shapes(c.spec()).keySet().stream().toList()
                .equals(c.run().grads().keySet().stream().toList()));
    }
}
