#pragma once
// Readers for the original (upstream) file formats of the four datasets the
// QAQ paper evaluates, with the prompt formats of QAQ-METHOD section 9 (the
// original implementation's qa_dataset.py), plus qaq's own simple JSONL.
//
//   HellaSwag   hellaswag_val.jsonl (rowanz/hellaswag; HF Rowan/hellaswag rows
//               are the same): activity_label, ctx_a, ctx_b, endings[4], label.
//               context = preprocess(activity_label + ": " + ctx_a + " " + capitalize(ctx_b))
//               choice  = " " + preprocess(ending)
//               preprocess: strip; " [title]" -> ". "; remove every "[...]"
//               (shortest match, within a line); replace "  " by " " (one pass,
//               like Python's str.replace). capitalize follows Python's
//               str.capitalize for ASCII (first upper, the rest lower);
//               non-ASCII characters are left unchanged.
//   PIQA        valid.jsonl (goal, sol1, sol2) + valid-labels.lst (one 0/1 per
//               line), or rows that carry "label" themselves (HF export).
//               context = "Question: " + goal + "\nAnswer:", choices " " + sol1/sol2.
//   MathQA      test.json (a JSON array; JSONL also accepted): Problem, options
//               ("a ) 38 , b ) 27.675 , ... e ) none"), correct ("a".."e").
//               context = "Question: " + Problem + "\nAnswer:"; the options are
//               split like the original's regex  [abcd] \) .*?, |e \) .*?$ ,
//               each match minus its first 4 characters, right-stripped of " ,".
//   TruthfulQA  mc1: the original mc_task.json (a JSON array; mc1_targets maps
//               answer text -> 0/1, in file order) or HF "multiple_choice"
//               rows (mc1_targets {choices, labels}). context = "Q: " +
//               question + "\nA:"; the right answer is the one labelled 1 (index 0
//               in the released data, as the original assumes).
//   qaq JSONL   one object per line: context, choices (used verbatim: put the
//               separator in each choice), answer, optional id.

#include <cctype>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "evaluator/datasets/text_input.hpp"
#include "evaluator/question.hpp"
#include "qaq/error.hpp"

