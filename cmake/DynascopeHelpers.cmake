# Sources that launch kernels are written once (kernel bodies are __host__ __device__) and are
# compiled by nvcc when the CUDA backend is built, by the C++ compiler otherwise.
function(dynascope_kernel_sources)
  if(DYNASCOPE_WITH_CUDA)
    set_source_files_properties(${ARGN} DIRECTORY ${PROJECT_SOURCE_DIR}/src PROPERTIES LANGUAGE CUDA)
  endif()
endfunction()
