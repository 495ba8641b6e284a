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

file(REMOVE_RECURSE ${WORK_DIR}/corpus)
file(MAKE_DIRECTORY ${WORK_DIR}/corpus ${WORK_DIR}/artifacts)
if(IS_DIRECTORY ${SEED_CORPUS})
    file(GLOB _seeds ${SEED_CORPUS}/*)
    if(_seeds)
        file(COPY ${_seeds} DESTINATION ${WORK_DIR}/corpus)
    endif()
endif()

execute_process(
    COMMAND ${EXECUTABLE}
        -max_total_time=${SECONDS}
        -timeout=10
        -print_final_stats=1
        -artifact_prefix=${WORK_DIR}/artifacts/
        ${WORK_DIR}/corpus
    WORKING_DIRECTORY ${WORK_DIR}
    RESULT_VARIABLE _result)
if(NOT _result EQUAL 0)
    file(GLOB _artifacts ${WORK_DIR}/artifacts/*)
    message(FATAL_ERROR "fuzz target ${EXECUTABLE} failed (exit ${_result}); reproducers: ${_artifacts}")
endif()
