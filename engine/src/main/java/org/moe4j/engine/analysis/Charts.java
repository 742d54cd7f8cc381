package org.moe4j.engine.analysis;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import org.knowm.xchart.CategoryChart;
import org.knowm.xchart.CategoryChartBuilder;
import org.knowm.xchart.ChartEncoder;
import org.knowm.xchart.HeatMapChart;
import org.knowm.xchart.HeatMapChartBuilder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.internal.chartpart.IChart;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.markers.SeriesMarkers;

/** The report's charts, drawn with XChart and exported as PNG (base64, to inline in the page). */
final class Charts {
    static final int W = 720, H = 400;

    static {
        System.setProperty("java.awt.headless", "true"); // no display: charts are drawn off screen
    }

    private Charts() {
    }

    /** A line chart: one series per name, x shared or per series. NaN points are left out. */
    static XYChart lines(String title, String xTitle, String yTitle) {
        XYChart ch = new XYChartBuilder().width(W).height(H).title(title).xAxisTitle(xTitle).yAxisTitle(yTitle).build();
        ch.getStyler().setLegendPosition(Styler.LegendPosition.OutsideE);
        ch.getStyler().setMarkerSize(4);
        return ch;
    }

    static void line(XYChart ch, String name, double[] x, double[] y, boolean dashed) {
        List<Double> xs = new ArrayList<>(), ys = new ArrayList<>();
        for (int i = 0; i < x.length; i++)
            if (Double.isFinite(x[i]) && Double.isFinite(y[i])) {
                xs.add(x[i]);
                ys.add(y[i]);
            }
        if (xs.isEmpty()) return;
        XYSeries s = ch.addSeries(name, xs, ys);
        if (xs.size() > 40) s.setMarker(SeriesMarkers.NONE);
        if (dashed) s.setLineStyle(new java.awt.BasicStroke(1.5f, java.awt.BasicStroke.CAP_BUTT,
                java.awt.BasicStroke.JOIN_MITER, 10f, new float[] {6f, 4f}, 0f));
    }

    static XYChart scatter(String title, String xTitle, String yTitle) {
        XYChart ch = lines(title, xTitle, yTitle);
        ch.getStyler().setDefaultSeriesRenderStyle(XYSeries.XYSeriesRenderStyle.Scatter);
        ch.getStyler().setMarkerSize(3);
        return ch;
    }

    static CategoryChart bars(String title, String xTitle, String yTitle) {
        CategoryChart ch = new CategoryChartBuilder().width(W).height(H).title(title).xAxisTitle(xTitle).yAxisTitle(yTitle).build();
        ch.getStyler().setLegendPosition(Styler.LegendPosition.OutsideE);
        return ch;
    }

    /** A heatmap of values[row][col] with row labels (y) and column labels (x). */
    static HeatMapChart heatmap(String title, List<String> cols, List<String> rows, double[][] values) {
        HeatMapChart ch = new HeatMapChartBuilder().width(Math.max(560, 260 + 40 * cols.size()))
                .height(Math.max(360, 140 + 34 * rows.size())).title(title).xAxisTitle("expert").yAxisTitle("domain").build();
        ch.getStyler().setShowValue(false);
        ch.getStyler().setHeatMapValueDecimalPattern("0.000");
        ch.getStyler().setLegendPosition(Styler.LegendPosition.OutsideE);
        List<Number[]> cells = new ArrayList<>();
        double min = Double.POSITIVE_INFINITY, max = Double.NEGATIVE_INFINITY;
        for (int r = 0; r < rows.size(); r++)
            for (int c = 0; c < cols.size(); c++) {
                double v = Double.isFinite(values[r][c]) ? values[r][c] : 0;
                cells.add(new Number[] {c, r, v});
                min = Math.min(min, v);
                max = Math.max(max, v);
            }
        ch.getStyler().setMin(min);
        ch.getStyler().setMax(max > min ? max : min + 1e-9);
        ch.addSeries(title, cols, rows, cells);
        return ch;
    }

    /** PNG bytes of the chart, base64. */
    static String png(IChart ch) {
        try {
            return Base64.getEncoder().encodeToString(ChartEncoder.getBytes(ch, "png"));
        } catch (IOException e) {
            throw new UncheckedIOException("chart '" + title(ch) + "': PNG export failed", e);
        }
    }

    private static String title(IChart ch) {
        return ch instanceof org.knowm.xchart.internal.chartpart.Chart<?, ?> c ? c.getTitle() : "?";
    }
}
