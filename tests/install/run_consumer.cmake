# Driven by tests/install/CMakeLists.txt; see there for what it checks.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
# Nothing from the caller's environment may help the installed files find each other.
set(clean_env ${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH --unset=CMAKE_PREFIX_PATH)

function(run)
  execute_process(COMMAND ${clean_env} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "command failed (exit ${rc}): ${cmd}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

# --- 1. The README's snippet, verbatim -------------------------------------------------------
file(READ ${README} readme)
string(FIND "${readme}" "## Using the library from CMake" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${README} has no section '## Using the library from CMake'")
endif()
string(SUBSTRING "${readme}" ${at} -1 section)
string(REGEX MATCH "```cmake\n([^`]*)```" _ "${section}")
set(cmake_snippet "${CMAKE_MATCH_1}")
string(REGEX MATCH "```cpp\n([^`]*)```" _ "${section}")
set(cpp_snippet "${CMAKE_MATCH_1}")
if(NOT cmake_snippet MATCHES "find_package\\(dynascope" OR NOT cmake_snippet MATCHES "my_target"
   OR NOT cpp_snippet MATCHES "#include <dynascope/")
  message(FATAL_ERROR "the README's CMake section no longer has the expected snippets:\n${cmake_snippet}\n${cpp_snippet}")
endif()
# The snippet links `my_target`: declare it just before the first line that names it.
string(FIND "${cmake_snippet}" "my_target" first_use)
string(SUBSTRING "${cmake_snippet}" 0 ${first_use} head)
string(FIND "${head}" "\n" line_start REVERSE)
math(EXPR line_start "${line_start} + 1")
string(SUBSTRING "${cmake_snippet}" 0 ${line_start} before)
string(SUBSTRING "${cmake_snippet}" ${line_start} -1 after)
set(readme_dir ${WORK_DIR}/readme-src)
file(WRITE ${readme_dir}/CMakeLists.txt
  "cmake_minimum_required(VERSION 3.24)\nproject(readme_snippet LANGUAGES CXX)\n"
  "${before}add_executable(my_target main.cpp)\n${after}")
# The C++ snippet: its #include lines at file scope, its statements in main().
string(REGEX MATCHALL "#include[^\n]*" includes "${cpp_snippet}")
string(REGEX REPLACE "#include[^\n]*\n" "" statements "${cpp_snippet}")
string(REPLACE ";" "\n" includes "${includes}")
file(WRITE ${readme_dir}/main.cpp
  "${includes}\n#include <cstdio>\n\nint main() {\n${statements}"
  "  std::printf(\"readme snippet ok (%s)\\n\", dynascope::to_string(ctx.backend()));\n  return 0;\n}\n")
# Exactly what a user runs: only where the package is and which generator.
run(${CMAKE_COMMAND} -S ${readme_dir} -B ${WORK_DIR}/readme-build -G ${GENERATOR} -DCMAKE_PREFIX_PATH=${prefix})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/readme-build)
run(${WORK_DIR}/readme-build/my_target)
if(NOT last_output MATCHES "readme snippet ok")
  message(FATAL_ERROR "the README snippet printed: ${last_output}")
endif()
message(STATUS "${last_output}")

# --- 2. A fuller consumer, also with no language standard of its own ---------------------------
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/build -G ${GENERATOR}
    -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/consumer)
if(NOT last_output MATCHES "consumer ok")
  message(FATAL_ERROR "consumer printed: ${last_output}")
endif()
message(STATUS "${last_output}")

# --- 3. The installed command-line tool ----------------------------------------------------------
if(WITH_CLI)
  set(tool ${prefix}/${BINDIR}/dynascope)
  run(${tool} --version)
  if(NOT last_output MATCHES "${VERSION}")
    message(FATAL_ERROR "${tool} --version printed '${last_output}', expected ${VERSION}")
  endif()
  message(STATUS "installed ${tool} --version: ${last_output}")
  run(${tool} info --quiet)
  if(NOT last_output MATCHES "\"command\": *\"info\"")
    message(FATAL_ERROR "${tool} info printed: ${last_output}")
  endif()
endif()
