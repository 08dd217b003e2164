# Runs a libFuzzer binary for a bounded time, with a fixed seed, from a fresh copy of a seed
# corpus, so that a run neither writes into the source tree nor depends on earlier runs.
#
#   cmake -DFUZZER=<executable> -DSEEDS=<seed dir> -DWORK=<scratch dir> [-DSECONDS=20]
#         [-DMAX_LEN=2048] -P run_fuzzer.cmake
#
# Inputs that crash are saved under <scratch dir>/artifacts/; replay one with
# `<executable> <file>`.
foreach(var IN ITEMS FUZZER SEEDS WORK)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzzer.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT DEFINED SECONDS)
  set(SECONDS 20)
endif()
if(NOT DEFINED MAX_LEN)
  set(MAX_LEN 2048)
endif()

file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/corpus" "${WORK}/artifacts")
file(GLOB seeds LIST_DIRECTORIES false "${SEEDS}/*")
if(NOT seeds)
  message(FATAL_ERROR "run_fuzzer.cmake: no seed files in ${SEEDS}")
endif()
file(COPY ${seeds} DESTINATION "${WORK}/corpus")

execute_process(
  COMMAND "${FUZZER}" "${WORK}/corpus"
    -max_total_time=${SECONDS} -seed=1 -rss_limit_mb=2048 -max_len=${MAX_LEN}
    -artifact_prefix=${WORK}/artifacts/ -print_final_stats=1
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (${rc}); the inputs that failed are in ${WORK}/artifacts/")
endif()
