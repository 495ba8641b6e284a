# Runs one libFuzzer target for a bounded time on a fresh copy of its seed
# corpus, so the checked-in corpus never changes and every run starts alike:
#
#   cmake -DEXECUTABLE=<fuzz_x> -DSEED_CORPUS=<dir> -DWORK_DIR=<dir> -DSECONDS=<n> -P run_fuzz_target.cmake
#
# New interesting inputs land in WORK_DIR/corpus, crash reproducers in
# WORK_DIR/artifacts. Fails when the target reports a crash, a leak, a
# sanitizer finding or a timeout (libFuzzer exits non-zero).

foreach(_var EXECUTABLE SEED_CORPUS WORK_DIR SECONDS)
    if(NOT DEFINED ${_var})
        message(FATAL_ERROR "run_fuzz_target.cmake: -D${_var}=... is required")
    endif()
endforeach()

file(REMOVE_RECURSE ${WORK_DIR}/corpus ${WORK_DIR}/artifacts)  # artifacts: this run's only
file(REMOVE ${WORK_DIR}/stats.txt ${WORK_DIR}/fuzz.log)
file(MAKE_DIRECTORY ${WORK_DIR}/corpus ${WORK_DIR}/artifacts)
if(IS_DIRECTORY ${SEED_CORPUS})
    file(GLOB _seeds ${SEED_CORPUS}/*)
    if(_seeds)
        file(COPY ${_seeds} DESTINATION ${WORK_DIR}/corpus)
    endif()
endif()

# libFuzzer's output goes to WORK_DIR/fuzz.log; its final statistics (executions,
# new units, peak RSS) are kept in WORK_DIR/stats.txt and printed, and
# scripts/reliability.sh collects them into its summary.
execute_process(
    COMMAND ${EXECUTABLE}
        -max_total_time=${SECONDS}
        -timeout=10
        -print_final_stats=1
        -artifact_prefix=${WORK_DIR}/artifacts/
        ${WORK_DIR}/corpus
    WORKING_DIRECTORY ${WORK_DIR}
    OUTPUT_FILE ${WORK_DIR}/fuzz.log
    ERROR_FILE ${WORK_DIR}/fuzz.log
    RESULT_VARIABLE _result)
file(STRINGS ${WORK_DIR}/fuzz.log _stats REGEX "^(stat::|Done [0-9]+ runs)")
string(REPLACE ";" "\n" _stats_text "${_stats}")
file(WRITE ${WORK_DIR}/stats.txt "${_stats_text}\n")
message(STATUS "${_stats_text}")
if(NOT _result EQUAL 0)
    file(READ ${WORK_DIR}/fuzz.log _log)
    string(LENGTH "${_log}" _length)
    if(_length GREATER 12000)
        math(EXPR _from "${_length} - 12000")
        string(SUBSTRING "${_log}" ${_from} -1 _log)
        set(_log "...\n${_log}")
    endif()
    file(GLOB _artifacts ${WORK_DIR}/artifacts/*)
    message(FATAL_ERROR "${_log}\nfuzz target ${EXECUTABLE} failed (exit ${_result}); reproducers: ${_artifacts} "
                        "(whole log: ${WORK_DIR}/fuzz.log)")
endif()
