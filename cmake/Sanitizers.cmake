# Sanitizer and fuzzing builds (docs/RELIABILITY.md). Each goes into its own build folder, since
# the flags apply to every object:
#   SHARDSERVE_SANITIZE=address,undefined   ASan + UBSan (any compiler; CUDA must be off)
#   SHARDSERVE_SANITIZE=thread              TSan (the coordinator's threads)
#   SHARDSERVE_FUZZ=ON                      libFuzzer targets of tests/fuzz (clang only), with
#                                           ASan + UBSan; build the `fuzzers` target.
# UBSan reports are fatal (-fno-sanitize-recover), so a test that trips one fails.
set(SHARDSERVE_SANITIZE "" CACHE STRING "Sanitizers for every object: address,undefined | thread")
option(SHARDSERVE_FUZZ "Build the libFuzzer targets (clang; ASan + UBSan)" OFF)

set(_shardserve_san "${SHARDSERVE_SANITIZE}")
if(SHARDSERVE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "SHARDSERVE_FUZZ needs clang (libFuzzer): configure with "
                        "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang")
  endif()
  if(_shardserve_san STREQUAL "")
    set(_shardserve_san "address,undefined")
  endif()
endif()

if(NOT _shardserve_san STREQUAL "")
  if(SHARDSERVE_HAVE_CUDA)
    message(FATAL_ERROR "SHARDSERVE_SANITIZE / SHARDSERVE_FUZZ build the CPU path only: "
                        "add -DSHARDSERVE_ENABLE_CUDA=OFF")
  endif()
  set(_flags -fsanitize=${_shardserve_san} -fno-omit-frame-pointer)
  if(_shardserve_san MATCHES "undefined")
    list(APPEND _flags -fno-sanitize-recover=undefined)
  endif()
  if(SHARDSERVE_FUZZ)
    # Coverage instrumentation for every object; the fuzz executables add the libFuzzer main.
    list(APPEND _flags -fsanitize=fuzzer-no-link)
  endif()
  add_compile_options(${_flags})
  add_link_options(-fsanitize=${_shardserve_san})
  message(STATUS "shardserve: sanitizers ${_shardserve_san}")
endif()
