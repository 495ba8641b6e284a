// qaq-eval reports: the SVG writer (parsed back minimally: well-formed tags,
// one polyline per series with points in x order inside the plot area, the
// legend names, escaping, determinism), CSV quoting, the envelope and the
// "best ratio within one point" summary.

#include <catch2/catch.hpp>

#include <regex>
#include <string>
#include <vector>

#include "evaluator/presets.hpp"
#include "evaluator/report.hpp"
#include "evaluator/svg_plot.hpp"

namespace {

using namespace qaq::eval;
using Catch::Matchers::Contains;

/// Checks that every tag is closed in order; returns the element names seen.
std::vector<std::string> check_tags(const std::string& svg) {
    std::vector<std::string> stack, seen;
    std::size_t i = 0;
    while ((i = svg.find('<', i)) != std::string::npos) {
        const std::size_t end = svg.find('>', i);
        REQUIRE(end != std::string::npos);
        std::string tag = svg.substr(i + 1, end - i - 1);
        i = end + 1;
        if (tag.empty() || tag[0] == '?' || tag[0] == '!') continue;
        if (tag[0] == '/') {
            REQUIRE(!stack.empty());
            CHECK(stack.back() == tag.substr(1));
            stack.pop_back();
            continue;
        }
        const std::string name = tag.substr(0, tag.find_first_of(" /"));
        seen.push_back(name);
        if (tag.back() != '/') stack.push_back(name);
    }
    CHECK(stack.empty());
    return seen;
}

std::vector<std::pair<double, double>> parse_points(const std::string& points) {
    std::vector<std::pair<double, double>> out;
    std::regex pair(R"(([-0-9.]+),([-0-9.]+))");
    for (std::sregex_iterator it(points.begin(), points.end(), pair), end; it != end; ++it)
        out.emplace_back(std::stod((*it)[1]), std::stod((*it)[2]));
    return out;
}

evaluation_record record(const std::string& method, double ratio, double accuracy, bool baseline = false) {
    evaluation_record r;
    r.task.method = method;
    r.task.label = method + " " + std::to_string(ratio);
    r.task.dataset = "d";
    r.task.key = baseline ? configs::fp16(qaq::cache_role::key) : configs::uniform(qaq::cache_role::key, 4);
    r.task.value = baseline ? configs::fp16(qaq::cache_role::value) : configs::uniform(qaq::cache_role::value, 4);
    r.ok = true;
    r.result.questions = 100;
    r.result.correct = static_cast<std::int64_t>(accuracy * 100);
    r.result.accuracy = accuracy;
    r.result.compression_ratio = ratio;
    return r;
}

}  // namespace

