# MPI tests under CTest: shardserve_add_mpi_test(NAME n NP k COMMAND exe args... [TIMEOUT s])
# runs `mpiexec [--oversubscribe --allow-run-as-root] -np k exe args...`. Included by tests/comm
# and tests/runtime. Every MPI test takes the `mpi` resource lock (they oversubscribe the cores,
# so two at once only slow each other down) and runs with one OpenMP thread per rank.
# Included once per directory (variables are directory-scoped): no include_guard.
find_package(MPI REQUIRED COMPONENTS C)
execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE _shardserve_mpiexec_version
                ERROR_VARIABLE _shardserve_mpiexec_version)
set(SHARDSERVE_MPIEXEC_FLAGS "")
if(_shardserve_mpiexec_version MATCHES "Open MPI|OpenRTE")
  # More ranks than cores (CI has 2), and containers run as root.
  set(SHARDSERVE_MPIEXEC_FLAGS --oversubscribe --allow-run-as-root)
endif()
# One OpenMP thread per rank; and no CMA single-copy in Open MPI's shared-memory transport, which
# containers without ptrace permission refuse ("Read -1, expected ..., errno = 1").
set(SHARDSERVE_MPI_TEST_ENV OMP_NUM_THREADS=1 OMPI_MCA_btl_vader_single_copy_mechanism=none)
message(STATUS "shardserve: MPI tests run ${MPIEXEC_EXECUTABLE} ${SHARDSERVE_MPIEXEC_FLAGS}")

function(shardserve_add_mpi_test)
  cmake_parse_arguments(T "" "NAME;NP;TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 60)
  endif()
  list(POP_FRONT T_COMMAND exe)
  add_test(NAME ${T_NAME}
           COMMAND ${MPIEXEC_EXECUTABLE} ${SHARDSERVE_MPIEXEC_FLAGS} ${MPIEXEC_NUMPROC_FLAG} ${T_NP}
                   ${MPIEXEC_PREFLAGS} ${exe} ${MPIEXEC_POSTFLAGS} ${T_COMMAND})
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} RESOURCE_LOCK mpi
                       PROCESSORS 2 ENVIRONMENT "${SHARDSERVE_MPI_TEST_ENV}"
                       LABELS "mpi;${T_LABELS}")
endfunction()
