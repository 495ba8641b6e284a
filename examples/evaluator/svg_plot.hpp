#pragma once
// A small, deterministic SVG line-plot writer (no dependency): one polyline
// (through every point, or through the envelope only) with circle markers per
// series, optional vertical error bars, an optional
// dashed horizontal reference line, axes with "nice" ticks, and a legend.
// Coordinates are printed with two decimals, so the same data always gives
// the same bytes.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace qaq::eval {

struct plot_point {
    double x = 0, y = 0;
    double error = 0;  ///< half-height of the error bar (0: none)
};

struct plot_series {
    std::string name;
    std::vector<plot_point> points;  ///< drawn in x order
};

struct plot_spec {
    std::string title, x_label, y_label;
    std::vector<plot_series> series;
    bool has_reference = false;
    double reference_y = 0;
    std::string reference_label;
    /// false: the line joins every point in x order; true: only the upper-right
    /// envelope (points no other point of the series beats in both x and y).
    bool envelope_line = false;
    int width = 760, height = 480;
};

inline std::string svg_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&#39;"; break;
            default: out.push_back(c);
        }
    }
    return out;
}

namespace detail {

inline std::string num(double v) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.2f", std::abs(v) < 0.005 ? 0.0 : v);
    return buffer;
}

inline std::string tick_label(double v, double step) {
    char buffer[32];
    // The fewest decimals that write every multiple of the step exactly
    // (a step of 0.025 needs three: 0.375, not 0.38).
    int decimals = 0;
    for (double scaled = step; decimals < 6 && std::abs(scaled - std::round(scaled)) > 1e-6 * scaled; scaled *= 10)
        ++decimals;
    std::snprintf(buffer, sizeof buffer, "%.*f", decimals, std::abs(v) < step * 1e-9 ? 0.0 : v);
    return buffer;
}

/// A 1-2-5 step giving about `target` intervals over [lo, hi].
inline double nice_step(double lo, double hi, int target = 6) {
    const double raw = (hi - lo) / target;
    const double p = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
        if (raw <= m * p) return m * p;
    return 10 * p;
}

inline void extend(double& lo, double& hi) {
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-12) {
        const double pad = std::max(std::abs(lo) * 0.1, 0.5);
        lo -= pad, hi += pad;
    }
}

}  // namespace detail

inline const char* series_color(std::size_t i) {
    static const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    return palette[i % 10];
}

