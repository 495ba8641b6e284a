# Runs one compile-fail test (ctest: compile_fail.<name>).
#
#   cmake -DCOMPILER=<c++> -DSOURCE=<file.cpp> -DINCLUDE_DIRS=<dir|dir|...>
#         -P run_compile_fail.cmake
#
# SOURCE's first line is `// expect-error: <regex>` (a CMake regular
# expression). The test passes only when the compiler rejects the file AND its
# diagnostics match the regex, so a file that fails for an unrelated reason
# (a typo, a missing include) does not count as a pass.
#
# Optional control: if the file mentions QAQ_COMPILE_FAIL, it is first
# compiled without that macro defined and must then compile cleanly; the
# offending lines go under `#ifdef QAQ_COMPILE_FAIL`. This proves the rest of
# the file is valid, so the failure comes from exactly those lines.

foreach(_var COMPILER SOURCE INCLUDE_DIRS)
    if(NOT DEFINED ${_var})
        message(FATAL_ERROR "run_compile_fail.cmake: -D${_var}=... is required")
    endif()
endforeach()

file(STRINGS "${SOURCE}" _first_line LIMIT_COUNT 1)
if(NOT _first_line MATCHES "^// expect-error: (.+)$")
    message(FATAL_ERROR "${SOURCE}: first line must be '// expect-error: <regex>', got '${_first_line}'")
endif()
set(_expected "${CMAKE_MATCH_1}")
string(STRIP "${_expected}" _expected)

string(REPLACE "|" ";" _include_dirs "${INCLUDE_DIRS}")
set(_flags -std=c++17 -fsyntax-only)
foreach(_dir IN LISTS _include_dirs)
    list(APPEND _flags "-I${_dir}")
endforeach()

# LC_ALL=C keeps the diagnostics in plain ASCII English, so regexes can use
# plain quotes.
function(_qaq_compile result_var output_var)
    execute_process(
        COMMAND ${CMAKE_COMMAND} -E env LC_ALL=C ${COMPILER} ${_flags} ${ARGN} "${SOURCE}"
        RESULT_VARIABLE _result
        OUTPUT_VARIABLE _output
        ERROR_VARIABLE _output)
    set(${result_var} "${_result}" PARENT_SCOPE)
    set(${output_var} "${_output}" PARENT_SCOPE)
endfunction()

file(READ "${SOURCE}" _text)
if(_text MATCHES "QAQ_COMPILE_FAIL")
    _qaq_compile(_control_result _control_output)
    if(NOT _control_result EQUAL 0)
        message(FATAL_ERROR "${SOURCE}: the control compile (QAQ_COMPILE_FAIL undefined) must succeed "
                            "but failed:\n${_control_output}")
    endif()
    _qaq_compile(_result _output -DQAQ_COMPILE_FAIL)
else()
    _qaq_compile(_result _output)
endif()

if(_result EQUAL 0)
    message(FATAL_ERROR "${SOURCE}: compiled, but it must fail with an error matching '${_expected}'")
endif()
if(NOT _output MATCHES "${_expected}")
    message(FATAL_ERROR "${SOURCE}: failed to compile as required, but no diagnostic matches "
                        "'${_expected}'. Compiler output:\n${_output}")
endif()
message(STATUS "${SOURCE}: rejected as expected (matched '${_expected}')")