TEST_CASE("eval: SVG plot parses back with its series, in x order", "[eval][report]") {
    plot_spec p;
    p.title = "QAQ <vs> uniform & \"co\"";
    p.x_label = "compression ratio";
    p.y_label = "accuracy";
    p.series = {{"qaq", {{8, 0.70, 0.02}, {4, 0.74, 0.02}, {6, 0.73, 0}}}, {"uniform", {{2, 0.5, 0}, {4, 0.6, 0}}},
                {"single", {{5, 0.65, 0}}}};
    p.has_reference = true;
    p.reference_y = 0.75;
    p.reference_label = "fp16 0.750";
    const std::string svg = render_svg(p);
    CHECK(svg == render_svg(p));  // deterministic
    CHECK(svg.rfind("<?xml", 0) == 0);
    const auto tags = check_tags(svg);
    CHECK(std::count(tags.begin(), tags.end(), "polyline") == 2);  // a single point draws no line
    CHECK(std::count(tags.begin(), tags.end(), "circle") == 6);
    CHECK_THAT(svg, Contains("QAQ &lt;vs&gt; uniform &amp; &quot;co&quot;"));
    CHECK_THAT(svg, Contains("data-name=\"qaq\""));
    CHECK_THAT(svg, Contains(">uniform</text>"));
    CHECK_THAT(svg, Contains("class=\"reference\""));
    std::smatch m;
    REQUIRE(std::regex_search(svg, m, std::regex(R"re(<polyline[^>]*points="([^"]*)")re")));
    const auto pts = parse_points(m[1]);
    REQUIRE(pts.size() == 3);
    CHECK(pts[0].first < pts[1].first);
    CHECK(pts[1].first < pts[2].first);
    CHECK(pts[0].second < pts[2].second);  // higher accuracy is higher up (smaller y) at x = 4 than at x = 8
    for (const auto& [x, y] : pts) {
        CHECK(x >= 70);
        CHECK(x <= p.width - 200);
        CHECK(y >= 40);
        CHECK(y <= p.height - 55);
    }
    // Envelope mode: the line skips dominated points; every marker stays.
    plot_spec e;
    e.envelope_line = true;
    e.series = {{"grid", {{2, 0.9, 0}, {3, 0.6, 0}, {4, 0.8, 0}, {4, 0.7, 0}, {6, 0.5, 0}}}};
    const std::string esvg = render_svg(e);
    const auto etags = check_tags(esvg);
    CHECK(std::count(etags.begin(), etags.end(), "circle") == 5);
    REQUIRE(std::regex_search(esvg, m, std::regex(R"re(<polyline[^>]*points="([^"]*)")re")));
    CHECK(parse_points(m[1]).size() == 3);  // (2, 0.9), (4, 0.8), (6, 0.5)
    // Degenerate input still renders.
    plot_spec empty;
    CHECK_NOTHROW(check_tags(render_svg(empty)));
}

TEST_CASE("eval: SVG tick labels write every multiple of the step exactly", "[eval][report]") {
    using qaq::eval::detail::tick_label;
    CHECK(tick_label(0.375, 0.025) == "0.375");  // not "0.38": a 2.5 step needs one more decimal
    CHECK(tick_label(0.4, 0.025) == "0.400");
    CHECK(tick_label(0.3, 0.1) == "0.3");
    CHECK(tick_label(0.25, 0.05) == "0.25");
    CHECK(tick_label(7.5, 2.5) == "7.5");
    CHECK(tick_label(4, 2) == "4");
    CHECK(tick_label(1e-12, 0.5) == "0.0");  // rounding noise at zero prints as zero
}

TEST_CASE("eval: envelope and the best ratio within one point of fp16", "[eval][report]") {
    std::vector<evaluation_record> r = {record("fp16", 1, 0.80, true), record("qaq", 4, 0.80), record("qaq", 6, 0.795),
                                        record("qaq", 5, 0.70), record("qaq", 8, 0.60), record("uniform", 3, 0.78)};
    const auto env = envelope(r, "qaq", "d");
    REQUIRE(env.size() == 3);  // (5, 0.70) is beaten by (6, 0.795)
    CHECK(env[0] == 1);
    CHECK(env[1] == 2);
    CHECK(env[2] == 4);
    const auto best = best_within_one_point(r);
    REQUIRE(best.size() == 2);
    CHECK(best[0].method == "qaq");
    REQUIRE(best[0].found);
    CHECK(best[0].record == 2);
    CHECK(best[1].method == "uniform");
    CHECK_FALSE(best[1].found);  // 0.78 is two points below
    const nlohmann::json s = summary_json(r, "compression_ratio");
    CHECK(s["baselines"]["d"] == 0.80);
    CHECK(s["envelopes"].size() == 3);
}

TEST_CASE("eval: CSV quoting, table and approximation markers", "[eval][report]") {
    std::vector<evaluation_record> r = {record("fp16", 1, 0.8, true), record("kivi", 4, 0.7)};
    r[1].task.approximation = true;
    r[1].task.note = "per-token groups, \"no\" window";
    r[1].task.label = "a,b";
    const std::string csv = render_csv(r);
    CHECK(csv.rfind("experiment,method,approximation,label,dataset,n,seed,key_config,value_config,status", 0) == 0);
    CHECK_THAT(csv, Contains(",kivi,true,\"a,b\",d,"));
    CHECK_THAT(csv, Contains("\"per-token groups, \"\"no\"\" window\""));
    CHECK(std::count(csv.begin(), csv.end(), '\n') == 3);
    std::ostringstream table;
    print_table(table, r);
    CHECK_THAT(table.str(), Contains("kivi (approx.)"));
    CHECK_THAT(table.str(), Contains("(approx.) kivi: per-token groups"));
    CHECK_THAT(table.str(), Contains("-0.1000"));  // accuracy drop vs fp16
    const auto plots = accuracy_plots(r, "e", "compression_ratio");
    REQUIRE(plots.size() == 1);
    CHECK(plots[0].second.series.size() == 1);
    CHECK(plots[0].second.series[0].name == "kivi (approx.)");
    CHECK(plots[0].second.has_reference);
    CHECK(file_stem("jsonl:/a b/c.jsonl") == "jsonl__a_b_c.jsonl");
}
