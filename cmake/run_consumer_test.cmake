# Builds and runs a tiny downstream project against qaq (ctest: packaging.*).
#
#   cmake -DMODE=find_package|add_subdirectory -DCONSUMER_SOURCE_DIR=<dir>
#         -DWORK_DIR=<dir> -DEXPECTED_VERSION=<x.y.z>
#         [-DQAQ_BUILD_DIR=<qaq build tree>]   (find_package: what to install)
#         [-DQAQ_SOURCE_DIR=<qaq source tree>] (add_subdirectory: what to add)
#         [-DGENERATOR=...] [-DMAKE_PROGRAM=...] [-DCXX_COMPILER=...] [-DBUILD_TYPE=...]
#         -P run_consumer_test.cmake
#
# WORK_DIR is wiped first so every run starts from an empty prefix and cache.

foreach(_var MODE CONSUMER_SOURCE_DIR WORK_DIR EXPECTED_VERSION)
    if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
        message(FATAL_ERROR "run_consumer_test.cmake: -D${_var}=... is required")
    endif()
endforeach()
if(NOT BUILD_TYPE)
    set(BUILD_TYPE Release)
endif()

function(_qaq_run step)
    string(JOIN " " _command ${ARGN})
    message(STATUS "[${MODE}] ${step}: ${_command}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE _result)
    if(NOT _result EQUAL 0)
        message(FATAL_ERROR "[${MODE}] ${step} failed (${_result})")
    endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(_build "${WORK_DIR}/build")

set(_configure_args
    -S "${CONSUMER_SOURCE_DIR}" -B "${_build}"
    "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}"
    "-DQAQ_EXPECTED_VERSION=${EXPECTED_VERSION}")
if(GENERATOR)
    list(APPEND _configure_args -G "${GENERATOR}")
endif()
if(MAKE_PROGRAM)
    list(APPEND _configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(CXX_COMPILER)
    list(APPEND _configure_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()

if(MODE STREQUAL "find_package")
    if(NOT QAQ_BUILD_DIR)
        message(FATAL_ERROR "run_consumer_test.cmake: find_package mode needs -DQAQ_BUILD_DIR")
    endif()
    set(_prefix "${WORK_DIR}/prefix")
    _qaq_run(install ${CMAKE_COMMAND} --install "${QAQ_BUILD_DIR}" --prefix "${_prefix}" --config "${BUILD_TYPE}")
    # Only the fresh prefix may satisfy find_package(qaq): no user package
    # registry, and the consumer checks qaq_DIR lies under QAQ_EXPECTED_PREFIX.
    list(APPEND _configure_args
        "-DCMAKE_PREFIX_PATH=${_prefix}"
        "-DQAQ_EXPECTED_PREFIX=${_prefix}"
        -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
elseif(MODE STREQUAL "add_subdirectory")
    if(NOT QAQ_SOURCE_DIR)
        message(FATAL_ERROR "run_consumer_test.cmake: add_subdirectory mode needs -DQAQ_SOURCE_DIR")
    endif()
    list(APPEND _configure_args "-DQAQ_SOURCE_DIR=${QAQ_SOURCE_DIR}")
else()
    message(FATAL_ERROR "run_consumer_test.cmake: unknown MODE '${MODE}'")
endif()

_qaq_run(configure ${CMAKE_COMMAND} ${_configure_args})
_qaq_run(build ${CMAKE_COMMAND} --build "${_build}" --config "${BUILD_TYPE}")

# Single-config generators put the program in the build root, multi-config
# ones in a per-configuration folder.
set(_program "${_build}/qaq-consumer")
if(NOT EXISTS "${_program}")
    set(_program "${_build}/${BUILD_TYPE}/qaq-consumer${CMAKE_EXECUTABLE_SUFFIX}")
endif()
_qaq_run(run "${_program}")
