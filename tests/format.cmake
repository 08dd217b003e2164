# Checks that every C++ file of the tree is formatted as .clang-format says, with the
# clang-format of the toolchain (clang-format-14 on Debian 12). Run by CTest as `build.format`:
#   cmake -DROOT=<source dir> -DCLANG_FORMAT=<clang-format> -P tests/format.cmake
# To fix what it reports: clang-format -i <files> (scripts/format.sh does the whole tree).
cmake_minimum_required(VERSION 3.23)

if(NOT ROOT OR NOT CLANG_FORMAT)
  message(FATAL_ERROR "format: pass -DROOT=<lbkit source dir> -DCLANG_FORMAT=<clang-format>")
endif()

file(GLOB_RECURSE sources RELATIVE "${ROOT}"
     "${ROOT}/include/*.hpp" "${ROOT}/examples/*.hpp" "${ROOT}/examples/*.cpp"
     "${ROOT}/tests/*.hpp" "${ROOT}/tests/*.cpp" "${ROOT}/bench/*.hpp" "${ROOT}/bench/*.cpp")
list(FILTER sources EXCLUDE REGEX "^build/")
list(LENGTH sources count)
execute_process(COMMAND "${CLANG_FORMAT}" --dry-run -Werror --style=file ${sources}
                WORKING_DIRECTORY "${ROOT}"
                RESULT_VARIABLE rc
                ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  string(REGEX MATCHALL "[^\n]*: error: [^\n]*" lines "${out}")
  list(LENGTH lines n)
  list(SUBLIST lines 0 20 shown)
  string(REPLACE ";" "\n" shown "${shown}")
  message(FATAL_ERROR "format: ${n} places are not as .clang-format says (first 20):\n${shown}\n"
                      "Fix: scripts/format.sh")
endif()
message(STATUS "format: ${count} files formatted as .clang-format says")