namespace qaq::eval::datasets {

// ---------------------------------------------------------------------------
// Python string helpers, as the original used them.
// ---------------------------------------------------------------------------

/// str.strip() over ASCII whitespace.
inline std::string py_strip(const std::string& s) {
    const char* ws = " \t\n\r\v\f";
    const std::size_t b = s.find_first_not_of(ws);
    if (b == std::string::npos) return "";
    const std::size_t e = s.find_last_not_of(ws);
    return s.substr(b, e - b + 1);
}

/// str.replace(from, to): every non-overlapping occurrence, left to right, one pass.
inline std::string py_replace(const std::string& s, const std::string& from, const std::string& to) {
    if (from.empty()) return s;
    std::string out;
    std::size_t start = 0, hit;
    while ((hit = s.find(from, start)) != std::string::npos) {
        out.append(s, start, hit - start);
        out += to;
        start = hit + from.size();
    }
    out.append(s, start, std::string::npos);
    return out;
}

/// str.capitalize() for ASCII letters: first character upper case, the rest lower case.
inline std::string py_capitalize(const std::string& s) {
    std::string out = s;
    for (std::size_t i = 0; i < out.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(out[i]);
        if (c >= 0x80) continue;
        out[i] = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
    }
    return out;
}

/// re.sub(r"\[.*?\]", "", s): '.' does not match a newline.
inline std::string remove_bracketed(const std::string& s) {
    std::string out;
    std::size_t i = 0;
    while (i < s.size()) {
        if (s[i] == '[') {
            std::size_t j = i + 1;
            while (j < s.size() && s[j] != ']' && s[j] != '\n') ++j;
            if (j < s.size() && s[j] == ']') {
                i = j + 1;
                continue;
            }
        }
        out.push_back(s[i++]);
    }
    return out;
}

/// The original's HellaSwag preprocess_text.
inline std::string hellaswag_preprocess(const std::string& text) {
    std::string t = py_strip(text);
    t = py_replace(t, " [title]", ". ");
    t = remove_bracketed(t);
    return py_replace(t, "  ", " ");
}

/// The original's MathQA option split: re.findall(r"[abcd] \) .*?, |e \) .*?$", options),
/// each match [4:] right-stripped of " ,".
inline std::vector<std::string> mathqa_split_options(const std::string& options) {
    std::vector<std::string> out;
    auto rstrip = [](std::string s) {
        while (!s.empty() && (s.back() == ' ' || s.back() == ',')) s.pop_back();
        return s;
    };
    std::size_t i = 0;
    const std::size_t n = options.size();
    while (i < n) {
        const char c = options[i];
        if (c >= 'a' && c <= 'd' && options.compare(i + 1, 3, " ) ") == 0) {
            // lazy .*? then ", " with no newline in between
            std::size_t j = i + 4;
            bool matched = false;
            for (; j + 1 < n + 1; ++j) {
                if (j + 1 < n && options[j] == ',' && options[j + 1] == ' ') {
                    matched = true;
                    break;
                }
                if (j >= n || options[j] == '\n') break;
            }
            if (matched) {
                const std::string m = options.substr(i, j + 2 - i);
                out.push_back(rstrip(m.substr(4)));
                i = j + 2;
                continue;
            }
        }
        if (c == 'e' && options.compare(i + 1, 3, " ) ") == 0) {
            // lazy .*? then $ (end of string, or just before a final newline); '.' stops at newlines
            std::size_t j = i + 4;
            while (j < n && options[j] != '\n') ++j;
            const bool at_end = j == n || (j == n - 1 && options[j] == '\n');
            if (at_end) {
                out.push_back(rstrip(options.substr(i + 4, j - i - 4)));
                i = j;
                continue;
            }
        }
        ++i;
    }
    return out;
}

// ---------------------------------------------------------------------------
// Readers over file contents (`path` only names the source in messages).
// ---------------------------------------------------------------------------

/// Records of a JSON array file or a JSONL file, each with its place for messages.
template <class Json = nlohmann::json>
std::vector<std::pair<std::string, Json>> json_records(const std::string& text, const std::string& path) {
    std::vector<std::pair<std::string, Json>> out;
    const std::size_t first = text.find_first_not_of(" \t\r\n");
    QAQ_CHECK(first != std::string::npos, path, ": the file is empty; expected JSON records");
    if (text[first] == '[') {
        const Json all = parse_json<Json>(text, path);
        QAQ_CHECK(all.is_array(), path, ": expected a JSON array of records");
        for (std::size_t i = 0; i < all.size(); ++i)
            out.emplace_back(path + " [record " + std::to_string(i) + "]", all[i]);
    } else {
        for_each_line(text, [&](std::size_t number, const std::string& line) {
            const std::string place = where(path, number);
            out.emplace_back(place, parse_json<Json>(line, place));
        });
    }
    return out;
}

inline dataset parse_hellaswag_original(const std::string& text, const std::string& path) {
    dataset d;
    d.format = "hellaswag (original jsonl)";
    d.note = "context = preprocess(activity_label: ctx_a Capitalize(ctx_b)); choices = \" \" + preprocess(ending)";
    for (const auto& [place, j] : json_records(text, path)) {
        question q;
        const std::string activity = string_field(j, "activity_label", place);
        const std::string ctx_a = string_field(j, "ctx_a", place);
        const std::string ctx_b = string_field(j, "ctx_b", place);
        q.context = hellaswag_preprocess(activity + ": " + ctx_a + " " + py_capitalize(ctx_b));
        for (const std::string& e : string_array_field(j, "endings", place)) q.choices.push_back(" " + hellaswag_preprocess(e));
        QAQ_CHECK(q.choices.size() >= 2, place, ": field \"endings\" has ", q.choices.size(), " entries; expected at least 2");
        const long long label = integer_field(j, "label", place);
        QAQ_CHECK(label >= 0 && label < static_cast<long long>(q.choices.size()), place, ": field \"label\" is ",
                  label, "; expected 0..", q.choices.size() - 1);
        q.answer = static_cast<int>(label);
        q.id = j.contains("ind") ? (j["ind"].is_string() ? j["ind"].get<std::string>() : j["ind"].dump())
                                 : std::to_string(d.questions.size());
        d.questions.push_back(std::move(q));
    }
    return d;
}

/// `labels_text` may be empty when every row carries "label".
inline dataset parse_piqa_original(const std::string& text, const std::string& path, const std::string& labels_text,
                                   const std::string& labels_path) {
    dataset d;
    d.format = "piqa (original jsonl)";
    d.note = "context = \"Question: \" + goal + \"\\nAnswer:\"; choices \" \" + sol1, \" \" + sol2";
    std::vector<std::pair<std::size_t, std::string>> labels;
    if (!labels_path.empty())
        for_each_line(labels_text, [&](std::size_t number, const std::string& line) {
            labels.emplace_back(number, py_strip(line));
        });
    const auto records = json_records(text, path);
    if (!labels_path.empty())
        QAQ_CHECK(labels.size() == records.size(), labels_path, ": holds ", labels.size(), " labels but ", path,
                  " holds ", records.size(), " questions; expected one label per question");
    for (std::size_t i = 0; i < records.size(); ++i) {
        const auto& [place, j] = records[i];
        question q;
        q.context = "Question: " + string_field(j, "goal", place) + "\nAnswer:";
        const std::string sol1 = string_field(j, "sol1", place);
        const std::string sol2 = string_field(j, "sol2", place);
        q.choices = {" " + sol1, " " + sol2};
        long long label = -1;
        if (!labels_path.empty()) {
            const std::string& s = labels[i].second;
            QAQ_CHECK(s == "0" || s == "1", where(labels_path, labels[i].first), ": label is \"", s,
                      "\"; expected 0 or 1");
            label = s == "1";
        } else {
            QAQ_CHECK(j.contains("label"), place, ": missing field \"label\" and no labels file was given "
                      "(expected valid-labels.lst next to the questions, or piqa-original:QUESTIONS,LABELS)");
            label = integer_field(j, "label", place);
            QAQ_CHECK(label == 0 || label == 1, place, ": field \"label\" is ", label, "; expected 0 or 1");
        }
        q.answer = static_cast<int>(label);
        q.id = j.contains("id") && j["id"].is_string() ? j["id"].get<std::string>() : std::to_string(i);
        d.questions.push_back(std::move(q));
    }
    return d;
}

inline dataset parse_mathqa_original(const std::string& text, const std::string& path) {
    dataset d;
    d.format = "mathqa (original json)";
    d.note = "context = \"Question: \" + Problem + \"\\nAnswer:\"; choices split from options a-e";
    for (const auto& [place, j] : json_records(text, path)) {
        question q;
        q.context = "Question: " + string_field(j, "Problem", place) + "\nAnswer:";
        const std::string options = string_field(j, "options", place);
        for (std::string& c : mathqa_split_options(options)) q.choices.push_back(" " + c);
        QAQ_CHECK(q.choices.size() >= 2, place, ": field \"options\" (\"", options, "\") yields ", q.choices.size(),
                  " option(s); expected \"a ) ... , b ) ... , c ) ... , d ) ... , e ) ...\"");
        const std::string correct = string_field(j, "correct", place);
        QAQ_CHECK(correct.size() == 1 && correct[0] >= 'a' && correct[0] <= 'e', place, ": field \"correct\" is \"",
                  correct, "\"; expected one of a, b, c, d, e");
        q.answer = correct[0] - 'a';
        QAQ_CHECK(q.answer < static_cast<int>(q.choices.size()), place, ": field \"correct\" is \"", correct,
                  "\" but only ", q.choices.size(), " options were found");
        q.id = std::to_string(d.questions.size());
        d.questions.push_back(std::move(q));
    }
    return d;
}

inline dataset parse_truthfulqa_mc1(const std::string& text, const std::string& path) {
    using ordered = nlohmann::ordered_json;
    dataset d;
    d.format = "truthfulqa mc1";
    d.note = "context = \"Q: \" + question + \"\\nA:\"; choices \" \" + mc1 target";
    for (const auto& [place, j] : json_records<ordered>(text, path)) {
        question q;
        q.context = "Q: " + string_field(j, "question", place) + "\nA:";
        const ordered& targets = field(j, "mc1_targets", place);
        std::vector<long long> labels;
        if (targets.is_object() && targets.contains("choices")) {  // HF multiple_choice rows
            for (const std::string& c : string_array_field(targets, "choices", place + " mc1_targets"))
                q.choices.push_back(" " + c);
            const ordered& l = field(targets, "labels", place + " mc1_targets");
            QAQ_CHECK(l.is_array() && l.size() == q.choices.size(), place, ": mc1_targets.labels must be an array with one "
                      "0/1 per choice (", q.choices.size(), ")");
            for (const auto& x : l) {
                QAQ_CHECK(x.is_number_integer(), place, ": mc1_targets.labels must hold integers 0/1, got ", x.type_name());
                labels.push_back(x.get<long long>());
            }
        } else {  // original mc_task.json: {"answer text": 0/1, ...} in file order
            QAQ_CHECK(targets.is_object(), place, ": field \"mc1_targets\" must be an object (answer -> 0/1, or "
                      "{choices, labels}), got ", targets.type_name());
            for (auto it = targets.begin(); it != targets.end(); ++it) {
                QAQ_CHECK(it.value().is_number_integer(), place, ": mc1_targets[\"", it.key(), "\"] must be 0 or 1, got ",
                          it.value().type_name());
                q.choices.push_back(" " + it.key());
                labels.push_back(it.value().get<long long>());
            }
        }
        QAQ_CHECK(q.choices.size() >= 2, place, ": mc1_targets has ", q.choices.size(), " choice(s); expected at least 2");
        int right = -1;
        for (std::size_t i = 0; i < labels.size(); ++i) {
            QAQ_CHECK(labels[i] == 0 || labels[i] == 1, place, ": mc1 label ", labels[i], "; expected 0 or 1");
            if (labels[i] == 1) {
                QAQ_CHECK(right < 0, place, ": mc1_targets has more than one right answer; expected exactly one");
                right = static_cast<int>(i);
            }
        }
        QAQ_CHECK(right >= 0, place, ": mc1_targets has no right answer (no label 1); expected exactly one");
        q.answer = right;
        q.id = std::to_string(d.questions.size());
        d.questions.push_back(std::move(q));
    }
    return d;
}

inline dataset parse_qaq_jsonl(const std::string& text, const std::string& path) {
    dataset d;
    d.format = "qaq jsonl";
    d.note = "context and choices verbatim";
    for (const auto& [place, j] : json_records(text, path)) {
        question q;
        q.context = string_field(j, "context", place);
        q.choices = string_array_field(j, "choices", place);
        QAQ_CHECK(q.choices.size() >= 2, place, ": field \"choices\" has ", q.choices.size(), " entries; expected at least 2");
        const long long a = integer_field(j, "answer", place);
        QAQ_CHECK(a >= 0 && a < static_cast<long long>(q.choices.size()), place, ": field \"answer\" is ", a,
                  "; expected 0..", q.choices.size() - 1);
        q.answer = static_cast<int>(a);
        if (j.contains("id")) q.id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
        else q.id = std::to_string(d.questions.size());
        d.questions.push_back(std::move(q));
    }
    QAQ_CHECK(!d.questions.empty(), path, ": no questions found");
    return d;
}

}  // namespace qaq::eval::datasets
