// Compiled against qaq's source tree pulled in with add_subdirectory.
#include <cstdio>
#include <cstring>

#include <qaq/qaq.hpp>

int main() {
    std::printf("qaq %s (expected %s)\n", qaq::version_string, QAQ_EXPECTED_VERSION);
    return std::strcmp(qaq::version_string, QAQ_EXPECTED_VERSION) == 0 ? 0 : 1;
}
