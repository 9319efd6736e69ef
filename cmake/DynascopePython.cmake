# Decides whether the Python extension is built (DYNASCOPE_WITH_PYTHON) and finds Python and
# nanobind for it. DYNASCOPE_PYTHON: ON (missing nanobind is an error), OFF, or AUTO (built when
# nanobind is found, with a status line either way).
#
# The interpreter: Python_EXECUTABLE when given; under scikit-build-core the one running pip;
# otherwise the project's .venv (created by scripts/install-deps.sh), whose site packages include
# Debian's numpy and torch; otherwise whatever find_package(Python) finds.
set(DYNASCOPE_WITH_PYTHON OFF)
if(DYNASCOPE_PYTHON STREQUAL "OFF")
  return()
endif()
if(DYNASCOPE_PYTHON STREQUAL "AUTO" AND DYNASCOPE_SANITIZE)
  message(STATUS "dynascope: Python extension not built (AUTO in a sanitized build: a sanitized "
                 "extension cannot load into an unsanitized interpreter)")
  return()
endif()
if(NOT DYNASCOPE_PYTHON MATCHES "^(ON|AUTO)$")
  message(FATAL_ERROR "DYNASCOPE_PYTHON must be AUTO, ON or OFF, got '${DYNASCOPE_PYTHON}'")
endif()
if(NOT DEFINED Python_EXECUTABLE AND NOT SKBUILD AND EXISTS "${PROJECT_SOURCE_DIR}/.venv/bin/python")
  set(Python_EXECUTABLE "${PROJECT_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH
      "The Python interpreter the extension is built for and the Python tests run with")
endif()

if(DYNASCOPE_PYTHON STREQUAL "ON")
  find_package(Python 3.9 REQUIRED COMPONENTS Interpreter Development.Module)
else()
  find_package(Python 3.9 COMPONENTS Interpreter Development.Module)
  if(NOT Python_FOUND)
    message(STATUS "dynascope: Python extension not built (no Python 3.9+ interpreter with its development "
                   "headers; scripts/install-deps.sh installs them)")
    return()
  endif()
endif()

# Under scikit-build-core CMAKE_PREFIX_PATH holds the build environment's site-packages, so
# nanobind's CMake package is found directly; otherwise the interpreter is asked where it is.
find_package(nanobind CONFIG QUIET)
if(NOT nanobind_FOUND)
  execute_process(COMMAND "${Python_EXECUTABLE}" -m nanobind --cmake_dir
                  OUTPUT_STRIP_TRAILING_WHITESPACE OUTPUT_VARIABLE dynascope_nanobind_dir
                  RESULT_VARIABLE dynascope_nanobind_status ERROR_QUIET)
  if(dynascope_nanobind_status EQUAL 0)
    set(nanobind_ROOT "${dynascope_nanobind_dir}")
    find_package(nanobind CONFIG QUIET)
  endif()
endif()
if(NOT nanobind_FOUND)
  set(dynascope_no_nanobind "nanobind is not installed for ${Python_EXECUTABLE}: run scripts/install-deps.sh "
      "(it creates .venv with nanobind), or `pip install nanobind` in a virtual environment and configure "
      "with -DPython_EXECUTABLE=<that environment>/bin/python")
  if(DYNASCOPE_PYTHON STREQUAL "ON")
    message(FATAL_ERROR "DYNASCOPE_PYTHON=ON: ${dynascope_no_nanobind}")
  endif()
  message(STATUS "dynascope: Python extension not built (${dynascope_no_nanobind})")
  return()
endif()
message(STATUS "dynascope: Python extension built for ${Python_EXECUTABLE} (Python ${Python_VERSION}, "
               "nanobind ${nanobind_VERSION})")
set(DYNASCOPE_WITH_PYTHON ON)
