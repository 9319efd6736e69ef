# cmake -DTOOL=path/to/dynascope -P check_loaded.cmake
# Runs `dynascope --version` and `dynascope info` under the dynamic loader's trace (LD_DEBUG=files)
# and fails when either loads cuBLAS, cuBLASLt or cuSOLVER: neither does BLAS work on a cuda context.
foreach(args "--version" "info")
  execute_process(COMMAND ${CMAKE_COMMAND} -E env LD_DEBUG=files ${TOOL} ${args}
                  OUTPUT_VARIABLE out ERROR_VARIABLE trace RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "dynascope ${args} failed (${rc}):\n${out}\n${trace}")
  endif()
  # The trace must show the loader at work (else LD_DEBUG was ignored and the check is empty).
  if(NOT trace MATCHES "file=libdynascope[.]so")
    message(FATAL_ERROR "dynascope ${args}: LD_DEBUG=files traced no load of libdynascope; cannot check:\n${trace}")
  endif()
  string(REGEX MATCHALL "file=lib(cublas|cublasLt|cusolver)[.]so[^ \n]*" loaded "${trace}")
  if(loaded)
    list(REMOVE_DUPLICATES loaded)
    message(FATAL_ERROR "dynascope ${args} loaded ${loaded}; cuBLAS and cuSOLVER are for BLAS work on cuda contexts only")
  endif()
  message(STATUS "dynascope ${args}: no cuBLAS or cuSOLVER loaded")
endforeach()