inline std::string render_svg(const plot_spec& p) {
    using detail::num;
    double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
    for (const auto& s : p.series)
        for (const auto& pt : s.points) {
            if (!std::isfinite(pt.x) || !std::isfinite(pt.y)) continue;
            x0 = std::min(x0, pt.x), x1 = std::max(x1, pt.x);
            y0 = std::min(y0, pt.y - pt.error), y1 = std::max(y1, pt.y + pt.error);
        }
    if (p.has_reference && std::isfinite(p.reference_y)) y0 = std::min(y0, p.reference_y), y1 = std::max(y1, p.reference_y);
    detail::extend(x0, x1);
    detail::extend(y0, y1);
    const double xs = detail::nice_step(x0, x1), ys = detail::nice_step(y0, y1);
    x0 = std::floor(x0 / xs) * xs, x1 = std::ceil(x1 / xs) * xs;
    y0 = std::floor(y0 / ys) * ys, y1 = std::ceil(y1 / ys) * ys;
    const double left = 70, right = p.width - 200.0, top = 40, bottom = p.height - 55.0;
    auto X = [&](double v) { return left + (v - x0) / (x1 - x0) * (right - left); };
    auto Y = [&](double v) { return bottom - (v - y0) / (y1 - y0) * (bottom - top); };

    std::string o;
    o += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(p.width) + "\" height=\"" +
         std::to_string(p.height) + "\" viewBox=\"0 0 " + std::to_string(p.width) + " " + std::to_string(p.height) +
         "\" font-family=\"sans-serif\" font-size=\"12\">\n";
    o += "<rect x=\"0\" y=\"0\" width=\"" + std::to_string(p.width) + "\" height=\"" + std::to_string(p.height) +
         "\" fill=\"white\"/>\n";
    o += "<text class=\"title\" x=\"" + num((left + right) / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" +
         svg_escape(p.title) + "</text>\n";
    // grid and ticks
    o += "<g class=\"axes\" stroke=\"#cccccc\" stroke-width=\"1\">\n";
    for (double v = x0; v <= x1 + xs * 1e-6; v += xs)
        o += "<line x1=\"" + num(X(v)) + "\" y1=\"" + num(top) + "\" x2=\"" + num(X(v)) + "\" y2=\"" + num(bottom) + "\"/>\n";
    for (double v = y0; v <= y1 + ys * 1e-6; v += ys)
        o += "<line x1=\"" + num(left) + "\" y1=\"" + num(Y(v)) + "\" x2=\"" + num(right) + "\" y2=\"" + num(Y(v)) + "\"/>\n";
    o += "</g>\n";
    o += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(right - left) + "\" height=\"" +
         num(bottom - top) + "\" fill=\"none\" stroke=\"black\"/>\n";
    o += "<g class=\"ticks\">\n";
    for (double v = x0; v <= x1 + xs * 1e-6; v += xs)
        o += "<text x=\"" + num(X(v)) + "\" y=\"" + num(bottom + 16) + "\" text-anchor=\"middle\">" +
             detail::tick_label(v, xs) + "</text>\n";
    for (double v = y0; v <= y1 + ys * 1e-6; v += ys)
        o += "<text x=\"" + num(left - 6) + "\" y=\"" + num(Y(v) + 4) + "\" text-anchor=\"end\">" +
             detail::tick_label(v, ys) + "</text>\n";
    o += "</g>\n";
    o += "<text class=\"xlabel\" x=\"" + num((left + right) / 2) + "\" y=\"" + num(p.height - 14.0) +
         "\" text-anchor=\"middle\">" + svg_escape(p.x_label) + "</text>\n";
    o += "<text class=\"ylabel\" x=\"18\" y=\"" + num((top + bottom) / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 18 " +
         num((top + bottom) / 2) + ")\">" + svg_escape(p.y_label) + "</text>\n";
    if (p.has_reference && std::isfinite(p.reference_y)) {
        o += "<line class=\"reference\" x1=\"" + num(left) + "\" y1=\"" + num(Y(p.reference_y)) + "\" x2=\"" + num(right) +
             "\" y2=\"" + num(Y(p.reference_y)) + "\" stroke=\"black\" stroke-dasharray=\"6 4\"/>\n";
        o += "<text class=\"reference-label\" x=\"" + num(right - 4) + "\" y=\"" + num(Y(p.reference_y) - 5) +
             "\" text-anchor=\"end\">" + svg_escape(p.reference_label) + "</text>\n";
    }
    for (std::size_t i = 0; i < p.series.size(); ++i) {
        std::vector<plot_point> pts;
        for (const auto& pt : p.series[i].points)
            if (std::isfinite(pt.x) && std::isfinite(pt.y)) pts.push_back(pt);
        std::stable_sort(pts.begin(), pts.end(), [](const plot_point& a, const plot_point& b) {
            return a.x < b.x || (a.x == b.x && a.y < b.y);
        });
        const char* color = series_color(i);
        o += "<g class=\"series\" data-name=\"" + svg_escape(p.series[i].name) + "\" stroke=\"" + color + "\" fill=\"" +
             color + "\">\n";
        std::vector<plot_point> line = pts;
        if (p.envelope_line) {
            line.clear();
            double best = -std::numeric_limits<double>::infinity();
            for (auto it = pts.rbegin(); it != pts.rend(); ++it)
                if (it->y > best) {
                    best = it->y;
                    line.insert(line.begin(), *it);
                }
        }
        if (line.size() >= 2) {
            o += "<polyline fill=\"none\" stroke-width=\"1.5\" points=\"";
            for (std::size_t k = 0; k < line.size(); ++k) o += (k ? " " : "") + num(X(line[k].x)) + "," + num(Y(line[k].y));
            o += "\"/>\n";
        }
        for (const auto& pt : pts) {
            if (pt.error > 0)
                o += "<line stroke-width=\"1\" stroke-opacity=\"0.35\" x1=\"" + num(X(pt.x)) + "\" y1=\"" + num(Y(pt.y - pt.error)) + "\" x2=\"" +
                     num(X(pt.x)) + "\" y2=\"" + num(Y(pt.y + pt.error)) + "\"/>\n";
            o += "<circle cx=\"" + num(X(pt.x)) + "\" cy=\"" + num(Y(pt.y)) + "\" r=\"3\"/>\n";
        }
        o += "</g>\n";
    }
    o += "<g class=\"legend\">\n";
    for (std::size_t i = 0; i < p.series.size(); ++i) {
        const double ly = top + 10 + 18.0 * static_cast<double>(i);
        o += "<line x1=\"" + num(right + 12) + "\" y1=\"" + num(ly) + "\" x2=\"" + num(right + 32) + "\" y2=\"" + num(ly) +
             "\" stroke=\"" + series_color(i) + "\" stroke-width=\"2\"/>\n";
        o += "<text x=\"" + num(right + 38) + "\" y=\"" + num(ly + 4) + "\">" + svg_escape(p.series[i].name) + "</text>\n";
    }
    o += "</g>\n</svg>\n";
    return o;
}

}  // namespace qaq::eval
